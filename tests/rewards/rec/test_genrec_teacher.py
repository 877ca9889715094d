"""The recommender as a token teacher (rewards.rec.genrec_teacher): the trie marginals by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rewards.rec.genrec_eval import _render, genrec_prompt
from rewards.rec.genrec_teacher import TrieTeacher
from rewards.rec.semantic_ids import SemanticIndex, add_code_tokens

PROBS = {"x": 0.1, "y": 0.2, "z": 0.3, "w": 0.4}


class _Scores:
    """A recommender with fixed item probabilities (catalogue order differs from the index's), recording
    the histories it is asked about."""

    catalog = ["w", "z", "y", "x", "unknown"]

    def __init__(self):
        self.seen: list[list[str]] = []

    def scores(self, histories):
        self.seen += [list(h) for h in histories]
        row = [math.log(PROBS.get(i, 1e-30)) for i in self.catalog]
        return np.array([row] * len(histories))


@pytest.fixture(scope="module")
def coded(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # x, y share <a_0><b_1>; z = <a_0><b_2>; w alone under <a_1>
    index = SemanticIndex(["x", "y", "z", "w"], np.array([[0, 1, 2], [0, 1, 3], [0, 2, 0], [1, 0, 0]]), [2, 3, 4])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    add_code_tokens(tok, AutoModelForCausalLM.from_pretrained(tiny_model_dir), index)
    return index, tok


def _row(index, tok, history, item, pad_to):
    prompt = _render(tok, genrec_prompt(history, index))
    completion = tok.convert_tokens_to_ids(index.id_tokens(item)) + [tok.eos_token_id]
    completion += [tok.pad_token_id] * (pad_to - len(completion))
    return prompt, completion


def test_marginals_follow_the_trie_and_multiply_back_to_the_item_probability(coded):
    index, tok = coded
    recommender = _Scores()
    teacher = TrieTeacher(index, tok, recommender)
    prompt, completion = _row(index, tok, ["y", "w"], "x", pad_to=5)
    ids = torch.tensor([prompt + completion])
    V = len(tok)
    out = teacher.log_probs(ids, logits_to_keep=5, vocab_size=V)  # [1, 5, V]
    assert recommender.seen == [["y", "w"]]  # the history is read back from the prompt's code tokens
    t = lambda name: tok.convert_tokens_to_ids(name)  # noqa: E731
    p = out[0].exp()
    assert p[0, [t("<a_0>"), t("<a_1>")]].tolist() == pytest.approx([0.6, 0.4], abs=1e-6)  # x+y+z | w
    assert p[1, [t("<b_1>"), t("<b_2>")]].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)  # (x+y) | z, given a_0
    assert p[2, [t("<c_2>"), t("<c_3>")]].tolist() == pytest.approx([1 / 3, 2 / 3], abs=1e-6)  # x | y, given a_0 b_1
    assert out[0, 3, tok.eos_token_id] == 0.0  # a complete ID: only EOS
    assert torch.isneginf(out[0, 4]).all()  # after EOS: padding, no opinion
    for j, n in enumerate([2, 2, 2, 1]):  # exactly the trie's children carry mass
        assert torch.isfinite(out[0, j]).sum() == n and p[j].sum() == pytest.approx(1.0, abs=1e-6)
    sampled = [out[0, j, completion[j]] for j in range(3)]
    assert float(sum(sampled)) == pytest.approx(math.log(PROBS["x"]), abs=1e-6)  # chain rule: log p_T(x)


def test_rows_of_one_history_are_scored_once_and_items_outside_the_index_are_dropped(coded):
    index, tok = coded
    recommender = _Scores()
    teacher = TrieTeacher(index, tok, recommender)
    rows = [_row(index, tok, ["z"], item, pad_to=4) for item in ("w", "z")]
    width = max(len(p) for p, _ in rows)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p + c for p, c in rows])  # left-padded prompts
    out = teacher.log_probs(ids, logits_to_keep=4, vocab_size=len(tok))
    assert recommender.seen == [["z"]]
    assert torch.equal(out[0, 0], out[1, 0])
    assert out[0, 1].exp()[tok.convert_tokens_to_ids("<b_0>")] == pytest.approx(1.0)  # w is <a_1>'s only child
    lp = teacher.item_log_probs([["z"]])
    assert np.exp(lp[0]).tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-6)  # index order, "unknown" dropped


def test_forced_targets_sit_before_every_code_of_every_item_with_a_history(coded):
    """forced_log_probs (the warm start's distillation targets): row t holds the teacher's marginals of the
    token at t + 1, for each item after the first in the row, given the items before it; nothing elsewhere."""
    index, tok = coded
    recommender = _Scores()
    teacher = TrieTeacher(index, tok, recommender)
    prompt, completion = _row(index, tok, ["y", "w"], "x", pad_to=4)
    ids = prompt + completion
    out = teacher.forced_log_probs(torch.tensor([ids]), vocab_size=len(tok))  # [1, T, V]
    assert out.shape == (1, len(ids), len(tok))
    assert recommender.seen == [["y"], ["y", "w"]]  # w given y; x given y, w (y, the first item, has none)
    runs = teacher.item_runs(ids)
    assert [item for item, _ in runs] == ["y", "w", "x"]
    w, x = runs[1][1], runs[2][1]  # positions of their first code tokens
    targeted = torch.isfinite(out[0]).any(-1).nonzero().flatten().tolist()
    assert targeted == [w - 1, w, w + 1, x - 1, x, x + 1]  # the logits that predict w's and x's codes
    t = lambda name: tok.convert_tokens_to_ids(name)  # noqa: E731
    p = out[0].exp()
    assert p[w - 1, [t("<a_0>"), t("<a_1>")]].tolist() == pytest.approx([0.6, 0.4], abs=1e-6)
    assert p[w, t("<b_0>")] == pytest.approx(1.0) and p[w + 1, t("<c_0>")] == pytest.approx(1.0)
    chain = sum(out[0, x - 1 + j, ids[x + j]] for j in range(3))
    assert float(chain) == pytest.approx(math.log(PROBS["x"]), abs=1e-6)  # the item teacher, factorised


def test_item_tokens_between_ids_leave_the_histories_and_targets_where_the_codes_put_them(tiny_model_dir):
    """env.args.history_item_tokens: an <item_K> token after each history ID is not a code, so the teacher
    reads the same items and targets the same codes (each item's first code one position later per item
    token before it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    index = SemanticIndex(["x", "y", "z", "w"], np.array([[0, 1, 2], [0, 1, 3], [0, 2, 0], [1, 0, 0]]), [2, 3, 4])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    add_code_tokens(tok, AutoModelForCausalLM.from_pretrained(tiny_model_dir), index, item_tokens=True)
    completion = tok.convert_tokens_to_ids(index.id_tokens("x")) + [tok.eos_token_id]
    rows = {}
    for with_items in (False, True):
        prompt = _render(tok, genrec_prompt(["y", "w"], index, item_tokens=with_items))
        recommender = _Scores()
        teacher = TrieTeacher(index, tok, recommender)
        out = teacher.forced_log_probs(torch.tensor([prompt + completion]), len(tok))
        assert recommender.seen == [["y"], ["y", "w"]]
        runs = teacher.item_runs(prompt + completion)
        assert [item for item, _ in runs] == ["y", "w", "x"]
        targeted = torch.isfinite(out[0]).any(-1).nonzero().flatten().tolist()
        rows[with_items] = (runs, targeted, out)
    (plain_runs, plain_at, plain), (item_runs, item_at, items) = rows[False], rows[True]
    assert [p + k for k, (_, p) in enumerate(plain_runs)] == [p for _, p in item_runs]  # shifted by the item tokens
    assert item_at == [a + 1 for a in plain_at[:3]] + [a + 2 for a in plain_at[3:]]  # w's codes, then x's
    assert torch.equal(plain[0, plain_at], items[0, item_at])  # the same targets, at the shifted positions
