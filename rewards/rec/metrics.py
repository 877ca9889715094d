"""Rank metrics for one held-out relevant item, and rating errors. Pure numpy.

Ranks are 1-based. Tie rule (``ties=``):
- ``"pessimistic"`` (default): the target ranks below every candidate with an equal score, so
  ``rank = 1 + #(score > s_t) + #(score == s_t, other candidates)``. A scorer that gives every
  candidate the same score (e.g. an empty or degenerate profile) gets the worst rank, not the best,
  so a policy cannot earn reward by making the recommender indifferent.
- ``"mean"``: the expected rank under random tie-breaking, ``1 + #(>) + #(==, others) / 2``
  (can be fractional).
- ``"optimistic"``: ``1 + #(>)``; for comparison with code that uses it (e.g. argsort-based evals).
NaN scores count as -inf; a NaN target score ranks last.

Metrics of a rank r with cutoff k (single relevant item):
``hit@k = [r <= k]``, ``ndcg@k = [r <= k] / log2(r + 1)`` (the ideal DCG is 1),
``mrr = 1 / r`` (``mrr@k``: 0 beyond k), ``recall@k`` = the share of relevant items ranked within k
(= hit@k for one relevant item).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Ties = Literal["pessimistic", "mean", "optimistic"]
MetricName = Literal["hit", "ndcg", "mrr", "recall"]


def _clean(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(scores), -np.inf, scores)


def batch_rank_of_target(
    scores: np.ndarray, target_index: Sequence[int] | np.ndarray, ties: Ties = "pessimistic"
) -> np.ndarray:
    """Ranks of targets: ``scores`` [B, C], ``target_index`` [B] -> ranks [B] (float, 1-based).

    Rows may be padded with ``-inf`` (or NaN) for unequal candidate counts; those never outrank a
    finite target.
    """
    s, idx = _scores_and_targets(scores, target_index)  # [B, C], [B]
    t = s[np.arange(s.shape[0]), idx][:, None]  # [B, 1]
    greater = (s > t).sum(1)  # [B]
    equal = (s == t).sum(1) - 1  # [B] other candidates tied with the target
    if ties == "pessimistic":
        return (1 + greater + equal).astype(np.float64)
    if ties == "mean":
        return 1 + greater + equal / 2.0
    if ties == "optimistic":
        return (1 + greater).astype(np.float64)
    raise ValueError(f"ties={ties!r}; use 'pessimistic', 'mean' or 'optimistic'")


def rank_of_target(scores: Sequence[float] | np.ndarray, target_index: int, ties: Ties = "pessimistic") -> float:
    """1-based rank of ``scores[target_index]`` among ``scores`` [C] under the tie rule above."""
    return float(batch_rank_of_target(np.asarray(scores, dtype=np.float64)[None, :], [target_index], ties)[0])


def hit_at_k(rank: float | np.ndarray, k: int) -> float | np.ndarray:
    r = np.asarray(rank, dtype=np.float64)
    out = (r <= k).astype(np.float64)
    return float(out) if out.ndim == 0 else out


def ndcg_at_k(rank: float | np.ndarray, k: int) -> float | np.ndarray:
    r = np.asarray(rank, dtype=np.float64)
    out = np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)
    return float(out) if out.ndim == 0 else out


def mrr(rank: float | np.ndarray, k: int | None = None) -> float | np.ndarray:
    r = np.asarray(rank, dtype=np.float64)
    out = 1.0 / r if k is None else np.where(r <= k, 1.0 / r, 0.0)
    return float(out) if np.ndim(out) == 0 else out


def recall_at_k(ranks_of_relevant: Sequence[float] | np.ndarray, k: int) -> float:
    """Share of relevant items ranked within ``k``: ``ranks_of_relevant`` [R] (each ranked among the non-relevant)."""
    r = np.asarray(ranks_of_relevant, dtype=np.float64)
    if r.size == 0:
        raise ValueError("recall_at_k needs at least one relevant item")
    return float((r <= k).mean())


def softmax_of_target(scores: np.ndarray, target_index: Sequence[int] | np.ndarray, temperature: float) -> np.ndarray:
    """The target's softmax probability among its candidates: ``scores`` [B, C], ``target_index`` [B] -> [B].

    ``exp(s_t / T) / sum_c exp(s_c / T)``: a smooth stand-in for the rank (InfoNCE's term), so two profiles that
    put the target at the same rank still get different rewards when one scores it further above the rest.
    Padding (``-inf``, NaN) gets probability 0.
    """
    from scipy.special import log_softmax

    s, idx = _checked(scores, target_index, temperature)
    logp = log_softmax(s / temperature, axis=1)  # [B, C]
    return np.exp(logp[np.arange(s.shape[0]), idx])


def approx_ndcg_of_target(
    scores: np.ndarray, target_index: Sequence[int] | np.ndarray, temperature: float
) -> np.ndarray:
    """ApproxNDCG (Qin, Liu & Li 2010) of one relevant item: ``scores`` [B, C], ``target_index`` [B] -> [B].

    The rank made smooth, ``r~ = 1 + sum_{c != t} sigmoid((s_c - s_t) / T)``, then ``1 / log2(1 + r~)``: as
    ``T -> 0`` it is the ndcg of the (mean-tie) rank with no cutoff; at a small ``T`` it keeps ndcg's shape (a
    reward for placing the target high, not for betting on it) while two profiles at the same rank still differ
    by how far the target sits from its neighbours. Padding (``-inf``, NaN) counts as never ahead.
    """
    from scipy.special import expit

    s, idx = _checked(scores, target_index, temperature)
    t = s[np.arange(s.shape[0]), idx][:, None]  # [B, 1]
    with np.errstate(invalid="ignore"):
        ahead = expit((s - t) / temperature)  # [B, C] soft "c is ranked above t"
    ahead = np.where(np.isfinite(s), ahead, 0.0)
    ahead[np.arange(s.shape[0]), idx] = 0.0
    return 1.0 / np.log2(2.0 + ahead.sum(1))


def _checked(scores: np.ndarray, target_index: Sequence[int] | np.ndarray, temperature: float):
    if temperature <= 0:
        raise ValueError(f"temperature={temperature!r}; use a positive number (e.g. 0.05 for cosine scores)")
    return _scores_and_targets(scores, target_index)


def _scores_and_targets(scores: np.ndarray, target_index: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scores`` [B, C] (NaN -> -inf) and ``target_index`` [B] as arrays, or a ValueError naming the mismatch."""
    s = _clean(scores)  # [B, C]
    if s.ndim != 2:
        raise ValueError(f"scores must be [batch, candidates], got shape {s.shape}")
    idx = np.asarray(target_index, dtype=np.int64)  # [B]
    if idx.shape != (s.shape[0],) or (idx < 0).any() or (idx >= s.shape[1]).any():
        raise ValueError(
            f"target_index {idx.tolist()} must be one index in [0, {s.shape[1]}) per row of scores {s.shape}"
        )
    return s, idx


