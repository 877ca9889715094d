"""Negative sampling for ranking rewards: uniform ("random") or popularity-weighted ("popular").

Never returns the positive, an item of the user's history, or a duplicate. Seeded per request:
the random stream is derived from ``(seed, key)`` where ``key`` defaults to the positive and the
history, so the G completions of one GRPO group (same prompt) are ranked against the *same*
negatives and their rewards are comparable; a different seed gives different negatives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np

Strategy = Literal["random", "popular"]


def _rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


class NegativeSampler:
    """``catalog``: item ids; ``popularity``: item -> count (needed for ``"popular"``).

    ``"popular"`` samples without replacement with probability ∝ count**alpha (hard negatives: items
    the user plausibly saw); alpha=0 is uniform.
    """

    def __init__(
        self,
        catalog: Sequence[str],
        strategy: Strategy = "random",
        *,
        popularity: Mapping[str, float] | None = None,
        alpha: float = 1.0,
        seed: int = 0,
    ):
        if strategy not in ("random", "popular"):
            raise ValueError(f"negatives={strategy!r}; use 'random' or 'popular'")
        self.catalog = list(dict.fromkeys(str(i) for i in catalog))  # dedupe, keep order
        self.index = {item: i for i, item in enumerate(self.catalog)}
        self.strategy, self.seed = strategy, seed
        self.weights: np.ndarray | None = None
        if strategy == "popular":
            if popularity is None:
                raise ValueError("negatives='popular' needs popularity counts (e.g. RecData.popularity)")
            w = np.array([float(popularity.get(i, 0.0)) for i in self.catalog]) ** alpha  # [N]
            self.weights = w + 1e-12  # items never seen still have a tiny chance, so n items exist

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
        if self.weights is None:
            picks = rng.choice(allowed, size=n, replace=False)
        else:
            p = self.weights[allowed]
            picks = rng.choice(allowed, size=n, replace=False, p=p / p.sum())
        return [self.catalog[j] for j in picks]
