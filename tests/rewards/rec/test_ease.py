import numpy as np
import pytest

from rewards.rec.ease import Ease, ease_weights, gram_matrix, top_k_excluding
from rewards.rec.negatives import NegativeSampler


def test_gram_counts_co_occurrences_once_per_user():
    g = gram_matrix([np.array([0, 1, 1]), np.array([1, 2]), np.array([], dtype=np.int64)], 3)
    np.testing.assert_array_equal(g, [[1, 1, 0], [1, 2, 1], [0, 1, 1]])  # XᵀX of a binary X
    with pytest.raises(ValueError, match="out of range"):
        gram_matrix([np.array([3])], 3)


def test_weights_by_hand_two_items_that_always_co_occur():
    # n users each have items 0 and 1: G = [[n, n], [n, n]]; P = (G + λI)⁻¹ = [[n+λ, -n], [-n, n+λ]] / det,
    # so B_01 = -P_01 / P_11 = n / (n + λ), and diag(B) = 0
    n, lam = 4.0, 2.0
    b = ease_weights(np.array([[n, n], [n, n]]), lam)
    np.testing.assert_allclose(b, [[0.0, n / (n + lam)], [n / (n + lam), 0.0]])
    with pytest.raises(ValueError, match="positive"):
        ease_weights(np.eye(2), 0.0)


def test_weights_solve_the_constrained_ridge_problem():
    # B minimises ||X - XB||² + λ||B||² with diag(B) = 0: the gradient (G + λI)B - G vanishes off the
    # diagonal (the diagonal carries the constraint's multipliers)
    rng = np.random.default_rng(0)
    x = (rng.random((40, 12)) < 0.3).astype(np.float64)  # [U, I]
    g = x.T @ x
    b = ease_weights(g, 3.0)
    assert np.all(np.diag(b) == 0.0)
    grad = (g + 3.0 * np.eye(12)) @ b - g  # [I, I]
    np.testing.assert_allclose(grad - np.diag(np.diag(grad)), 0.0, atol=1e-9)
    np.testing.assert_array_equal(g, x.T @ x)  # the caller's matrix is not modified


def test_co_occurring_item_ranks_first():
    # a and b always come together; c and d co-occur with each other and once with a
    histories = [["a", "b"], ["a", "b"], ["a", "b", "c"], ["c", "d"], ["c", "d"], ["d", "e"]]
    model = Ease.fit(histories, ["a", "b", "c", "d", "e"], lam=1.0)
    assert np.all(np.diag(model.weights) == 0.0)
    assert model.top_k(["a"], 1) == ["b"]
    assert model.top_k(["a"], 4)[0] == "b" and "a" not in model.top_k(["a"], 4)
    assert model.top_k(["a"], 2, exclude=["b"])[0] != "b"
    assert model.top_k(["a"], 10) == model.top_k(["a"], 4)  # only 4 items are not in the history
    with pytest.raises(ValueError, match="not in the catalog"):
        Ease.fit([["a", "z"]], ["a", "b"])


def test_top_k_excluding_is_stable_on_ties():
    scores = np.array([0.5, 1.0, 0.5, 0.5, 2.0])
    excluded = np.array([False, False, False, True, False])
    np.testing.assert_array_equal(top_k_excluding(scores, 3, excluded), [4, 1, 0])  # tie 0 vs 2: lower index
    np.testing.assert_array_equal(top_k_excluding(scores, 9, excluded), [4, 1, 0, 2])
    # -inf (items EASE does not know) rank last but stay allowed; an excluded item never comes back
    unknown = np.array([-np.inf, 1.0, -np.inf])
    np.testing.assert_array_equal(top_k_excluding(unknown, 3, np.array([True, False, False])), [1, 2])


def test_ease_negatives_never_the_target_nor_history():
    histories = [["a", "b"], ["a", "b"], ["a", "b", "c"], ["c", "d"], ["c", "d"], ["d", "e"]]
    catalog = ["a", "b", "c", "d", "e", "f"]  # f: nobody trained on it, EASE scores it 0
    model = Ease.fit(histories, catalog, lam=1.0)
    sampler = NegativeSampler(catalog, "ease", ease=model, seed=3)
    # b is EASE's best item for a user with a; as the positive it must not be a negative
    assert model.top_k(["a"], 1) == ["b"]
    negs = sampler.sample(3, "b", ["a"])
    assert negs == model.top_k(["a"], 3, exclude=["b"]) and "b" not in negs and "a" not in negs
    assert len(negs) == len(set(negs)) == 3
    assert NegativeSampler(catalog, "ease", ease=model, seed=7).sample(3, "b", ["a"]) == negs  # seed plays no part
    assert sampler.sample(10, "b", ["a"]) == [x for x in sampler.sample(10, "b", ["a"]) if x not in ("a", "b")]
    assert len(sampler.sample(10, "b", ["a"])) == 4  # the catalog minus target and history
    with pytest.raises(ValueError, match="EASE model"):
        NegativeSampler(catalog, "ease")


def test_fit_on_training_interactions_only_changes_the_negatives():
    """Leakage guard at the model level: the held-out item h co-occurs with a only in held-out events, so a
    model fitted on training interactions never proposes h first; one fitted on everything would."""
    train = [["a", "z1"], ["a", "z2"], ["a", "z3"], ["q", "r"]]
    held_out = [["h"], ["h"], ["h"]]  # the held-out next items of the first three users
    catalog = ["a", "z1", "z2", "z3", "q", "r", "h"]
    clean = Ease.fit(train, catalog)
    leaky = Ease.fit([t + h for t, h in zip(train, held_out + [[]], strict=True)], catalog)
    assert leaky.top_k(["a"], 1) == ["h"]  # the counterfactual: using held-out events changes the result
    assert set(clean.top_k(["a"], 3)) == {"z1", "z2", "z3"} and clean.scores(["a"])[catalog.index("h")] == 0.0
