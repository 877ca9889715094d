import math

import numpy as np
import pytest

from rewards.rec.metrics import (
    approx_ndcg_of_target,
    batch_metrics,
    batch_rank_of_target,
    hit_at_k,
    mae,
    metric_from_rank,
    mrr,
    ndcg_at_k,
    paired_bootstrap,
    paired_rank_difference,
    random_order_metrics,
    rank_metrics,
    rank_of_target,
    recall_at_k,
    rmse,
    softmax_of_target,
)


def test_rank_and_tie_rules():
    s = [0.1, 0.9, 0.5, 0.5, 0.2]
    assert rank_of_target(s, 1) == 1
    assert rank_of_target(s, 0) == 5
    # target 0.5 at index 2: one higher (0.9), one tie (index 3)
    assert rank_of_target(s, 2) == 3  # pessimistic
    assert rank_of_target(s, 2, ties="mean") == 2.5
    assert rank_of_target(s, 2, ties="optimistic") == 2
    assert rank_of_target([1.0] * 10, 0) == 10  # a constant scorer gets the worst rank
    assert rank_of_target([float("nan"), 0.0], 0) == 2 and rank_of_target([0.0, float("nan")], 0) == 1
    with pytest.raises(ValueError, match="ties"):
        rank_of_target(s, 0, ties="random")
    with pytest.raises(ValueError, match="target_index"):
        rank_of_target(s, 5)


def test_metric_values_by_hand():
    assert ndcg_at_k(1, 10) == 1.0
    assert ndcg_at_k(3, 10) == pytest.approx(0.5)  # 1/log2(4)
    assert ndcg_at_k(2, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(11, 10) == 0.0
    assert hit_at_k(5, 5) == 1.0 and hit_at_k(6, 5) == 0.0
    assert mrr(4) == 0.25 and mrr(4, k=3) == 0.0
    assert recall_at_k([1, 4, 12], 5) == pytest.approx(2 / 3)
    np.testing.assert_allclose(ndcg_at_k(np.array([1, 3, 20]), 10), [1.0, 0.5, 0.0])
    assert metric_from_rank(3, "ndcg", 10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="metric"):
        metric_from_rank(1, "auc", 10)


def test_batch_versions():
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.3, 0.2], [0.5, 0.5, -np.inf]])
    ranks = batch_rank_of_target(scores, [0, 0, 1])
    np.testing.assert_array_equal(ranks, [1, 3, 2])
    m = batch_metrics(scores, [0, 0, 1], ks=(1, 2))
    assert m["hit@1"] == pytest.approx(1 / 3) and m["hit@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)


def test_softmax_of_target_by_hand():
    scores = np.array([[0.5, 0.3, 0.3], [0.2, 0.2, -np.inf], [0.4, 0.6, float("nan")]])
    p = softmax_of_target(scores, [0, 1, 0], temperature=0.1)
    e2 = math.exp(2.0)  # a 0.2 cosine lead at T = 0.1
    np.testing.assert_allclose(p, [e2 / (e2 + 2), 0.5, 1 / (1 + e2)])  # padding (-inf, NaN) weighs nothing
    # Smooth where the rank is not: the same rank 1, a wider lead, a larger reward.
    wider = softmax_of_target(np.array([[0.7, 0.3, 0.3]]), [0], temperature=0.1)[0]
    assert rank_of_target([0.7, 0.3, 0.3], 0) == rank_of_target([0.5, 0.3, 0.3], 0) == 1 and wider > p[0]
    with pytest.raises(ValueError, match="temperature"):
        softmax_of_target(scores, [0, 0, 0], temperature=0.0)
    with pytest.raises(ValueError, match="target_index"):
        softmax_of_target(scores, [3, 0, 0], temperature=0.1)


def test_approx_ndcg_of_target_by_hand():
    scores = np.array([[0.5, 0.3, 0.6, -np.inf], [0.5, 0.3, 0.6, 0.1]])
    t = 0.1
    soft_rank = 1 + 1 / (1 + math.exp(2.0)) + 1 / (1 + math.exp(-1.0))  # 0.3 behind by 0.2, 0.6 ahead by 0.1
    got = approx_ndcg_of_target(scores, [0, 0], temperature=t)
    tail = 1 / (1 + math.exp(4.0))  # the 0.1 candidate, 0.4 behind
    np.testing.assert_allclose(got, [1 / math.log2(1 + soft_rank), 1 / math.log2(1 + soft_rank + tail)])
    # As T -> 0 it is ndcg of the rank (no cutoff); at T > 0 a wider lead at the same rank scores higher.
    sharp = approx_ndcg_of_target(scores, [0, 2], temperature=1e-4)
    np.testing.assert_allclose(sharp, [ndcg_at_k(2, 10), ndcg_at_k(1, 10)])
    lead = approx_ndcg_of_target(np.array([[0.5, 0.3], [0.7, 0.3]]), [0, 0], temperature=t)
    assert lead[1] > lead[0] and (lead < 1).all()
    with pytest.raises(ValueError, match="temperature"):
        approx_ndcg_of_target(scores, [0, 0], temperature=-1.0)


def test_rank_metrics_by_hand():
    m = rank_metrics([1, 3, 20])  # ks 1, 3, 5, 10
    assert list(m) == ["hit@1", "hit@3", "hit@5", "hit@10", "ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "mrr"]
    assert m["hit@1"] == pytest.approx(1 / 3) and m["hit@3"] == m["hit@10"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 0.5) / 3) and m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 20) / 3)  # untruncated
    assert rank_metrics([np.inf])["mrr"] == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        rank_metrics([])


