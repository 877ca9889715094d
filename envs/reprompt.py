"""RePrompt (arXiv 2505.17540): the policy reasons in <think>, then writes an enhanced T2I prompt in
<answer>; rewards are image-level (rewards.t2i.geneval.geneval_reward) plus format and length.

Pure parts only: chat building, completion parsing, format/length rewards, prompt sources and a
built-in GenEval-style training-prompt generator. The Env class that wires these into the trainer
lives elsewhere.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from rewards.contract import message_text
from rewards.t2i.geneval import Parsed, ideal_rewrite, load_geneval_metadata, parse_completion
from rewards.t2i.shapeworld import CLASS_NAMES, COLORS

__all__ = [
    "SYSTEM_PROMPT",
    "ASSISTANT_PREFILL",
    "Parsed",
    "build_messages",
    "parse_completion",
    "format_reward",
    "length_reward",
    "load_geneval_prompts",
    "load_text_prompts",
    "generate_training_prompts",
    "ideal_rewrite",
    "build_rows",
    "MIN_ANSWER_WORDS",
    "MAX_ANSWER_WORDS",
]

SYSTEM_PROMPT = (
    "You improve prompts for a text-to-image model. Given a short image description, first think "
    "about which objects it needs, how many of each, their colors and where each one should be, "
    "inside <think> </think>. Then write one final, self-contained image prompt inside "
    "<answer> </answer>: concrete and explicit, naming every object with its count and color and "
    "stating where it is in the picture. Write nothing after </answer>."
)
# Generation continues this assistant prefix, so completions start inside <think>.
ASSISTANT_PREFILL = "Let me solve this step by step.\n<think>"

MIN_ANSWER_WORDS = 15  # exclusive bounds: CLIP's 77-token window caps useful prompt length
MAX_ANSWER_WORDS = 77


def build_messages(raw_prompt: str) -> list[dict[str, str]]:
    """System + user chat messages for one raw prompt (the prefill is added by the rollout engine)."""
    if not raw_prompt.strip():
        raise ValueError("build_messages: raw_prompt is empty")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": raw_prompt.strip()}]


def format_reward(prompts: list, completions: list, completion_ids: Any = None, **_: Any) -> list[float | None]:
    """+1 for exactly think-then-answer (see parse_completion), -1 otherwise."""
    return [1.0 if parse_completion(message_text(c)).well_formed else -1.0 for c in completions]


def length_reward(prompts: list, completions: list, completion_ids: Any = None, **_: Any) -> list[float | None]:
    """+1 if the answer has more than 15 and fewer than 77 words, -1 otherwise, 0 without an answer."""
    out: list[float | None] = []
    for c in completions:
        answer = parse_completion(message_text(c)).answer
        if answer is None:
            out.append(0.0)
        else:
            out.append(1.0 if MIN_ANSWER_WORDS < len(answer.split()) < MAX_ANSWER_WORDS else -1.0)
    return out


# ---------------------------------------------------------------- prompt sources


def load_geneval_prompts(path: str | Path) -> list[dict]:
    """GenEval's evaluation_metadata.jsonl -> [{"prompt": str, "metadata": dict}, ...]."""
    return [{"prompt": meta["prompt"], "metadata": meta} for meta in load_geneval_metadata(path)]


def load_text_prompts(path: str | Path) -> list[str]:
    """One prompt per line (T2I-CompBench's files); blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts (every line is blank); expected one prompt per line")
    return prompts


def build_rows(items: list[dict], base_seed: int = 0) -> list[dict]:
    """Dataset rows for the trainer: chat ``prompt``, ``metadata`` as JSON (Arrow-friendly), ``seed``."""
    rows = []
    for k, item in enumerate(items):
        rows.append(
            {
                "prompt": build_messages(item["prompt"]),
                "metadata": json.dumps(item["metadata"]),
                "seed": base_seed + k,
            }
        )
    return rows


# ---------------------------------------------------------------- training-prompt generator
# GenEval's evaluation prompts all start with "a photo of"; these templates never do, so no
# generated prompt can equal an evaluation prompt (tests check it against the real file).

_OPENERS = ("an image of", "a picture of", "a drawing of", "a scene with", "a snapshot of", "an illustration of")
_REL_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
_NUMBERS = {2: "two", 3: "three", 4: "four"}


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _plural(name: str) -> str:
    if name in ("skis", "scissors", "sheep"):
        return name
    return name + "es" if name.endswith(("s", "sh", "ch")) else name + "s"


def _sample(tag: str, rng: random.Random) -> tuple[str, dict]:
    opener = rng.choice(_OPENERS)
    a, b = rng.sample(CLASS_NAMES, 2)
    c1, c2 = rng.sample(COLORS, 2)
    if tag == "single_object":
        return f"{opener} {_a(a)}", {"include": [{"class": a, "count": 1}]}
    if tag == "two_object":
        return f"{opener} {_a(a)} and {_a(b)}", {"include": [{"class": a, "count": 1}, {"class": b, "count": 1}]}
    if tag == "counting":
        n = rng.choice((2, 3, 4))
        return (
            f"{opener} {_NUMBERS[n]} {_plural(a)}",
            {"include": [{"class": a, "count": n}], "exclude": [{"class": a, "count": n + 1}]},
        )
    if tag == "colors":
        return f"{opener} {_a(c1 + ' ' + a)}", {"include": [{"class": a, "count": 1, "color": c1}]}
    if tag == "position":
        rel = rng.choice(tuple(_REL_WORDS))
        return (
            f"{opener} {_a(a)} {_REL_WORDS[rel]} {_a(b)}",
            {"include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}]},
        )
    if tag == "color_attr":
        return (
            f"{opener} {_a(c1 + ' ' + a)} and {_a(c2 + ' ' + b)}",
            {"include": [{"class": a, "count": 1, "color": c1}, {"class": b, "count": 1, "color": c2}]},
        )
    raise ValueError(f"unknown GenEval tag {tag!r}")


def generate_training_prompts(n: int, seed: int = 0) -> list[dict]:
    """``n`` GenEval-style prompts, tags in round-robin, each {"prompt", "metadata"} with metadata in
    GenEval's format (tag, include, exclude, prompt). Deterministic in (n, seed); no duplicates while
    the template space allows."""
    if n < 0:
        raise ValueError(f"generate_training_prompts: n ({n}) must be >= 0")
    from rewards.t2i.geneval import TAGS

    rng = random.Random(seed)
    out, seen = [], set()
    for k in range(n):
        tag = TAGS[k % len(TAGS)]
        for _ in range(50):  # re-draw duplicates; single_object has only 80 x 6 strings
            prompt, meta = _sample(tag, rng)
            if prompt not in seen:
                break
        seen.add(prompt)
        out.append({"prompt": prompt, "metadata": {"tag": tag, **meta, "prompt": prompt}})
    return out
