"""GenEval's rules (djghosh13/geneval, evaluation/evaluate_images.py) on shapeworld detections.

``check`` mirrors GenEval's ``evaluate``: include clauses are ANDed, exclude clauses ORed; a class
needs at least ``count`` detections; color and position are judged on the first ``count``
detections only; position is GenEval's ``relative_position`` with POSITION_THRESHOLD = 0.1 (image
coordinates, y down); an exclude clause fails when ``count`` or more of the class are detected.
``score_table`` reports per-tag accuracy and their mean, as GenEval's summary_scores.py does.

``geneval_reward`` is the RePrompt image reward: render the policy's ``<answer>`` with shapeworld,
detect, and judge against the *original* prompt's metadata. No answer -> 0.0 (no image is made;
the format reward carries the penalty); keeping the sample scored keeps the group's advantages
honest instead of dropping exactly the failures.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewards.contract import message_text, user_text
from rewards.t2i.detector import Detection, detect
from rewards.t2i.shapeworld import CLASS_NAMES, COLORS, render

TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
POSITION_THRESHOLD = 0.1  # GenEval's default: offsets shrink by 10% of both objects' sizes


# ---------------------------------------------------------------- completion parsing
# Lives here (not in envs/) because rewards must not import envs; envs/reprompt.py re-exports it.


@dataclass(frozen=True)
class Parsed:
    think: str | None  # reasoning, stripped; None without a closing </think>
    answer: str | None  # final image prompt, stripped; None when missing, unclosed or empty
    well_formed: bool  # exactly: [<think>] reasoning </think> <answer> prompt </answer>, nothing after


_TAG = re.compile(r"</?(?:think|answer)>")
_WELL_FORMED = re.compile(r"\s*(?:<think>)?(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def parse_completion(text: str) -> Parsed:
    """Parse a completion that continues the prefill ``...<think>`` (so it starts inside <think>).

    A leading ``<think>`` is tolerated (templates that drop the prefill). Well-formed means one
    reasoning block then one non-empty answer block, no stray or nested tags, only whitespace after.
    """
    head, sep, _ = text.partition("</think>")
    think = _TAG.sub("", head).strip() if sep else None
    after = text.split("</think>")[-1] if sep else text
    found = _ANSWER.search(after)
    answer = found.group(1).strip() if found else None
    answer = answer or None
    full = _WELL_FORMED.fullmatch(text)
    well_formed = bool(
        full
        and not _TAG.search(full.group("think"))
        and not _TAG.search(full.group("answer"))
        and full.group("answer").strip()
    )
    return Parsed(think=think, answer=answer, well_formed=well_formed)


# ---------------------------------------------------------------- metadata


def _spec_problems(spec: Any, where: str, n_before: int) -> list[str]:
    if not isinstance(spec, dict):
        return [f"{where} must be an object, got {type(spec).__name__}"]
    problems = []
    if spec.get("class") not in CLASS_NAMES:
        problems.append(f"{where}.class ({spec.get('class')!r}) is not one of GenEval's 80 class names")
    count = spec.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        problems.append(f"{where}.count ({count!r}) must be a positive integer")
    if "color" in spec and spec["color"] not in COLORS:
        problems.append(f"{where}.color ({spec['color']!r}) must be one of {', '.join(COLORS)}")
    if "position" in spec:
        pos = spec["position"]
        if (
            not isinstance(pos, (list, tuple))
            or len(pos) != 2
            or pos[0] not in RELATIONS
            or not isinstance(pos[1], int)
            or not 0 <= pos[1] < n_before
        ):
            problems.append(
                f"{where}.position ({pos!r}) must be [relation, index of an earlier include], "
                f"relation one of {', '.join(RELATIONS)}"
            )
    return problems


def validate_metadata(meta: Any, where: str = "metadata") -> list[str]:
    """Every problem with one GenEval metadata record, each naming its field."""
    if not isinstance(meta, dict):
        return [f"{where} must be a JSON object, got {type(meta).__name__}"]
    problems = []
    if meta.get("tag") not in TAGS:
        problems.append(f"{where}.tag ({meta.get('tag')!r}) must be one of {', '.join(TAGS)}")
    for key in ("include", "exclude"):
        specs = meta.get(key, [])
        if not isinstance(specs, list):
            problems.append(f"{where}.{key} must be a list")
            continue
        for k, spec in enumerate(specs):
            problems += _spec_problems(spec, f"{where}.{key}[{k}]", k if key == "include" else 0)
    if not meta.get("include"):
        problems.append(f"{where}.include must list at least one object")
    return problems


def load_geneval_metadata(path: str | Path) -> list[dict]:
    """GenEval's evaluation_metadata.jsonl: one JSON object per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GenEval metadata file not found: {path}")
    records, problems = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            meta = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{where}: not valid JSON ({err.msg} at column {err.colno})")
            continue
        found = validate_metadata(meta, where)
        if isinstance(meta, dict) and not isinstance(meta.get("prompt"), str):
            found.append(f"{where}.prompt must be a string")
        problems += found
        records.append(meta)
    if problems:
        raise ValueError("malformed GenEval metadata:\n  " + "\n  ".join(problems))
    if not records:
        raise ValueError(f"{path} holds no GenEval metadata records")
    return records


