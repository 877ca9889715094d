"""Full-catalogue evaluation by constrained beam search: metrics on hand-computed rankings, and a
tiny Qwen2 taught three (history -> item) pairs that the evaluation must find at rank 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rewards.rec.data import Example, Interaction
from rewards.rec.genrec_eval import (
    _render,
    build_trie,
    constrained_beam_search,
    evaluate_genrec,
    genrec_prompt,
    genrec_ranks,
    id_groups,
    item_rank,
    metrics_from_ranks,
    ranks_from_beams,
)
from rewards.rec.semantic_ids import SemanticIndex, add_code_tokens
from tests.helpers import random_index


def test_metrics_from_hand_ranks():
    m = metrics_from_ranks(np.array([1, 3, 7, np.inf]), ks=(5, 10))
    assert m["recall@5"] == 0.5 and m["recall@10"] == 0.75
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / 3) / 4)


def test_ranks_from_beams():
    beams = [[("a", -1.0), ("b", -2.0)], [("c", -0.5), ("a", -0.7)], []]
    assert ranks_from_beams(beams, ["b", "a", "a"]).tolist() == [2.0, 2.0, np.inf]
    m = metrics_from_ranks(np.array([1.0, 4.0]), ks=(3, 5), hit_name="hr")
    assert set(m) == {"n", "hr@3", "ndcg@3", "hr@5", "ndcg@5"} and m["hr@3"] == 0.5 and m["hr@5"] == 1.0


def test_item_ranks_with_shared_ids_and_duplicates():
    """Per-item ranks: a beam whose ID several items share names all of them, and whichever is the target
    ranks last among them (pessimistic ties); an item named twice keeps its first rank and takes no second."""
    beams = [(("x", "t"), -0.1), (("y",), -0.2), ("z", -0.3)]
    assert [item_rank(beams, t) for t in ("x", "t", "y", "z", "w")] == [2.0, 2.0, 3.0, 4.0, float("inf")]
    dup = [("a", -0.1), ("a", -0.2), ("b", -0.3), (("a", "c"), -0.4)]
    assert [item_rank(dup, t) for t in ("a", "b", "c")] == [1.0, 2.0, 3.0]
    groups = id_groups(["p", "q", "r"], [[1, 2], [3, 4], [1, 2]])
    assert groups == {(1, 2): ("p", "r"), (3, 4): ("q",)}


def _examples():
    return [
        Example((Interaction("u0", "i1"), Interaction("u0", "i2")), Interaction("u0", "i7")),
        Example((Interaction("u1", "i30"),), Interaction("u1", "i44")),
        Example((Interaction("u2", "i5"), Interaction("u2", "i9"), Interaction("u2", "i3")), Interaction("u2", "i58")),
    ]


@pytest.fixture(scope="module")
def coded(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    index = random_index()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    add_code_tokens(tok, model, index)
    return index, tok, model


def test_untrained_model_returns_distinct_valid_beams(coded):
    index, tok, model = coded
    trie, seq_to_item = build_trie(index, tok)
    prompts = [genrec_prompt([x.item for x in ex.history], index) for ex in _examples()]
    beams = constrained_beam_search(model.eval(), tok, prompts, trie, seq_to_item, num_beams=10, batch_size=2)
    for bl in beams:
        assert len(bl) == 10 and len({i for i, _ in bl}) == 10 and all(i in index for i, _ in bl)
        scores = [s for _, s in bl]
        assert scores == sorted(scores, reverse=True)
    groups = id_groups(index.items, index.token_sequences(tok))
    again = constrained_beam_search(model, tok, prompts, trie, groups, num_beams=10, batch_size=3, progress=True)
    assert [[(g[0], s) for g, s in bl] for bl in again] == [[(i, pytest.approx(s)) for i, s in bl] for bl in beams]


def test_trained_model_ranks_its_targets_first(coded):
    index, tok, model = coded
    exs = _examples()
    seqs = []
    for ex in exs:  # teach: prompt -> target ID + EOS (plain next-token SFT on the completion)
        p = _render(tok, genrec_prompt([x.item for x in ex.history], index))
        c = tok(index.id_string(ex.target.item), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append((p, c))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = 0.0
        for p, c in seqs:
            ids = torch.tensor([p + c])
            labels = torch.tensor([[-100] * len(p) + c])
            loss = loss + model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    m = evaluate_genrec(model, tok, index, exs, num_beams=10, ks=(1, 5, 10), batch_size=3)
    assert m["n"] == 3 and m["recall@1"] == 1.0 and m["ndcg@10"] == 1.0
    assert model.training  # evaluate_genrec restores the mode
    with pytest.raises(ValueError, match="num_beams"):
        evaluate_genrec(model, tok, index, exs, num_beams=5, ks=(10,))

    # The same model against a hand-built index in which a new item "dup" shares i7's ID (u0's target):
    # the beam that spells that ID names both items, i7 ranks 2nd (after "dup", pessimistic), so the
    # collision cannot count as a hit for both; the other two targets keep rank 1.
    shared = _SharedCodeIndex([*index.items, "dup"], np.vstack([index.codes, index.codes[index.items.index("i7")]]),
                              index.codebook_sizes)  # fmt: skip
    ranks = genrec_ranks(model, tok, shared, exs, num_beams=10, batch_size=3)
    assert ranks.tolist() == [2.0, 1.0, 1.0]
    dup_ex = Example(exs[0].history, Interaction("u0", "dup"))  # the other member of the group: rank 2 too
    assert genrec_ranks(model, tok, shared, [dup_ex], num_beams=10).tolist() == [2.0]
    m = evaluate_genrec(model, tok, shared, exs, num_beams=10, ks=(1, 10), hit_name="hr")
    assert m["hr@1"] == pytest.approx(2 / 3) and m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 2) / 3)


class _SharedCodeIndex(SemanticIndex):
    """A SemanticIndex that lets items share a code (the real one refuses): what a reused or hand-edited
    index could hold."""

    def __post_init__(self):
        self.items = [str(i) for i in self.items]
        self.codes = np.asarray(self.codes, dtype=np.int64).reshape(len(self.items), -1)
        self._code_of = {item: tuple(row) for item, row in zip(self.items, self.codes.tolist(), strict=True)}
        self._item_of = {c: i for i, c in reversed(list(self._code_of.items()))}
