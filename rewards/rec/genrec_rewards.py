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
- ``GenRecPrefixReward``: the share of the target's leading code levels the completion matches.

Dense rewards for large catalogues, where almost no sampled ID is the target and the rule reward is
flat (both need the index and item embeddings, loaded once per reward actor: ``embeddings_path=``
a ``.npy`` in the index's item order, or ``item_texts_path=`` embedded with MiniLM):
- ``GenRecSimilarityReward``: cosine similarity of the generated item's embedding to the target's.
- ``GenRecNeighbourRankReward(k=50)``: NDCG@k of the target in the catalogue ranked by similarity to
  the generated item (1 for the target, 1/log2(r + 1) at neighbour rank r, 0 beyond k).
A completion naming no item gets ``invalid`` (None by default: excluded); an unknown target gets None.

A reward from another model (the frozen recommender as the judge, as in DUET):
- ``GenRecTeacherReward(teacher_path=, k=50, credit="ndcg")``: NDCG@k credit of the generated item in
  a frozen SASRec's ranking of the catalogue for the user's history (column ``history``: item ids,
  oldest first), 1 within the top k (``credit="topk"``), or the teacher's log-probability of the item
  (``credit="logprob"``); no target needed. The env trains the teacher once on the training split
  (``env.args.teacher_weight``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewards.contract import message_text
from rewards.rec.metrics import batch_rank_of_target, hit_at_k, ndcg_at_k
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
    """Share of the target's code levels matched from the start: ``(1,2,3,0)`` vs ``(1,2,9,0)`` -> 0.5.

    Only the target itself earns 1: a longer code that starts with the whole target (not an item's ID)
    gets ``(L - 1) / L`` like a code that misses the last level.
    """
    if code is None or target is None:
        return 0.0
    if tuple(code) == tuple(target):
        return 1.0
    n = 0
    for a, b in zip(code, target, strict=False):  # a shorter code just stops matching
        if a != b:
            break
        n += 1
    return min(n, len(target) - 1) / len(target)


class GenRecPrefixReward(_GenRecReward):
    """Partial credit along the semantic-ID hierarchy: the share of the target's leading code levels the
    completion gets right (1 for the target itself). Dense where the rule reward is almost always 0: with
    semantic IDs a right prefix means a similar item (same category cluster)."""

    def __call__(self, prompts, completions, completion_ids=None, *, target_item=None, target_code=None, **_: Any):
        targets = self._targets(len(completions), target_item, target_code)
        return [prefix_match(self._code(c), t) for c, t in zip(completions, targets, strict=True)]


# ------------------------------------------------------------------------- dense rewards for large catalogues


def load_item_embeddings(
    index: SemanticIndex,
    embeddings_path: str | Path | None = None,
    item_texts_path: str | Path | None = None,
    embed_model: str | Path | None = None,
) -> np.ndarray:
    """L2-normalised item embeddings [N, D], row i = ``index.items[i]``.

    From ``embeddings_path`` (a ``.npy`` [N, D] whose rows follow the index's item order: the env's cached
    ``emb-*.npy``, or the file ``python -m rewards.rec.semantic_ids --embeddings`` writes), or by embedding
    ``item_texts_path`` (LC-Rec ``X.item.json`` or a P5 ``item_id<space>text`` file) with MiniLM
    (``embed_model`` None = the packaged one). Exactly one of the two.
    """
    if (embeddings_path is None) == (item_texts_path is None):
        raise ValueError("item embeddings: pass exactly one of embeddings_path= (.npy) or item_texts_path=")
    if embeddings_path is not None:
        emb = np.load(embeddings_path)
        if emb.ndim != 2 or len(emb) != len(index):
            raise ValueError(
                f"embeddings_path ({embeddings_path}): shape {emb.shape}, but the semantic index has {len(index)} "
                "items; give the embeddings the index was built from (rows in its item order), or item_texts_path="
            )
    else:
        from rewards.rec.data import item_info, item_text, load_item_texts
        from rewards.rec.semantic_ids import embed_texts

        path = Path(item_texts_path)  # type: ignore[arg-type]
        if path.suffix == ".json":
            infos = {str(k): item_info(v) for k, v in json.loads(path.read_text()).items() if isinstance(v, dict)}
        else:
            infos = load_item_texts(path)
        missing = [i for i in index.items if i not in infos]
        if missing:
            raise ValueError(
                f"item_texts_path ({path}): no text for {len(missing)} of {len(index)} index items "
                f"(e.g. {missing[:5]}); use the item file of the data the index was built from"
            )
        emb = embed_texts([item_text(infos[i]) for i in index.items], embed_model)
    from sklearn.preprocessing import normalize

    return normalize(np.asarray(emb, dtype=np.float32))  # [N, D], unit rows (a zero row stays zero)


def cosine_of_pairs(emb: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """emb [N, D] L2-normalised, row indices a [B], b [B] -> cos(emb[a], emb[b]) [B]."""
    return np.einsum("bd,bd->b", emb[a], emb[b])


def neighbour_rank_credit(emb: np.ndarray, generated: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k credit of the target in the catalogue ranked by similarity to the generated item.

    emb [N, D] L2-normalised; generated [B], target [B] row indices. Rank r = 1 + the number of items more
    similar to the generated item than the target is (pessimistic ties, ``rewards.rec.metrics``), r = 1 when
    generated == target; credit = 1 / log2(r + 1) if r <= k else 0 -> [B].
    """
    sims = emb[generated] @ emb.T  # [B, N]
    ranks = batch_rank_of_target(sims, target, "pessimistic")  # [B]
    ranks = np.where(generated == target, 1.0, ranks)
    return np.asarray(ndcg_at_k(ranks, k), dtype=np.float64).reshape(-1)


class _EmbeddingReward(_GenRecReward):
    """Maps completions and targets to rows of the item embeddings (None where either is not an item)."""

    def __init__(
        self,
        index_path: str | Path | None = None,
        index: SemanticIndex | None = None,
        embeddings_path: str | Path | None = None,
        item_texts_path: str | Path | None = None,
        embed_model: str | Path | None = None,
        embeddings: np.ndarray | None = None,
        invalid: float | None = None,
        name: str = "",
    ):
        super().__init__(index_path, index, name)
        if self.index is None:
            raise ValueError(f"{self.__name__} needs the semantic index; pass index_path=")
        if embeddings is not None:
            e = np.asarray(embeddings, dtype=np.float32)
            if e.shape[0] != len(self.index):
                raise ValueError(f"embeddings has {e.shape[0]} rows for {len(self.index)} index items")
            from sklearn.preprocessing import normalize

            self.emb = normalize(e)  # unit rows
        else:
            self.emb = load_item_embeddings(self.index, embeddings_path, item_texts_path, embed_model)
        self.row = {item: i for i, item in enumerate(self.index.items)}
        self.invalid = invalid

    def _rows(self, completions, target_item, target_code) -> tuple[list[int | None], list[int | None]]:
        targets = self._targets(len(completions), target_item, target_code)
        idx: SemanticIndex = self.index  # type: ignore[assignment]  # checked in __init__

        def row(code: tuple[int, ...] | None) -> int | None:
            item = idx.item_of(code) if code is not None else None
            return self.row[item] if item is not None else None

        return [row(self._code(c)) for c in completions], [row(t) for t in targets]

    def _score(self, gen: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, prompts, completions, completion_ids=None, *, target_item=None, target_code=None, **_: Any):
        gen, tgt = self._rows(completions, target_item, target_code)
        ok = [i for i, (g, t) in enumerate(zip(gen, tgt, strict=True)) if g is not None and t is not None]
        out: list[float | None] = [None if t is None else self.invalid for t in tgt]
        if ok:
            vals = self._score(np.array([gen[i] for i in ok]), np.array([tgt[i] for i in ok]))
            for i, v in zip(ok, vals.tolist(), strict=True):
                out[i] = float(v)
        return out


class GenRecSimilarityReward(_EmbeddingReward):
    """Cosine similarity of the generated item's text embedding to the target's (1 for the target itself).

    Dense where the rule reward is almost always 0 on a large catalogue: a wrong item from the right
    category still scores higher than an unrelated one. A completion that names no catalogue item gets
    ``invalid`` (None = excluded from the group, the default; or a number such as -1); an unknown target
    gives None. Embeddings: ``embeddings_path=`` (.npy, rows in the index's item order) or
    ``item_texts_path=`` (embedded once per reward actor with MiniLM).
    """

    def _score(self, gen: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        return cosine_of_pairs(self.emb, gen, tgt)


class GenRecNeighbourRankReward(_EmbeddingReward):
    """Rank-aware, scale-free similarity credit: rank the whole catalogue by similarity to the generated
    item; the reward is NDCG@k of the target in that ranking (1 for the target itself, 1/log2(r + 1) when
    the target is the r-th most similar item, 0 beyond ``k``). Unlike the raw cosine it does not depend on
    how the embedding spreads its similarities, only on how many items sit between the generated item and
    the target. ``invalid`` as in ``GenRecSimilarityReward``."""

    def __init__(self, *args: Any, k: int = 50, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if k < 1:
            raise ValueError(f"k ({k}) must be >= 1: the depth of the neighbour list that earns credit")
        self.k = k

    def _score(self, gen: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        return neighbour_rank_credit(self.emb, gen, tgt, self.k)


# ------------------------------------------------------------------------- a frozen recommender as the judge


TEACHER_CREDITS = ("ndcg", "topk", "logprob")


def teacher_rank_credit(scores: np.ndarray, generated: np.ndarray, k: int, credit: str = "ndcg") -> np.ndarray:
    """Credit of each generated item in its own row's teacher ranking (rank credits: pessimistic ties).

    scores [B, N] (the teacher's scores over the catalogue), generated [B] column indices -> [B]:
    ``ndcg``: 1 / log2(r + 1) at rank r <= k, else 0 (the teacher's top item is worth most);
    ``topk``: 1 if r <= k, else 0 (every item of the teacher's top-k list is worth the same);
    ``logprob``: log softmax(scores)[generated], the teacher's log-probability of the item (k unused).
    With a KL penalty of weight beta to the start policy, the policy that maximises this reward is
    start * teacher^(1/beta) (renormalised): at beta = 1 the product of the two recommenders.
    """
    if credit not in TEACHER_CREDITS:
        raise ValueError(f"credit {credit!r} is not one of {TEACHER_CREDITS}")
    if credit == "logprob":
        from scipy.special import log_softmax

        return log_softmax(scores.astype(np.float64), axis=1)[np.arange(len(generated)), generated]
    ranks = batch_rank_of_target(scores, generated, "pessimistic")  # [B]
    per_item = ndcg_at_k if credit == "ndcg" else hit_at_k
    return np.asarray(per_item(ranks, k), dtype=np.float64).reshape(-1)


class GenRecTeacherReward(_GenRecReward):
    """How highly a frozen SASRec ranks the generated item for this user: NDCG@k credit of the item in
    the teacher's full-catalogue ranking from the ``history`` column (1 for the teacher's top item,
    1 / log2(r + 1) at rank r, 0 beyond ``k``). It needs no target: a dense, history-aware judgement
    from a sequential model that uses the history better than the policy does, so GRPO distils the
    teacher's ranking into the generative policy (within what the rule reward keeps as the goal).

    ``credit="topk"`` pays 1 for any item in the teacher's top ``k`` instead: a set to cover, not a top
    item to chase. Per-sample NDCG credit is mode-seeking (the policy collapses onto the teacher's top
    item, and a beam-search top-10 needs ten good items); with set credit a group whose samples all lie
    in the set is flat, so nothing pushes the policy to concentrate inside it.

    ``credit="logprob"`` pays the teacher's log-probability of the item (a softmax over its catalogue
    scores): with ``algorithm.beta`` = 1 and unscaled advantages the KL-regularised optimum is the
    product of the start policy and the teacher (``teacher_rank_credit``).

    ``teacher_path``: a file written by ``rewards.rec.baselines.SASRecBaseline.save`` (the env trains
    and caches one on the training split), or a list of them (their ``ScoreEnsemble``). A completion naming
    no catalogue item gets ``invalid`` (None = excluded, the default). Rows that share a history are scored
    once.
    """

    def __init__(
        self,
        index_path: str | Path | None = None,
        index: SemanticIndex | None = None,
        teacher_path: str | Path | list[str] | None = None,
        teacher: Any = None,
        k: int = 50,
        invalid: float | None = None,
        credit: str = "ndcg",
        name: str = "",
    ):
        super().__init__(index_path, index, name)
        if self.index is None:
            raise ValueError(f"{self.__name__} needs the semantic index; pass index_path=")
        if credit not in TEACHER_CREDITS:
            raise ValueError(
                f"credit={credit!r} is not one of {TEACHER_CREDITS}: ndcg (rank-graded), topk (set) or logprob"
            )
        if k < 1:
            raise ValueError(f"k ({k}) must be >= 1: the depth of the teacher's ranking that earns credit")
        if teacher is None:
            if teacher_path is None:
                raise ValueError(f"{self.__name__} needs the teacher; pass teacher_path= (SASRecBaseline.save)")
            from rewards.rec.baselines import load_teacher

            teacher = load_teacher(teacher_path)
        self.teacher = teacher
        self.column = {item: i for i, item in enumerate(teacher.catalog)}
        self.k, self.invalid, self.credit = k, invalid, credit

    def __call__(self, prompts, completions, completion_ids=None, *, history=None, **_: Any):
        if history is None:
            raise ValueError(f"{self.__name__} needs a 'history' column (the user's item ids, oldest first)")
        idx: SemanticIndex = self.index  # type: ignore[assignment]  # checked in __init__
        items = [idx.item_of_text(message_text(c)) for c in completions]
        ok = [i for i, item in enumerate(items) if item in self.column]
        out: list[float | None] = [self.invalid] * len(completions)
        if not ok:
            return out
        keys = [tuple(history[i]) for i in ok]
        unique = list(dict.fromkeys(keys))
        scores = self.teacher.scores([list(h) for h in unique])  # [U, N]
        row = {h: j for j, h in enumerate(unique)}
        credit = teacher_rank_credit(
            scores[[row[h] for h in keys]], np.array([self.column[items[i]] for i in ok]), self.k, self.credit
        )  # [len(ok)]
        for i, v in zip(ok, credit.tolist(), strict=True):
            out[i] = float(v)
        return out
