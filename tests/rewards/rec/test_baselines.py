"""Popularity and SASRec baselines, and the full-catalogue scorer they share."""

from __future__ import annotations

import numpy as np
import pytest

from rewards.rec.baselines import PopularityBaseline, SASRecBaseline, SASRecConfig, evaluate_scores
from rewards.rec.data import Example, Interaction, RecData, leave_one_out


def _ex(user, hist, target):
    return Example(tuple(Interaction(user, i) for i in hist), Interaction(user, target))


def test_evaluate_scores_hand_computed():
    catalog = ["a", "b", "c", "d"]
    scores = np.array([[0.9, 0.5, 0.1, 0.0], [0.9, 0.5, 0.1, 0.0], [0.2, 0.2, 0.2, 0.2]])
    exs = [_ex("u1", ["c"], "a"), _ex("u2", ["a"], "c"), _ex("u3", ["a"], "b")]
    m = evaluate_scores(lambda h: scores[: len(h)], exs, catalog, ks=(1, 3))
    # ranks: 1, 3, 4 (all tied: pessimistic)
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / np.log2(4)) / 3)
    # excluding history: u2's "a" is removed, so "c" ranks 2
    m2 = evaluate_scores(lambda h: scores[: len(h)], exs, catalog, ks=(2,), exclude_history=True)
    assert m2["recall@2"] == pytest.approx(2 / 3)


def test_popularity_baseline():
    train = {"u1": [Interaction("u1", "b"), Interaction("u1", "c")], "u2": [Interaction("u2", "b")]}
    pop = PopularityBaseline(["a", "b", "c"]).fit(train)
    assert pop.scores([[], []]).tolist() == [[0, 2, 1], [0, 2, 1]]
    m = evaluate_scores(pop.scores, [_ex("u1", ["b"], "b"), _ex("u2", ["b"], "c")], pop.catalog, ks=(1, 2))
    assert m["recall@1"] == 0.5 and m["recall@2"] == 1.0


def test_sasrec_learns_a_sequential_pattern():
    """Users walk a cycle of 20 items from random starts; SASRec must learn 'next = current + 1'
    (popularity cannot: every item is equally popular)."""
    rng = np.random.default_rng(0)
    n = 20
    inter = {}
    for u in range(150):
        start, length = int(rng.integers(n)), int(rng.integers(5, 10))
        inter[f"u{u}"] = [Interaction(f"u{u}", f"i{(start + t) % n}") for t in range(length)]
    data = RecData(inter)
    split = leave_one_out(data)
    catalog = data.item_ids
    cfg = SASRecConfig(dim=32, layers=1, heads=2, max_epochs=12, patience=12, lr=1e-2, batch_size=64, dropout=0.1)
    model = SASRecBaseline(catalog, cfg).fit(split.train, split.valid)
    m = evaluate_scores(model.scores, split.test, catalog, ks=(1, 10))
    pop = evaluate_scores(PopularityBaseline(catalog).fit(split.train).scores, split.test, catalog, ks=(1, 10))
    assert m["recall@1"] > 0.8, (m, model.log[-3:])
    assert pop["recall@10"] < 0.6
    assert model.log[-1]["loss"] < model.log[0]["loss"]
