import math

import numpy as np
import pytest

from rewards.rec.metrics import (
    batch_metrics,
    batch_rank_of_target,
    hit_at_k,
    mae,
    metric_from_rank,
    mrr,
    ndcg_at_k,
    rank_of_target,
    recall_at_k,
    rmse,
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


def test_rating_errors():
    assert mae([1, 2, 5], [2, 2, 3]) == pytest.approx(1.0)
    assert rmse([1, 2, 5], [2, 2, 3]) == pytest.approx(math.sqrt(5 / 3))