def test_random_order_metrics_by_hand():
    m = random_order_metrics([10])  # the target's rank uniform on 1..10
    assert m["hit@1"] == pytest.approx(0.1) and m["hit@5"] == pytest.approx(0.5) and m["hit@10"] == 1.0
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3) + 0.5) / 10)
    assert m["mrr"] == pytest.approx(sum(1 / r for r in range(1, 11)) / 10)
    assert m == pytest.approx(rank_metrics(np.arange(1, 11)))  # the same as averaging every rank once
    # examples with different candidate counts: the mean of each example's expectation
    mixed = random_order_metrics([2, 4], ks=(1,))
    assert mixed["hit@1"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert mixed["mrr"] == pytest.approx(((1 + 1 / 2) / 2 + (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4) / 2)
    with pytest.raises(ValueError, match="candidate counts"):
        random_order_metrics([0])


def test_rating_errors():
    assert mae([1, 2, 5], [2, 2, 3]) == pytest.approx(1.0)
    assert rmse([1, 2, 5], [2, 2, 3]) == pytest.approx(math.sqrt(5 / 3))


def test_paired_bootstrap_by_hand():
    # a constant difference has no spread: every resample's mean is that difference
    assert paired_bootstrap([0.5, 1.0, 0.0], [0.25, 0.75, -0.25]) == (0.25, 0.25, 0.25)
    assert paired_bootstrap([1.0], [0.0]) == (1.0, 1.0, 1.0)
    assert paired_bootstrap([0.3, 0.7], [0.3, 0.7]) == (0.0, 0.0, 0.0)
    # two users, differences 0 and 1: a resample's mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% quantiles are 0 and 1 and about half the resamples give 1/2
    mean, lo, hi = paired_bootstrap([1.0, 0.0], [0.0, 0.0], n_resamples=4000)
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)
    _, lo80, hi80 = paired_bootstrap([1.0, 0.0], [0.0, 0.0], n_resamples=4000, alpha=0.5)  # 25%..75% quantiles
    assert lo80 == hi80 == 0.5
    # paired, not independent: b = a + 0.1 on wildly varying users still gives a tight interval at -0.1
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 200)
    m, lo, hi = paired_bootstrap(a, a + 0.1)
    assert m == pytest.approx(-0.1) and lo == pytest.approx(-0.1) and hi == pytest.approx(-0.1)
    # seeded; the interval holds the mean and is wider for noisier differences
    b = rng.uniform(0, 1, 200)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3) != paired_bootstrap(a, b, seed=4)
    m, lo, hi = paired_bootstrap(a, b)
    assert lo < m < hi and m == pytest.approx(float(np.mean(a - b)))
    se = float(np.std(a - b) / np.sqrt(len(a)))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    for bad, match in (
        (([1.0, 2.0], [1.0]), "equal length"),
        (([], []), "at least one"),
        (([1.0, float("inf")], [0.0, 0.0]), "finite"),
    ):
        with pytest.raises(ValueError, match=match):
            paired_bootstrap(*bad)
    with pytest.raises(ValueError, match="alpha"):
        paired_bootstrap([1.0], [0.0], alpha=1.5)


def test_paired_rank_difference_by_hand():
    """Ranks 1 and 3 against ranks 2 and inf (never ranked): per-user ndcg@10 and hit@10 differences."""
    out = paired_rank_difference([1, 3], [2, np.inf], ("ndcg@10", "recall@10", "hr@10"), n_resamples=200)
    assert out["n"] == 2.0 and set(out["ci95"]) == {"ndcg@10", "recall@10", "hr@10"}
    assert out["ndcg@10"] == pytest.approx(((1 - 1 / math.log2(3)) + 1 / math.log2(4)) / 2)
    assert out["recall@10"] == out["hr@10"] == 0.5  # hit-type metrics: the same indicator
    lo, hi = out["ci95"]["recall@10"]
    assert lo == 0.0 and hi == 1.0  # resampling two users: both, either, or neither gained a hit
