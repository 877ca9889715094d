"""MiniOneRec rule / ranking rewards and the validity reward on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rewards.rec.genrec_rewards import (
    GenRecPrefixReward,
    GenRecRankingReward,
    GenRecRuleReward,
    GenRecValidityReward,
    prefix_match,
    ranking_penalties,
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
