"""EASE: a closed-form item-item recommender (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data").

With ``X`` [U, I] the binary user x item matrix of *training* interactions (never held-out targets),

    G = XᵀX + λ·I        [I, I]   (item co-occurrence counts, ridge on the diagonal)
    P = G⁻¹              [I, I]
    B = I - P · diag(1 / diag(P)),   i.e.  B_ij = -P_ij / P_jj  (i != j),  B_jj = 0

``diag(B) = 0`` is the paper's constraint: an item may not predict itself. A user's scores are
``s = x_u B`` [I] with ``x_u`` the binary row of the items the user has; the highest-scored items the
user does not have are EASE's recommendations. ``λ`` is the L2 strength; 500 is the paper's typical
order of magnitude (its tuned values range from 200 to 1,000 across its three datasets). A larger
``λ`` shrinks the weights of rare co-occurrences.

Used for DUET's hard negatives (``rewards.rec.negatives``, ``negatives="ease"``): the items a strong
collaborative model would put next to the target. Pure numpy; the one cost is the [I, I] inverse
(4,344 items: a 4,344² float64 matrix, ~150 MB, seconds on one core).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_LAMBDA = 500.0


def gram_matrix(rows: Sequence[np.ndarray], num_items: int) -> np.ndarray:
    """``XᵀX`` [I, I] (float64) for a binary ``X`` given as one array of item indices per user.

    ``rows[u]``: item indices of user u in [0, num_items); repeats within a user count once (X is binary).
    """
    if num_items <= 0:
        raise ValueError(f"num_items={num_items}; EASE needs at least one item")
    flat = []
    for r in rows:
        r = np.unique(np.asarray(r, dtype=np.int64))  # [n_u]
        if r.size and (r[0] < 0 or r[-1] >= num_items):
            raise ValueError(f"item index out of range [0, {num_items}): {r.tolist()}")
        flat.append((r[:, None] * num_items + r[None, :]).ravel())  # [n_u * n_u] flat (i, j) pairs
    counts = np.bincount(np.concatenate(flat) if flat else np.zeros(0, np.int64), minlength=num_items * num_items)
    return counts.reshape(num_items, num_items).astype(np.float64)  # [I, I]


def ease_weights(gram: np.ndarray, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """EASE's item-item weights ``B`` [I, I] from ``gram = XᵀX`` [I, I]; ``diag(B) = 0``."""
    if not lam > 0:
        raise ValueError(f"lam={lam}; EASE needs a positive L2 strength (the paper's typical value is 500)")
    g = np.array(gram, dtype=np.float64)  # [I, I] copy: the caller's matrix stays as it was
    g[np.diag_indices_from(g)] += lam
    del gram
    b = np.linalg.inv(g)  # [I, I] P, turned into B in place (one [I, I] buffer fewer)
    del g
    b /= -np.diag(b).copy()[None, :]  # B_ij = -P_ij / P_jj
    b[np.diag_indices_from(b)] = 0.0
    return b


def top_k_excluding(scores: np.ndarray, k: int, excluded: np.ndarray) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` [I] whose ``excluded`` [I] (bool) is False, best first.

    Ties go to the lower index (stable sort), so the result is deterministic; fewer than ``k`` only
    when fewer items are allowed.
    """
    allowed = np.flatnonzero(~np.asarray(excluded, dtype=bool))  # [M] ascending indices
    order = np.argsort(-np.asarray(scores, dtype=np.float64)[allowed], kind="stable")  # [M] best first
    return allowed[order[: max(k, 0)]]


class Ease:
    """A fitted EASE model over a fixed item list (column j of ``weights`` is ``items[j]``)."""

    def __init__(self, items: Sequence[str], weights: np.ndarray, lam: float):
        self.items = [str(i) for i in items]
        self.index = {item: j for j, item in enumerate(self.items)}
        if weights.shape != (len(self.items), len(self.items)):
            raise ValueError(f"weights {weights.shape} do not match {len(self.items)} items")
        self.weights, self.lam = weights, lam  # [I, I]

    @classmethod
    def fit(cls, histories: Iterable[Iterable[str]], items: Sequence[str], lam: float = DEFAULT_LAMBDA) -> Ease:
        """Fit on ``histories`` (one item list per user: the *training* interactions only) over ``items``.

        Items of a history that are not in ``items`` are refused: the catalog must hold every training item.
        """
        items = list(dict.fromkeys(str(i) for i in items))
        index = {item: j for j, item in enumerate(items)}
        rows = []
        for h in histories:
            h = [str(i) for i in h]
            unknown = [i for i in h if i not in index]
            if unknown:
                raise ValueError(f"Ease.fit: items {unknown[:5]} are not in the catalog of {len(items)} items")
            rows.append(np.array([index[i] for i in h], dtype=np.int64))
        return cls(items, ease_weights(gram_matrix(rows, len(items)), lam), lam)

    def scores(self, history: Iterable[str]) -> np.ndarray:
        """``x_u B`` [I] for the user who has ``history``; items outside the catalog are ignored."""
        cols = sorted({self.index[i] for i in map(str, history) if i in self.index})
        return self.weights[cols].sum(axis=0) if cols else np.zeros(len(self.items))  # [I]

    def top_k(self, history: Iterable[str], k: int, exclude: Iterable[str] = ()) -> list[str]:
        """The ``k`` best-scored items for ``history``, never one of ``history`` nor of ``exclude``."""
        history = [str(i) for i in history]
        excluded = np.zeros(len(self.items), dtype=bool)  # [I]
        for item in (*history, *map(str, exclude)):
            j = self.index.get(item)
            if j is not None:
                excluded[j] = True
        return [self.items[j] for j in top_k_excluding(self.scores(history), k, excluded)]
