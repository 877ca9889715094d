from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.rec.ease import Ease
from rewards.rec.negatives import NegativeSampler

CATALOG = [f"i{j}" for j in range(30)]
# EASE over the first 25 items (the last 5 are unknown to it: they rank last but may still be drawn)
EASE = Ease.fit([[f"i{(u * 7 + j * 3) % 25}" for j in range(u % 6 + 1)] for u in range(40)], CATALOG[:25], lam=5.0)


@settings(max_examples=60, deadline=None)
@given(
    strategy=st.sampled_from(["random", "popular", "ease"]),
    positive=st.sampled_from(CATALOG),
    history=st.lists(st.sampled_from(CATALOG), max_size=25),
    n=st.integers(0, 40),
    seed=st.integers(0, 5),
)
def test_never_positive_nor_history(strategy, positive, history, n, seed):
    pop = {c: j % 7 for j, c in enumerate(CATALOG)}  # some zero counts too
    s = NegativeSampler(CATALOG, strategy, popularity=pop, seed=seed, ease=EASE)
    neg = s.sample(n, positive, history)
    excluded = {positive, *history}
    assert not excluded & set(neg)
    assert len(neg) == len(set(neg)) == min(n, len(set(CATALOG) - excluded))
    assert neg == s.sample(n, positive, history)  # same request, same negatives (GRPO group)


def test_seed_and_popularity_bias():
    a = NegativeSampler(CATALOG, seed=0).sample(5, "i0", ["i1"])
    b = NegativeSampler(CATALOG, seed=1).sample(5, "i0", ["i1"])
    assert a != b
    pop = {c: (1000 if c in ("i2", "i3") else 1) for c in CATALOG}
    s = NegativeSampler(CATALOG, "popular", popularity=pop)
    counts = Counter(x for k in range(200) for x in s.sample(2, "i0", key=str(k)))
    assert counts["i2"] > 150 and counts["i3"] > 150
    with pytest.raises(ValueError, match="popularity"):
        NegativeSampler(CATALOG, "popular")
