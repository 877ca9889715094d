"""MiniOneRec rule / ranking rewards and the validity reward on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rewards.rec.genrec_rewards import (
    GenRecNeighbourRankReward,
    GenRecPrefixReward,
    GenRecRankingReward,
    GenRecRuleReward,
    GenRecSimilarityReward,
    GenRecTeacherReward,
    GenRecValidityReward,
    cosine_of_pairs,
    load_item_embeddings,
    neighbour_rank_credit,
    prefix_match,
    ranking_penalties,
    teacher_rank_credit,
)
from rewards.rec.semantic_ids import SemanticIndex


@pytest.fixture
def index():
    return SemanticIndex(["x", "y", "z"], np.array([[0, 1, 2], [0, 1, 3], [4, 0, 0]]), [5, 4, 4])


def test_rule_reward(index):
    rule = GenRecRuleReward(index=index)
    comps = ["<a_0><b_1><c_2>", " <a_0><b_1><c_3> ", "<a_0><b_1>", "garbage <a_0><b_1><c_2>"]
    assert rule(["p"] * 4, comps, target_item=["x", "y", "x", "x"]) == [1.0, 1.0, 0.0, 0.0]
    # chat-format completions and the target given as a code string (no index needed)
    assert GenRecRuleReward()(
        ["p"], [[{"role": "assistant", "content": "<a_4><b_0><c_0>"}]], target_code=["<a_4><b_0><c_0>"]
    ) == [1.0]


def test_ranking_penalties_hand_computed():
    w = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)]  # 1/log2(i+2)
    assert ranking_penalties(4) == pytest.approx([-x / sum(w) for x in w])
    assert sum(ranking_penalties(7)) == pytest.approx(-1.0)


def test_ranking_reward_groups(index):
    rank = GenRecRankingReward(num_generations=3, index=index)
    pen = ranking_penalties(3)  # [-0.4206, -0.2654, -0.2103] (w = 1, 0.631, 0.5; sum 2.131)
    assert pen == pytest.approx([-1 / 2.1309298, -0.6309298 / 2.1309298, -0.5 / 2.1309298])
    comps = ["<a_0><b_1><c_3>", "<a_0><b_1><c_2>", "<a_4><b_0><c_0>",  # group 1: hit at position 1
             "<a_0><b_1><c_3>", "<a_4><b_0><c_0>", "bad"]  # group 2: no hit -> all 0  # fmt: skip
    out = rank(["p1"] * 3 + ["p2"] * 3, comps, target_item=["x"] * 6)
    assert out == pytest.approx([pen[0], 0.0, pen[2], 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="whole groups"):
        rank(["p"] * 4, comps[:4], target_item=["x"] * 4)


def test_ranking_reward_by_prompt_and_beam_rank(index):
    rank = GenRecRankingReward(index=index)  # groups = runs of equal (prompt, target)
    comps = ["<a_0><b_1><c_2>", "<a_4><b_0><c_0>", "<a_4><b_0><c_0>", "<a_0><b_1><c_3>"]
    out = rank(["p1", "p1", "p2", "p2"], comps, target_item=["x", "x", "y", "y"], beam_rank=[0, 1, 1, 0])
    pen2 = ranking_penalties(2)
    assert out == pytest.approx([0.0, pen2[1], pen2[1], 0.0])


def test_validity_reward(index):
    val = GenRecValidityReward(index=index, invalid=-1.0)
    assert val(["p"] * 4, ["<a_0><b_1><c_2>", "<a_0><b_1><c_1>", "<a_0><b_1>", "hello"]) == [1.0, -1.0, -1.0, -1.0]


def test_rewards_load_index_from_file(index, tmp_path):
    path = index.save(tmp_path / "index.json")
    assert GenRecRuleReward(index_path=path)(["p"], ["<a_4><b_0><c_0>"], target_item=["z"]) == [1.0]


def test_prefix_reward_counts_leading_levels(index):
    assert prefix_match((0, 1, 3), (0, 1, 2)) == pytest.approx(2 / 3)
    assert prefix_match((4, 1, 2), (0, 1, 2)) == 0.0  # a later match after a miss earns nothing
    assert prefix_match(None, (0, 1, 2)) == 0.0
    prefix = GenRecPrefixReward(index=index)
    comps = ["<a_0><b_1><c_2>", "<a_0><b_1><c_3>", "<a_0><b_2><c_2>", "<a_4><b_0><c_0>", "nonsense"]
    assert prefix(["p"] * 5, comps, target_item=["x"] * 5) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0])

    # only the target itself earns 1: a longer code containing the whole target is capped at (L-1)/L
    assert prefix_match((0, 1, 2, 5), (0, 1, 2)) == pytest.approx(2 / 3)
    assert prefix_match((0, 1), (0, 1, 2)) == pytest.approx(2 / 3)


# Embeddings for x, y, z (index rows 0, 1, 2), deliberately unnormalised: the rewards normalise.
# x = (1, 0), y = (3, 4)/5 * 2, z = (0, -1)  ->  cos(x, y) = 0.6, cos(x, z) = 0, cos(y, z) = -0.8
EMB = np.array([[2.0, 0.0], [1.2, 1.6], [0.0, -3.0]])


def test_cosine_and_neighbour_rank_math():
    e = EMB / np.linalg.norm(EMB, axis=1, keepdims=True)
    assert cosine_of_pairs(e, np.array([0, 1, 2]), np.array([1, 2, 2])) == pytest.approx([0.6, -0.8, 1.0])
    # generated x: similarities x 1, y 0.6, z 0 -> target y ranks 2, target z ranks 3
    credit = neighbour_rank_credit(e, np.array([0, 0, 0, 1]), np.array([0, 1, 2, 1]), k=2)
    assert credit == pytest.approx([1.0, 1 / math.log2(3), 0.0, 1.0])  # z is beyond k = 2
    assert neighbour_rank_credit(e, np.array([0]), np.array([2]), k=3) == pytest.approx([0.5])  # 1/log2(4)
    # two identical embeddings: the generated item equal to the target still gets 1 (not a tie loss)
    dup = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert neighbour_rank_credit(dup, np.array([0, 1]), np.array([0, 0]), k=1) == pytest.approx([1.0, 0.0])


def test_similarity_reward(index):
    sim = GenRecSimilarityReward(index=index, embeddings=EMB)
    comps = ["<a_0><b_1><c_2>", "<a_0><b_1><c_3>", "<a_4><b_0><c_0>", "<a_0><b_1><c_9>", "text"]
    out = sim(["p"] * 5, comps, target_item=["x", "x", "y", "x", "x"])
    assert out[:3] == pytest.approx([1.0, 0.6, -0.8])
    assert out[3:] == [None, None]  # a well-formed code of no item, and no code at all
    # a number for invalid completions instead; target given as a code string; unknown target -> None
    sim2 = GenRecSimilarityReward(index=index, embeddings=EMB, invalid=-1.0)
    assert sim2(
        ["p"] * 3, ["bad", "<a_0><b_1><c_3>", "<a_0><b_1><c_3>"], target_code=["<a_4><b_0><c_0>"] * 2 + ["x"]
    ) == [
        -1.0,
        pytest.approx(-0.8),
        None,
    ]


def test_neighbour_rank_reward(index):
    rank = GenRecNeighbourRankReward(index=index, embeddings=EMB, k=2)
    comps = ["<a_0><b_1><c_2>", "<a_0><b_1><c_3>", "<a_4><b_0><c_0>", "nonsense"]
    # target x: generated x -> 1; generated y (sims y 1, x 0.6, z -0.8) -> x at rank 2; generated z
    # (z 1, x 0, y -0.8) -> x at rank 2
    assert rank(["p"] * 4, comps, target_item=["x"] * 4) == pytest.approx(
        [1.0, 1 / math.log2(3), 1 / math.log2(3), None]
    )
    with pytest.raises(ValueError, match="k \\(0\\) must be >= 1"):
        GenRecNeighbourRankReward(index=index, embeddings=EMB, k=0)


def test_embeddings_load_from_npy_and_item_texts(index, tmp_path, monkeypatch):
    np.save(tmp_path / "emb.npy", EMB)
    sim = GenRecSimilarityReward(index=index, embeddings_path=tmp_path / "emb.npy")
    assert sim(["p"], ["<a_0><b_1><c_3>"], target_item=["x"]) == pytest.approx([0.6])
    np.save(tmp_path / "short.npy", EMB[:2])
    with pytest.raises(ValueError, match="short.npy.*shape \\(2, 2\\).*3 items"):
        GenRecSimilarityReward(index=index, embeddings_path=tmp_path / "short.npy")
    with pytest.raises(ValueError, match="exactly one of embeddings_path"):
        load_item_embeddings(index)
    with pytest.raises(ValueError, match="needs the semantic index"):
        GenRecSimilarityReward(embeddings=EMB)
    # item texts: embedded once, in index order (a fake embedder records the texts it was given)
    import json

    import rewards.rec.semantic_ids as sid

    seen = []

    def fake_embed(texts, model_path=None):
        seen.append(list(texts))
        return EMB[[["xx", "yy", "zz"].index(t.split(": ")[1]) for t in texts]]

    monkeypatch.setattr(sid, "embed_texts", fake_embed)
    (tmp_path / "X.item.json").write_text(
        json.dumps({"z": {"title": "zz"}, "x": {"title": "xx"}, "y": {"title": "yy"}})
    )
    sim = GenRecSimilarityReward(index=index, item_texts_path=tmp_path / "X.item.json")
    assert seen == [["Title: xx", "Title: yy", "Title: zz"]]
    assert sim(["p"] * 2, ["<a_0><b_1><c_3>", "<a_0><b_1><c_3>"], target_item=["x", "z"]) == pytest.approx([0.6, -0.8])
    (tmp_path / "items.txt").write_text("x xx\ny yy\n")
    with pytest.raises(ValueError, match="no text for 1 of 3 index items.*'z'"):
        GenRecSimilarityReward(index=index, item_texts_path=tmp_path / "items.txt")


def test_teacher_rank_credit_math():
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.2, 0.7]])  # [B=2, N=3]
    # row 0: item 0 ranks 1, item 2 ranks 3; row 1: items 0 and 1 tie behind 2 (pessimistic: rank 3)
    credit = teacher_rank_credit(scores[[0, 0, 1, 1]], np.array([0, 2, 2, 0]), k=2)
    assert credit == pytest.approx([1.0, 0.0, 1.0, 0.0])  # rank 3 is beyond k = 2
    assert teacher_rank_credit(scores[[0]], np.array([1]), k=3) == pytest.approx([1 / math.log2(3)])
    # set credit: every item within the top k is worth 1 (rank 2 too), beyond k 0
    assert teacher_rank_credit(scores[[0, 0, 0]], np.array([0, 1, 2]), k=2, credit="topk") == pytest.approx([1, 1, 0])
    # log-probability credit: log softmax over the row's scores, at any rank (k plays no part)
    logp = teacher_rank_credit(scores[[0, 0, 1]], np.array([0, 2, 1]), k=1, credit="logprob")
    z0, z1 = math.log(sum(math.exp(v) for v in scores[0])), math.log(sum(math.exp(v) for v in scores[1]))
    assert logp == pytest.approx([0.9 - z0, 0.1 - z0, 0.2 - z1])
    assert np.exp(teacher_rank_credit(scores[[1] * 3], np.arange(3), k=1, credit="logprob")).sum() == pytest.approx(1)
    with pytest.raises(ValueError, match="not one of"):
        teacher_rank_credit(scores, np.array([0, 0]), k=2, credit="mrr")


class _Teacher:
    """Scores item columns [x, y, z] by the last history item: after x, y is best, then z, then x."""

    catalog = ["x", "y", "z"]

    def __init__(self):
        self.calls = 0

    def scores(self, histories):
        self.calls += 1
        table = {"x": [0.0, 2.0, 1.0], "z": [2.0, 1.0, 0.0]}
        return np.array([table[h[-1]] for h in histories])


def test_teacher_reward_ranks_the_generated_item_in_the_teachers_list(index):
    teacher = _Teacher()
    reward = GenRecTeacherReward(index=index, teacher=teacher, k=3)
    comps = ["<a_0><b_1><c_3>", "<a_4><b_0><c_0>", "<a_0><b_1><c_2>", "<a_0><b_1><c_2>", "text"]
    hist = [["z", "x"], ["z", "x"], ["z", "x"], ["z"], ["z"]]
    out = reward(["p"] * 5, comps, history=hist, target_item=["q"] * 5)  # the target plays no part
    # after x: y rank 1, z rank 2, x rank 3; after z: x rank 1; "text" names no item -> None
    assert out == pytest.approx([1.0, 1 / math.log2(3), 0.5, 1.0, None])
    assert teacher.calls == 1  # one scoring call; the three rows with history [z, x] share one row
    with pytest.raises(ValueError, match="'history' column"):
        reward(["p"], comps[:1])
    with pytest.raises(ValueError, match="teacher_path="):
        GenRecTeacherReward(index=index)
    top2 = GenRecTeacherReward(index=index, teacher=_Teacher(), k=2, credit="topk")
    assert top2(["p"] * 5, comps, history=hist) == pytest.approx([1.0, 1.0, 0.0, 1.0, None])
    with pytest.raises(ValueError, match="credit='dcg'.*ndcg.*topk"):
        GenRecTeacherReward(index=index, teacher=_Teacher(), credit="dcg")
