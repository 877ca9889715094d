"""Rewards for generative recommenders (MiniOneRec's rule and ranking rewards, plus validity).

A completion names an item by its semantic ID, ``<a_12><b_7><c_201>`` (then EOS). Columns:
``target_item`` (item id; needs the ``SemanticIndex``) or ``target_code`` (the target's ID string).

- ``GenRecRuleReward``: 1 if the completion is the target's ID, else 0 (MiniOneRec ``rule_reward``).
- ``GenRecRankingReward``: MiniOneRec's ``ndcg_rule_reward``. In a group of G completions for one
  prompt (beam search returns them best first), a wrong completion at position i (0-based) gets
  ``-w_i / sum_j w_j`` with ``w_i = 1 / log2(i + 2)``, the correct one 0; a group with no correct
  completion gets 0 everywhere (nothing to rank against). It penalises confident wrong beams
  most; MiniOneRec's "ranking" reward is rule + this (weights 1, 1).
  Position: the ``beam_rank`` column when the rollout gives one, else the position in the group.
  Groups: consecutive blocks of ``num_generations``; with ``num_generations=None``, consecutive runs
  of equal (prompt, target) (robust when a reward pool cuts a batch at group boundaries).
- ``GenRecValidityReward``: ``valid`` (1) if the completion is the ID of a catalogue item, else
  ``invalid`` (0); constrained decoding makes it 1 always, so it matters for unconstrained sampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewards.contract import message_text
from rewards.rec.semantic_ids import SemanticIndex, parse_code


def ranking_penalties(group_size: int) -> list[float]:
    """``[-w_i / sum_j w_j]`` for i < group_size, ``w_i = 1 / log2(i + 2)``; sums to -1."""
    w = [1.0 / math.log2(i + 2) for i in range(group_size)]
    total = sum(w)
    return [-x / total for x in w]


class _GenRecReward:
    def __init__(self, index_path: str | Path | None = None, index: SemanticIndex | None = None, name: str = ""):
        self.index = index if index is not None else SemanticIndex.load(index_path) if index_path else None
        self.__name__ = name or type(self).__name__

    def _code(self, completion: Any) -> tuple[int, ...] | None:
        return parse_code(message_text(completion))

    def _targets(
        self, n: int, target_item: Sequence[Any] | None, target_code: Sequence[str] | None
    ) -> list[tuple[int, ...] | None]:
        if target_code is not None:
            return [parse_code(str(t)) for t in target_code]
        if target_item is None:
            raise ValueError(f"{self.__name__} needs a 'target_item' or 'target_code' column")
        if self.index is None:
            raise ValueError(f"{self.__name__}: 'target_item' needs the semantic index; pass index_path=")
        return [self.index.code_of(str(t)) if str(t) in self.index else None for t in target_item]

    def _hits(self, completions, target_item, target_code) -> list[bool]:
        targets = self._targets(len(completions), target_item, target_code)
        return [t is not None and self._code(c) == t for c, t in zip(completions, targets, strict=True)]


class GenRecRuleReward(_GenRecReward):
    """1.0 if the completion is the target's semantic ID, else 0.0."""

    def __call__(self, prompts, completions, completion_ids=None, *, target_item=None, target_code=None, **_: Any):
        return [1.0 if h else 0.0 for h in self._hits(completions, target_item, target_code)]


class GenRecRankingReward(_GenRecReward):
    """MiniOneRec's rank-aware penalty of wrong beams (see the module docstring)."""

    def __init__(
        self,
        num_generations: int | None = None,
        index_path: str | Path | None = None,
        index: SemanticIndex | None = None,
        name: str = "",
    ):
        super().__init__(index_path, index, name)
        if num_generations is not None and num_generations < 1:
            raise ValueError(f"num_generations ({num_generations}) must be >= 1, or None to group by prompt")
        self.num_generations = num_generations

    def _groups(self, prompts, targets_key: list[Any]) -> list[list[int]]:
        n = len(targets_key)
        if self.num_generations is not None:
            g = self.num_generations
            if n % g:
                raise ValueError(
                    f"{self.__name__}: {n} completions are not whole groups of num_generations={g}; give the reward "
                    "whole groups (reward pool batch_size a multiple of it) or num_generations=None to group by prompt"
                )
            return [list(range(s, s + g)) for s in range(0, n, g)]
        groups: list[list[int]] = []
        prev = None
        for i in range(n):
            key = (repr(prompts[i]) if prompts is not None else None, targets_key[i])
            if key != prev:
                groups.append([])
                prev = key
            groups[-1].append(i)
        return groups

    def __call__(
        self, prompts, completions, completion_ids=None, *, target_item=None, target_code=None, beam_rank=None, **_: Any
    ):
        hits = self._hits(completions, target_item, target_code)
        keys = list(target_code if target_code is not None else target_item)
        out = [0.0] * len(completions)
        for group in self._groups(prompts, keys):
            if not any(hits[i] for i in group):
                continue
            pos = [int(beam_rank[i]) for i in group] if beam_rank is not None else list(range(len(group)))
            pen = ranking_penalties(max(len(group), max(pos) + 1))
            for i, p in zip(group, pos, strict=True):
                out[i] = 0.0 if hits[i] else pen[p]
        return out


class GenRecValidityReward(_GenRecReward):
    """``valid`` if the completion is a catalogue item's semantic ID, else ``invalid``."""

    def __init__(
        self,
        index_path: str | Path | None = None,
        index: SemanticIndex | None = None,
        valid: float = 1.0,
        invalid: float = 0.0,
        name: str = "",
    ):
        super().__init__(index_path, index, name)
        if self.index is None:
            raise ValueError("GenRecValidityReward needs the semantic index; pass index_path=")
        self.valid, self.invalid = valid, invalid

    def __call__(self, prompts, completions, completion_ids=None, **_: Any):
        return [
            self.valid if (c := self._code(x)) is not None and self.index.item_of(c) is not None else self.invalid
            for x in completions
        ]


def prefix_match(code: tuple[int, ...] | None, target: tuple[int, ...] | None) -> float:
    """Share of the target's code levels matched from the start: ``(1,2,3,0)`` vs ``(1,2,9,0)`` -> 0.5."""
    if code is None or target is None:
        return 0.0
    n = 0
    for a, b in zip(code, target, strict=False):  # a longer or shorter code just stops matching
        if a != b:
            break
        n += 1
    return n / len(target)


class GenRecPrefixReward(_GenRecReward):
    """Partial credit along the semantic-ID hierarchy: the share of the target's leading code levels the
    completion gets right (1 for the target itself). Dense where the rule reward is almost always 0: with
    semantic IDs a right prefix means a similar item (same category cluster)."""

    def __call__(self, prompts, completions, completion_ids=None, *, target_item=None, target_code=None, **_: Any):
        targets = self._targets(len(completions), target_item, target_code)
        return [prefix_match(self._code(c), t) for c, t in zip(completions, targets, strict=True)]
