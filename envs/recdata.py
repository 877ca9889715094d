"""DUET's context windows over recommendation data: a user's recent interactions, an item's recent buyers.

The data types, loaders and splits are shared with the rewards and live in ``rewards/rec/data.py``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from rewards.rec.data import Interaction, RecData


def user_window(history: Sequence[Interaction], before: float | None = None, n: int = 10) -> list[Interaction]:
    """The ``n`` most recent interactions strictly before time ``before`` (oldest first).

    ``history`` must be time ordered. ``before=None`` takes the last ``n`` of ``history`` (for an
    ``Example``, whose history already stops before the target).
    """
    if before is not None:
        if any(x.timestamp is None for x in history):
            raise ValueError(
                "user_window(before=...) needs timestamps; pass before=None and a history that ends before t"
            )
        idx = bisect.bisect_left([x.timestamp for x in history], before)  # type: ignore[misc]
        history = history[:idx]
    return list(history[-n:]) if n > 0 else []


def item_window(
    data: RecData, item: str, before: float | None = None, n: int = 10, *, exclude_user: str | None = None
) -> list[Interaction]:
    """The ``n`` most recent interactions with ``item`` strictly before time ``before`` (oldest first).

    DUET's item side: who recently bought/reviewed the item. ``exclude_user`` drops the target user
    (their own event would leak the answer). Without timestamps, "time" is the position inside each
    user's sequence, a proxy: ``before`` then compares against that position.
    """
    events = data.item_events.get(item, [])
    if before is not None:
        idx = bisect.bisect_left(events, (before, -1), key=lambda e: e[0])  # first key >= (before, -1)
        events = events[:idx]
    out = [x for _, x in events if x.user != exclude_user]
    return out[-n:] if n > 0 else []
