"""Prefix trie + logits processor: hand cases, a property test, and real transformers generate."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessorList

from rewards.rec.genrec_eval import build_trie
from rewards.rec.semantic_ids import add_code_tokens
from rewards.rec.trie import CodeTrie, TrieLogitsProcessor, TrieRequestProcessor
from tests.helpers import random_index

EOS = 99


def test_allowed_next_hand_cases():
    trie = CodeTrie([[1, 2, 3], [1, 2, 4], [1, 5, 6], [7, 8, 9]], eos_token_id=EOS)
    assert trie.allowed_next([]) == [1, 7]
    assert trie.allowed_next([1]) == [2, 5]
    assert trie.allowed_next([1, 2]) == [3, 4]
    assert trie.allowed_next([1, 2, 4]) == [EOS]
    assert trie.allowed_next([2]) == []  # off the trie
    assert trie.allowed_next([1, 2, 3, EOS]) == []
    assert [1, 5, 6] in trie and [1, 5] not in trie and len(trie) == 4 and trie.max_depth == 3
    assert trie.strip_eos([7, 8, 9, EOS, 0, 0]) == (7, 8, 9)


def test_processor_masks_rows_by_prefix_and_falls_back_to_eos():
    trie = CodeTrie([[1, 2, 3], [1, 2, 4], [7, 8, 9]], eos_token_id=EOS)
    proc = TrieLogitsProcessor(trie, prompt_length=2)
    ids = torch.tensor([[0, 0, 1, 2], [0, 0, 7, 8], [0, 0, 5, 5]])  # prompts of width 2, then 2 generated
    out = proc(ids, torch.zeros(3, 100))
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [3, 4]
    assert torch.isfinite(out[1]).nonzero().flatten().tolist() == [9]
    assert torch.isfinite(out[2]).nonzero().flatten().tolist() == [EOS]  # off the trie: only EOS


def test_request_processor_matches_allowed_next():
    trie = CodeTrie([[1, 2, 3], [1, 4, 3]], eos_token_id=EOS)
    fn = TrieRequestProcessor(trie)
    assert torch.isfinite(fn([1], torch.randn(100))).nonzero().flatten().tolist() == [2, 4]
    assert torch.isfinite(fn([1, 4, 3], torch.randn(100))).nonzero().flatten().tolist() == [EOS]


@settings(max_examples=60, deadline=None)
@given(
    codes=st.sets(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40),
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 6),
    greedy=st.booleans(),
)
def test_property_constrained_walk_only_emits_valid_ids(codes, seed, batch, greedy):
    """Whatever the logits, decoding step by step under the processor yields a catalogue ID then EOS."""
    level_offset = [10, 20, 30]  # token id of code c at level l: offset[lvl] + c
    seqs = [[level_offset[lvl] + c for lvl, c in enumerate(code)] for code in codes]
    trie = CodeTrie(seqs, eos_token_id=EOS)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch, 3, dtype=torch.long)  # prompt width 3
    proc = TrieLogitsProcessor(trie, prompt_length=3)
    for _ in range(trie.max_depth + 1):
        scores = proc(ids, torch.randn(batch, 128, generator=gen) * 5)
        if greedy:
            nxt = scores.argmax(-1)
        else:
            nxt = torch.multinomial(scores.softmax(-1), 1, generator=gen)[:, 0]
        ids = torch.cat([ids, nxt[:, None]], 1)
    for row in ids[:, 3:].tolist():
        assert row[-1] == EOS and row[:-1] in trie


@pytest.fixture(scope="module")
def coded(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    index = random_index()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    add_code_tokens(tok, model, index)
    trie, seq_to_item = build_trie(index, tok)
    return index, tok, model, trie, seq_to_item


def _prompts(tok):
    texts = ["the user likes red cups", "two lab kits and a digital meter", "a"]
    return tok(texts, return_tensors="pt", padding=True)


@pytest.mark.parametrize("mode", ["sample", "beam"])
def test_generate_with_processor_only_emits_catalogue_ids(coded, mode):
    index, tok, model, trie, seq_to_item = coded
    enc = _prompts(tok)
    width = enc["input_ids"].shape[1]
    torch.manual_seed(0)
    kwargs = (
        dict(do_sample=True, num_return_sequences=8) if mode == "sample" else dict(num_beams=8, num_return_sequences=8)
    )
    out = model.generate(
        **enc,
        max_new_tokens=trie.max_depth + 1,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        logits_processor=LogitsProcessorList([TrieLogitsProcessor(trie, width)]),
        **kwargs,
    )
    rows = out[:, width:].tolist()
    items = [seq_to_item.get(trie.strip_eos(r)) for r in rows]
    assert all(i is not None for i in items), rows
    texts = tok.batch_decode(out[:, width:], skip_special_tokens=True)
    assert [index.item_of_text(t) for t in texts] == items  # decoded text parses back to the same item
    if mode == "beam":
        for p in range(3):  # beams of one prompt are distinct items
            assert len(set(items[p * 8 : (p + 1) * 8])) == 8


def test_unconstrained_generation_is_mostly_invalid(coded):
    """Sanity check that the test above is not vacuous: without the processor, IDs are rarely valid."""
    index, tok, model, trie, seq_to_item = coded
    enc = _prompts(tok)
    width = enc["input_ids"].shape[1]
    torch.manual_seed(0)
    out = model.generate(
        **enc, max_new_tokens=trie.max_depth + 1, do_sample=True, num_return_sequences=8,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    valid = [seq_to_item.get(trie.strip_eos(r)) is not None for r in out[:, width:].tolist()]
    assert sum(valid) < len(valid) / 2