def metric_from_rank(rank: float | np.ndarray, metric: MetricName, k: int) -> float | np.ndarray:
    """Dispatch by name; ``rank`` scalar or [B]. ``mrr`` is truncated at ``k`` (mrr@k)."""
    if metric in ("hit", "recall"):
        return hit_at_k(rank, k)
    if metric == "ndcg":
        return ndcg_at_k(rank, k)
    if metric == "mrr":
        return mrr(rank, k)
    raise ValueError(f"metric={metric!r}; use 'hit', 'ndcg', 'mrr' or 'recall'")


def batch_metrics(
    scores: np.ndarray, target_index: Sequence[int], ks: Sequence[int] = (1, 5, 10), ties: Ties = "pessimistic"
) -> dict[str, float]:
    """Mean hit@k, ndcg@k, mrr over a batch: ``scores`` [B, C] -> ``{"hit@5": ..., "ndcg@5": ..., "mrr": ...}``."""
    ranks = batch_rank_of_target(scores, target_index, ties)  # [B]
    out = {"mrr": float(np.mean(1.0 / ranks))}
    for k in ks:
        out[f"hit@{k}"] = float(np.mean(hit_at_k(ranks, k)))
        out[f"ndcg@{k}"] = float(np.mean(ndcg_at_k(ranks, k)))
    return out


def rank_metrics(ranks: Sequence[float] | np.ndarray, ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """Mean ``hit@k``, ``ndcg@k`` (each k of ``ks``) and ``mrr`` (untruncated) over ``ranks`` [B] (1-based).

    Keys in the order ``hit@k...``, ``ndcg@k...``, ``mrr``. An ``inf`` rank (never ranked) scores 0 everywhere.
    """
    r = np.asarray(ranks, dtype=np.float64)  # [B]
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"rank_metrics needs a non-empty 1-d array of ranks, got shape {r.shape}")
    out = {f"hit@{k}": float(np.mean(hit_at_k(r, k))) for k in ks}
    out.update({f"ndcg@{k}": float(np.mean(ndcg_at_k(r, k))) for k in ks})
    out["mrr"] = float(np.mean(mrr(r)))
    return out


