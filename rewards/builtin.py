"""Small generic reward functions, registered by name in ``rewards.registry``.

All follow the TRL contract ``fn(prompts, completions, completion_ids=None, **columns)``; columns
they need are named in each docstring, and a missing column fails with a message that says so.
"""

from __future__ import annotations

from typing import Any

from rewards.contract import message_text


def _column(columns: dict[str, Any], name: str, fn: str, n: int) -> list[Any]:
    if name not in columns or columns[name] is None:
        raise KeyError(f"reward {fn!r} needs a dataset column {name!r}; add it to the dataset (one value per sample)")
    values = list(columns[name])
    if len(values) != n:
        raise ValueError(f"reward {fn!r}: column {name!r} has {len(values)} values for {n} completions")
    return values


def letter_fraction(prompts, completions, completion_ids=None, **columns) -> list[float | None]:
    """Fraction of the completion's non-space characters equal to the sample's target ``letter``.

    Column ``letter`` (one character per sample). In [0, 1]; an empty completion scores 0. This is the
    dense reward of the built-in ``letters`` env: a tiny policy can learn it in a few dozen steps.
    """
    letters = _column(columns, "letter", "letter_fraction", len(completions))
    scores: list[float | None] = []
    for completion, letter in zip(completions, letters, strict=True):
        chars = [c for c in message_text(completion) if not c.isspace()]
        if not chars:
            scores.append(0.0)
            continue
        target = str(letter)
        scores.append(sum(c == target for c in chars) / len(chars))
    return scores


def exact_match(
    prompts, completions, completion_ids=None, *, strip: bool = True, case_sensitive: bool = False, **columns
) -> list[float | None]:
    """1.0 when the completion equals the sample's ``answer`` column, else 0.0 (``None`` answers: no score).

    ``strip`` ignores surrounding whitespace; ``case_sensitive=False`` (default) ignores case.
    """
    answers = _column(columns, "answer", "exact_match", len(completions))

    def norm(s: str) -> str:
        s = s.strip() if strip else s
        return s if case_sensitive else s.casefold()

    scores: list[float | None] = []
    for completion, answer in zip(completions, answers, strict=True):
        if answer is None:
            scores.append(None)
        else:
            scores.append(1.0 if norm(message_text(completion)) == norm(str(answer)) else 0.0)
    return scores


def _length(completion: Any, ids: Any, unit: str) -> int:
    if unit == "tokens":
        if ids is None:
            raise ValueError("unit='tokens' needs completion_ids; use unit='chars' or pass completion_ids")
        return len(ids)
    if unit == "chars":
        return len(message_text(completion))
    if unit == "words":
        return len(message_text(completion).split())
    raise ValueError(f"unit {unit!r} is not one of 'chars', 'words', 'tokens'")


def completion_length(
    prompts, completions, completion_ids=None, *, unit: str = "chars", **columns
) -> list[float | None]:
    """The completion's length in ``unit`` ('chars', 'words' or 'tokens'): a metric more than a reward."""
    ids = completion_ids if completion_ids is not None else [None] * len(completions)
    return [float(_length(c, i, unit)) for c, i in zip(completions, ids, strict=True)]


def length_penalty(
    prompts, completions, completion_ids=None, *, max_length: int = 256, unit: str = "chars", **columns
) -> list[float | None]:
    """0 up to ``max_length``, then -(excess / max_length), so overlong completions are pushed back."""
    if max_length <= 0:
        raise ValueError(f"length_penalty: max_length ({max_length}) must be positive")
    ids = completion_ids if completion_ids is not None else [None] * len(completions)
    return [-max(0, _length(c, i, unit) - max_length) / max_length for c, i in zip(completions, ids, strict=True)]
