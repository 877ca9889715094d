"""The reward contract, shared by every reward function in Relay.

A reward function follows TRL's signature::

    fn(prompts, completions, completion_ids=None, **columns) -> list[float | None]

sync or ``async def``. ``prompts``/``completions`` are strings, or chat messages
(``[{"role": ..., "content": ...}, ...]``) for conversational datasets; ``columns`` are the
dataset's other columns, one value per sample. ``None`` means "no score for this sample": it is
excluded from the loss and counted in metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

RewardOutput = list[float | None]
RewardFunc = Callable[..., RewardOutput | Awaitable[RewardOutput]]

# Keyword arguments TRL adds that only make sense inside the learner process; never shipped to actors.
TRAINER_ONLY_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments")


def message_text(x: Any) -> str:
    """Text of a prompt or completion: a plain string, or the last message's content for chat format."""
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return str(x.get("content", ""))
    if isinstance(x, (list, tuple)):
        if not x:
            return ""
        return message_text(x[-1])
    raise TypeError(f"expected a string or chat messages, got {type(x).__name__}")


def user_text(prompt: Any) -> str:
    """The last user message of a chat prompt (or the prompt itself when it is a string)."""
    if isinstance(prompt, str):
        return prompt
    for message in reversed(list(prompt)):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return message_text(prompt)