def random_order_metrics(
    num_candidates: Sequence[int] | np.ndarray, ks: Sequence[int] = (1, 3, 5, 10)
) -> dict[str, float]:
    """``rank_metrics`` expected from a scorer that knows nothing of the user: the target's rank uniform on
    ``1..C`` for each example's ``C`` candidates (``num_candidates`` [B]), averaged over the examples.

    Exact, not sampled: ``hit@k = min(k, C) / C``, ``ndcg@k = sum_{r <= min(k, C)} 1 / log2(r + 1) / C``,
    ``mrr = H_C / C`` (H the harmonic number). With 10 candidates: hit@1 0.1, ndcg@10 0.454, mrr 0.293.
    """
    c = np.asarray(num_candidates, dtype=np.int64)  # [B]
    if c.ndim != 1 or c.size == 0 or (c < 1).any():
        raise ValueError(f"random_order_metrics needs a non-empty 1-d array of candidate counts >= 1, got {c}")
    per_size = {int(n): rank_metrics(np.arange(1, n + 1), ks) for n in np.unique(c)}  # every rank equally likely
    keys = list(per_size[int(c[0])])
    return {key: float(np.mean([per_size[int(n)][key] for n in c])) for key in keys}


def mae(pred: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    return float(np.mean(np.abs(p - t)))


def rmse(pred: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired units (e.g. per-user NDCG@10 of two models on the same users) and its
    ``1 - alpha`` percentile-bootstrap interval: ``(mean_diff, lo, hi)``.

    Each resample draws ``len(a)`` unit indices with replacement (seeded ``numpy`` generator) and takes the
    mean difference over them, so the pairing is kept (a user's two values are always drawn together);
    ``lo``/``hi`` are the ``alpha/2`` and ``1 - alpha/2`` quantiles of the ``n_resamples`` means (linear
    interpolation). An interval that excludes 0 says the difference is unlikely to be resampling noise of
    these users; it says nothing about other data, seeds or training runs.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"paired_bootstrap needs two 1-d arrays of equal length, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("paired_bootstrap needs at least one paired unit")
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise ValueError("paired_bootstrap: the per-unit values must be finite (metrics, not ranks)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples}; use at least 1 (1000 is the usual)")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha}; use a level in (0, 1), e.g. 0.05 for a 95% interval")
    d = x - y  # [N]
    rng = np.random.default_rng(seed)
    rows = max(1, 2_000_000 // d.size)  # resamples per draw: bounded memory for large N
    means = np.concatenate(
        [
            d[rng.integers(0, d.size, size=(min(rows, n_resamples - s), d.size))].mean(axis=1)  # [r]
            for s in range(0, n_resamples, rows)
        ]
    )  # [R]
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(d.mean()), float(lo), float(hi)


def paired_rank_difference(
    ranks_a: Sequence[float] | np.ndarray,
    ranks_b: Sequence[float] | np.ndarray,
    metrics: Sequence[str] = ("ndcg@10", "hit@10"),
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Model a minus model b over the same users, from the target's rank under each ([N] each; ``inf`` =
    never ranked): ``{"n": N, metric: mean per-user difference, ..., "ci95": {metric: [lo, hi]}}`` with
    ``paired_bootstrap``'s interval. ``metrics``: ``ndcg@k``, or ``hit@k`` / ``recall@k`` / ``hr@k`` (the
    same indicator for one held-out item)."""
    ra = np.asarray(ranks_a, dtype=np.float64)  # [N]
    rb = np.asarray(ranks_b, dtype=np.float64)  # [N]
    diff: dict = {"n": float(ra.size)}
    ci: dict[str, list[float]] = {}
    for metric in metrics:
        name, k = metric.split("@")
        per_user = ndcg_at_k if name == "ndcg" else hit_at_k
        mean, lo, hi = paired_bootstrap(
            per_user(ra, int(k)), per_user(rb, int(k)), n_resamples=n_resamples, seed=seed, alpha=alpha
        )
        diff[metric], ci[metric] = mean, [lo, hi]
    diff["ci95"] = ci
    return diff
