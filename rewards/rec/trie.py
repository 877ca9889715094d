"""Constrained decoding over semantic IDs: a prefix trie of token ids and a logits processor.

``CodeTrie(sequences, eos_token_id)`` holds every valid item ID as a token-id sequence
(``SemanticIndex.token_sequences(tokenizer)``). ``allowed_next(prefix)`` is pure (no torch): the
tokens that may follow ``prefix`` (the completion so far): the children of its node, plus the EOS ids
once ``prefix`` is a complete ID; ``[]`` for a prefix that is not in the trie. Engines call it:

- transformers: ``TrieLogitsProcessor`` (a ``LogitsProcessor``) sets every other token's score to
  -inf, row by row ([B*num_beams, V]), so it works with greedy, sampling (``do_sample``, or Relay's
  seeded Gumbel sampler placed *after* it) and beam search. A row whose prefix left the trie (only
  possible if something else chose its tokens) or already ended may only emit EOS, so no row is ever
  all -inf.
- vLLM: its logits processors see the generated ids of each request (``output_token_ids``), which
  are exactly the ``prefix`` here; ``TrieRequestProcessor`` is the per-request callable
  ``(output_ids, logits[V]) -> logits`` to wrap in whatever interface the vLLM version wants.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
from transformers import LogitsProcessor


class CodeTrie:
    """Prefix trie over token-id sequences (all valid item IDs)."""

    def __init__(self, sequences: Iterable[Sequence[int]], eos_token_id: int | Sequence[int] | None = None):
        self.eos_ids: tuple[int, ...] = (
            ()
            if eos_token_id is None
            else (int(eos_token_id),)
            if isinstance(eos_token_id, int)
            else tuple(map(int, eos_token_id))
        )
        children: dict[tuple[int, ...], dict[int, None]] = defaultdict(dict)  # dict keeps insertion order
        self.complete: set[tuple[int, ...]] = set()
        depth = 0
        for seq in sequences:
            seq = tuple(int(t) for t in seq)
            if not seq:
                raise ValueError("CodeTrie: empty sequence; every item ID needs at least one token")
            for i in range(len(seq)):
                children[seq[:i]].setdefault(seq[i], None)
            self.complete.add(seq)
            depth = max(depth, len(seq))
        if not self.complete:
            raise ValueError("CodeTrie: no sequences")
        self.max_depth = depth  # longest ID in tokens; generate with max_new_tokens = max_depth + 1 (EOS)
        self._allowed: dict[tuple[int, ...], tuple[int, ...]] = {}
        for prefix, kids in children.items():
            extra = self.eos_ids if prefix in self.complete else ()
            self._allowed[prefix] = tuple(sorted(kids)) + tuple(e for e in extra if e not in kids)
        for seq in self.complete:
            if seq not in self._allowed:
                self._allowed[seq] = self.eos_ids
        self.vocab = frozenset(t for kids in children.values() for t in kids)

    def __len__(self) -> int:
        return len(self.complete)

    def __contains__(self, seq: Sequence[int]) -> bool:
        return tuple(int(t) for t in seq) in self.complete

    def allowed_next(self, prefix_ids: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix_ids`` (EOS ids after a complete ID); ``[]`` off the trie."""
        return list(self._allowed.get(tuple(int(t) for t in prefix_ids), ()))

    def strip_eos(self, ids: Sequence[int]) -> tuple[int, ...]:
        """``ids`` cut at its first EOS (and without it)."""
        out = []
        for t in ids:
            if int(t) in self.eos_ids:
                break
            out.append(int(t))
        return tuple(out)


class TrieLogitsProcessor(LogitsProcessor):
    """Masks (to -inf) every token the trie does not allow after each row's completion so far.

    ``prompt_length``: the padded prompt width, so a row's completion is ``input_ids[row, prompt_length:]``;
    None = the width of ``input_ids`` at the first call (one processor per ``generate`` call then).
    Rows with no allowed token (off the trie, or finished) may emit only EOS (``fallback_ids``).
    """

    def __init__(self, trie: CodeTrie, prompt_length: int | None = None, fallback_ids: Sequence[int] | None = None):
        self.trie = trie
        self.prompt_length = prompt_length
        self.fallback = tuple(fallback_ids) if fallback_ids is not None else trie.eos_ids
        if not self.fallback:
            raise ValueError("TrieLogitsProcessor needs EOS ids (CodeTrie(eos_token_id=...) or fallback_ids)")
        self._index_cache: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}

    def _ids(self, key: tuple[int, ...], device: torch.device) -> torch.Tensor:
        cached = self._index_cache.get((key, device))
        if cached is None:
            allowed = self.trie._allowed.get(key) or self.fallback
            cached = torch.tensor(allowed, dtype=torch.long, device=device)
            self._index_cache[(key, device)] = cached
        return cached

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        generated = input_ids[:, self.prompt_length :].tolist()  # [B, t]
        rows_by_key: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for row, ids in enumerate(generated):
            rows_by_key[tuple(ids)].append(row)
        keep = torch.zeros_like(scores, dtype=torch.bool)  # [B, V]
        for key, rows in rows_by_key.items():
            ids = self._ids(key, scores.device)
            keep[torch.tensor(rows, device=scores.device)[:, None], ids[None, :]] = True
        return scores.masked_fill(~keep, float("-inf"))


class TrieRequestProcessor:
    """vLLM-style per-request processor: ``(output_token_ids, logits [V]) -> logits`` with the rest at -inf."""

    def __init__(self, trie: CodeTrie):
        self.trie = trie
        self._cache: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}

    def __call__(self, output_token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        key = tuple(int(t) for t in output_token_ids)
        ids = self._cache.get((key, logits.device))
        if ids is None:
            ids = torch.tensor(self.trie.allowed_next(key) or self.trie.eos_ids, dtype=torch.long, device=logits.device)
            self._cache[(key, logits.device)] = ids
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep[ids] = True
        return logits.masked_fill(~keep, float("-inf"))


class TrieConstraint:
    """A rollout engine's processor factory (``rl/rollout/processors.py``) for one trie: an HF
    ``TrieLogitsProcessor`` per generate batch, a ``TrieRequestProcessor`` per vLLM request."""

    def __init__(self, trie: CodeTrie):
        self.trie = trie

    def for_batch(self, prompt_length: int) -> TrieLogitsProcessor:
        return TrieLogitsProcessor(self.trie, prompt_length)

    def for_request(self) -> TrieRequestProcessor:
        return TrieRequestProcessor(self.trie)


def trie_constraint(tokenizer, index_path: str) -> TrieConstraint:
    """Engine hook factory: the trie of every item ID in the semantic index at ``index_path``, ending
    in the tokenizer's EOS. Spec: ``("rewards.rec.trie:trie_constraint", {"index_path": ...})``."""
    from rewards.rec.semantic_ids import SemanticIndex

    index = SemanticIndex.load(index_path)
    if tokenizer.eos_token_id is None:
        raise ValueError("trie_constraint: the tokenizer has no eos_token_id; set one so an ID can end")
    return TrieConstraint(CodeTrie(index.token_sequences(tokenizer), eos_token_id=tokenizer.eos_token_id))
