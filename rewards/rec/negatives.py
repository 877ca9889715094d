"""Negatives for ranking rewards: uniform ("random"), popularity-weighted ("popular") or EASE-hard ("ease").

Never returns the positive, an item of the user's history, or a duplicate. ``random`` and ``popular``
are seeded per request: the random stream is derived from ``(seed, key)`` where ``key`` defaults to the
positive and the history, so the G completions of one GRPO group (same prompt) are ranked against the
*same* negatives and their rewards are comparable; a different seed gives different negatives.
``ease`` is deterministic: the ``n`` items a fitted EASE model (``rewards.rec.ease``) scores highest for
the history, the positive and the history left out (DUET's hard negatives); seed and key play no part.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np

from rewards.rec.ease import Ease, top_k_excluding

Strategy = Literal["random", "popular", "ease"]


def _rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


class NegativeSampler:
    """``catalog``: item ids; ``popularity``: item -> count (needed for ``"popular"``); ``ease``: a fitted
    ``Ease`` model (needed for ``"ease"``; fit it on training interactions only).

    ``"popular"`` samples without replacement with probability ∝ count**alpha (hard negatives: items
    the user plausibly saw); alpha=0 is uniform. ``"ease"`` takes the top-n EASE scores of the history
    among the catalog items (catalog items EASE does not know rank last; ties go to catalog order).
    """

    def __init__(
        self,
        catalog: Sequence[str],
        strategy: Strategy = "random",
        *,
        popularity: Mapping[str, float] | None = None,
        alpha: float = 1.0,
        seed: int = 0,
        ease: Ease | None = None,
    ):
        if strategy not in ("random", "popular", "ease"):
            raise ValueError(f"negatives={strategy!r}; use 'random', 'popular' or 'ease'")
        self.catalog = list(dict.fromkeys(str(i) for i in catalog))  # dedupe, keep order
        self.index = {item: i for i, item in enumerate(self.catalog)}
        self.strategy, self.seed = strategy, seed
        self.weights: np.ndarray | None = None
        if strategy == "popular":
            if popularity is None:
                raise ValueError("negatives='popular' needs popularity counts (e.g. RecData.popularity)")
            w = np.array([float(popularity.get(i, 0.0)) for i in self.catalog]) ** alpha  # [N]
            self.weights = w + 1e-12  # items never seen still have a tiny chance, so n items exist
        self.ease = ease
        self._ease_cols: np.ndarray | None = None  # [N] EASE column of each catalog item, -1 if unknown
        if strategy == "ease":
            if ease is None:
                raise ValueError("negatives='ease' needs a fitted EASE model (rewards.rec.ease.Ease.fit on train data)")
            self._ease_cols = np.array([ease.index.get(i, -1) for i in self.catalog], dtype=np.int64)

    def sample(self, n: int, positive: str, history: Iterable[str] = (), key: str | None = None) -> list[str]:
        """``n`` distinct negatives (fewer only when the catalog minus exclusions is smaller)."""
        history = [str(h) for h in history]
        excluded = {str(positive), *history}
        rng = _rng(self.seed, key if key is not None else f"{positive}|{','.join(history)}")
        mask = np.ones(len(self.catalog), dtype=bool)  # [N]
        for item in excluded:
            j = self.index.get(item)
            if j is not None:
                mask[j] = False
        allowed = np.flatnonzero(mask)  # [M]
        n = min(n, allowed.size)
        if n <= 0:
            return []
        if self._ease_cols is not None:
            s = self.ease.scores(history)  # [I] over the EASE items
            cols = self._ease_cols
            scores = np.where(cols >= 0, s[np.maximum(cols, 0)], -np.inf)  # [N] in catalog order
            return [self.catalog[j] for j in top_k_excluding(scores, n, ~mask)]
        if self.weights is None:
            picks = rng.choice(allowed, size=n, replace=False)
        else:
            p = self.weights[allowed]
            picks = rng.choice(allowed, size=n, replace=False, p=p / p.sum())
        return [self.catalog[j] for j in picks]