def as_metadata(value: Any) -> dict:
    """A metadata column value: a dict, or its JSON string (datasets stores nested lists awkwardly)."""
    meta = json.loads(value) if isinstance(value, str) else value
    problems = validate_metadata(meta)
    if problems:
        raise ValueError("invalid GenEval metadata column: " + "; ".join(problems))
    return meta


# ---------------------------------------------------------------- GenEval rules


def relative_position(box_a: Sequence[float], box_b: Sequence[float]) -> set[str]:
    """Relations of A to B, GenEval's way: centre offset minus 10% of both sizes, then direction."""
    ca = ((box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2)
    cb = ((box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2)
    dims = (abs(box_a[2] - box_a[0]) + abs(box_b[2] - box_b[0]), abs(box_a[3] - box_a[1]) + abs(box_b[3] - box_b[1]))
    offset = (ca[0] - cb[0], ca[1] - cb[1])
    revised = [math.copysign(max(abs(o) - POSITION_THRESHOLD * d, 0.0), o) for o, d in zip(offset, dims, strict=True)]
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = math.hypot(*offset)
    dx, dy = revised[0] / norm, revised[1] / norm
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def clause_results(detections: Iterable[Detection], metadata: dict) -> list[tuple[bool, str]]:
    """(passed, reason) per include clause, then per exclude clause, following GenEval's evaluate()."""
    objects: dict[str, list[Detection]] = {}
    for det in detections:
        objects.setdefault(det.cls, []).append(det)
    results: list[tuple[bool, str]] = []
    matched_groups: list[list[Detection] | None] = []
    for req in metadata.get("include", []):
        name, count = req["class"], req["count"]
        found = objects.get(name, [])[:count]
        ok, reason = True, ""
        if len(found) < count:
            ok, reason = False, f"expected {name}>={count}, found {len(found)}"
        else:
            if "color" in req:
                colors = [d.color for d in found]
                if colors.count(req["color"]) < count:
                    ok = False
                    reason = (
                        f"expected {req['color']} {name}>={count}, found {colors.count(req['color'])} "
                        f"{req['color']}; and " + ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    )
            if "position" in req and ok:
                relation, target = req["position"]
                group = matched_groups[target]
                if group is None:
                    ok, reason = False, f"no target for {name} to be {relation}"
                else:
                    for obj in found:
                        bad = [t for t in group if relation not in relative_position(obj.bbox, t.bbox)]
                        if bad:
                            rels = relative_position(obj.bbox, bad[0].bbox)
                            ok, reason = (
                                False,
                                f"expected {name} {relation} target, found {' and '.join(sorted(rels))} target",
                            )
                            break
        matched_groups.append(found if ok else None)
        results.append((ok, reason))
    for req in metadata.get("exclude", []):
        name, n = req["class"], len(objects.get(req["class"], []))
        results.append((n < req["count"], "" if n < req["count"] else f"expected {name}<{req['count']}, found {n}"))
    return results


def check(detections: Iterable[Detection], metadata: dict) -> tuple[bool, str]:
    """GenEval's verdict for one image: (all clauses hold, newline-joined reasons of failures)."""
    results = clause_results(detections, metadata)
    return all(ok for ok, _ in results), "\n".join(reason for ok, reason in results if not ok)


def score_table(results: Iterable[dict]) -> dict[str, float | None]:
    """Per-tag accuracy over ``{"tag", "correct"}`` records, and ``overall`` = mean over the tags present
    (GenEval's "avg. over tasks"). A tag with no records maps to None and is left out of overall."""
    by_tag: dict[str, list[bool]] = {}
    for r in results:
        by_tag.setdefault(r["tag"], []).append(bool(r["correct"]))
    table: dict[str, float | None] = {t: None for t in TAGS}
    for tag, values in by_tag.items():
        table[tag] = sum(values) / len(values)
    present = [v for v in table.values() if v is not None]
    table["overall"] = sum(present) / len(present) if present else None
    return table


# ---------------------------------------------------------------- shapeworld scoring


def prompt_seed(text: str, base: int = 0) -> int:
    """A stable per-prompt seed (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{base}\x00{text}".encode()).digest()[:4], "big")


def score_prompt(image_prompt: str, metadata: dict, seed: int, size: int = 128) -> tuple[bool, str]:
    """Render ``image_prompt`` with shapeworld and judge it against ``metadata``."""
    return check(detect(render(image_prompt, seed, size)), metadata)


def geneval_reward(
    prompts: list,
    completions: list,
    completion_ids: Any = None,
    *,
    metadata: list,
    seed: list | None = None,
    partial: bool = False,
    **_: Any,
) -> list[float | None]:
    """RePrompt's image reward on shapeworld: 1.0 when GenEval's rules hold, else 0.0.

    ``metadata``: per-sample GenEval record (dict or JSON string) of the ORIGINAL prompt.
    ``seed``: optional per-sample seed column; default = hash of the original prompt, so the G
    completions of one prompt share the renderer's noise and differ only through their text.
    ``partial``: score the fraction of GenEval clauses that hold (denser signal for tiny policies).
    A completion without an answer scores 0.0.
    """
    if len(metadata) != len(completions):
        raise ValueError(f"geneval_reward: metadata has {len(metadata)} values for {len(completions)} completions")
    rewards: list[float | None] = []
    for k, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        answer = parse_completion(message_text(completion)).answer
        if answer is None:
            rewards.append(0.0)
            continue
        meta = as_metadata(metadata[k])
        s = int(seed[k]) if seed is not None else prompt_seed(user_text(prompt))
        results = clause_results(detect(render(answer, s)), meta)
        passed = [ok for ok, _ in results]
        rewards.append(sum(passed) / len(passed) if partial else float(all(passed)))
    return rewards


def geneval_partial_reward(
    prompts: list, completions: list, completion_ids: Any = None, **kw: Any
) -> list[float | None]:
    """``geneval_reward`` with partial credit (fraction of include/exclude clauses satisfied)."""
    return geneval_reward(prompts, completions, completion_ids, partial=True, **kw)


# ---------------------------------------------------------------- ideal rewrites

FRAME_OPEN = "A clear, well-lit picture on a plain light background, showing exactly"
FRAME_CLOSE = "Nothing else is in the scene, and every object is fully visible."
# Where each side of a relation goes: (subject's placement, target's placement).
_PLACEMENTS = {
    "left of": ("on the left side", "on the right side"),
    "right of": ("on the right side", "on the left side"),
    "above": ("in the top half", "in the bottom half"),
    "below": ("in the bottom half", "in the top half"),
}


def _noun(name: str, count: int) -> str:
    if count == 1:
        return name
    return (
        name
        if name in ("skis", "scissors", "sheep")
        else (name + "es" if name.endswith(("s", "sh", "ch")) else name + "s")
    )


def ideal_rewrite(metadata: dict) -> str:
    """A prompt shapeworld renders correctly for ``metadata``: digits for counts, the color right
    before its noun, one clause per object, relations turned into absolute placements, > 15 words."""
    include = metadata["include"]
    places: dict[int, str] = {}
    for k, req in enumerate(include):
        if "position" in req:
            relation, target = req["position"]
            places[target] = _PLACEMENTS[relation][1]
            places[k] = _PLACEMENTS[relation][0]
    parts = []
    for k, req in enumerate(include):
        count = req["count"]
        words = ["one" if count == 1 else str(count)]
        if "color" in req:
            words.append(req["color"])
        words.append(_noun(req["class"], count))
        if k in places:
            words.append(places[k])
        parts.append(" ".join(words))
    return f"{FRAME_OPEN}: {', '.join(parts)}. {FRAME_CLOSE}"
