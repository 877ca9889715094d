"""shapeworld: a deterministic, procedural text-to-image "model" for CPU-only RePrompt runs.

``render(prompt, seed)`` parses object mentions (GenEval's 80 COCO classes), colors, counts and
placements from the prompt and draws each object as a square *glyph*: a tile filled with the
object's color, carrying a 3x3 marker code (centre cell = anchor, 8 ring cells = class index + 1)
that ``rewards.t2i.detector`` decodes from pixels.

It imitates the failure modes of real T2I models that a prompt rewriter can fix (docs/shapeworld.md):

* relations ("a dog left of a cat", "above", "next to") are ignored: objects land at random;
  only absolute placements ("on the left side", "in the top half") are obeyed;
* number *words* ("three cups") are miscounted 60% of the time; digits ("3 cups") and enumerations
  ("one cup, one cup, and one cup") are exact; a bare plural ("cups") gives 2-4 objects;
* several objects in one clause compete: unless an object has its own placement, objects after the
  first in a clause are dropped ("neglect") and their colors bleed into each other ("leakage");
* a color binds only when the color word immediately precedes the noun, and terse prompts
  (< ``MIN_DETAIL_WORDS`` words) keep each color only with probability ``P_COLOR_TERSE``.

Everything random is drawn from one ``random.Random`` seeded by sha256(seed, prompt), in a fixed
order, so (prompt, seed, size) -> image is a pure function.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

# GenEval's object_names.txt (COCO classes), in its order; a class's code is its index + 1.
CLASS_NAMES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "computer mouse",
    "tv remote",
    "computer keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

# GenEval's color vocabulary -> fill RGB. Pixel-exact (no antialiasing), far apart in RGB.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "purple": (130, 50, 180),
    "pink": (245, 140, 190),
    "brown": (120, 75, 35),
    "black": (20, 20, 20),
    "white": (255, 255, 255),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (200, 200, 196)  # light, and not a palette color

# Failure-mode knobs (documented in docs/shapeworld.md; measured numbers depend on them).
P_COUNT_WORD_EXACT = 0.4  # number words 2..10 rendered exactly; otherwise off by one
P_NEGLECT = 0.5  # an ungrounded non-first object in a multi-object clause is dropped
P_LEAK = 0.5  # colors of ungrounded objects in a multi-object clause bleed together
P_COLOR_TERSE = 0.6  # color kept in prompts shorter than MIN_DETAIL_WORDS words
MIN_DETAIL_WORDS = 10
MAX_PER_MENTION = 8  # "100 cups" renders 8
MAX_OBJECTS = 12  # more would not fit without overlap at 128 px
GAP = 3  # background pixels kept between glyphs so connected components stay apart

NUMBER_WORDS: dict[str, int] = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "couple": 2,
    "several": 3,
}
SINGULAR_WORDS = frozenset({"a", "an", "one", "single", "another"})
_IRREGULAR_PLURALS = {"person": ["people"], "knife": ["knives"], "computer mouse": ["computer mice"]}

_CLAUSE_BREAKS = frozenset({",", ".", ";", ":", "!", "?"})
_SIDES = {"left": "h", "right": "h", "top": "v", "upper": "v", "bottom": "v", "lower": "v"}
_SIDE_CANON = {"upper": "top", "lower": "bottom"}
_SIDE_NOUNS = frozenset({"side", "half", "part", "corner", "edge", "area", "region"})


def _surface_forms() -> dict[tuple[str, ...], tuple[str, bool]]:
    """Token tuple -> (class, is_plural). GenEval's own naive plurals ("benchs") are accepted."""
    forms: dict[tuple[str, ...], tuple[str, bool]] = {}
    for name in CLASS_NAMES:
        plurals = [name + "s", name + "es"] + _IRREGULAR_PLURALS.get(name, [])
        for plural in plurals:
            forms[tuple(plural.split())] = (name, True)
        forms[tuple(name.split())] = (name, False)
    forms[("ski",)] = ("skis", False)
    forms[("mice",)] = ("computer mouse", True)
    return forms


_FORMS = _surface_forms()
_MAX_FORM_LEN = max(len(k) for k in _FORMS)


@dataclass(frozen=True)
class Mention:
    """One object phrase in the prompt, as parsed (before any failure mode is applied)."""

    cls: str
    count: int
    count_kind: str  # "one" | "digit" | "word" | "bare_plural"
    color: str | None
    clause: int
    start: int  # token index of the noun
    h: str | None = None  # "left" | "right"
    v: str | None = None  # "top" | "bottom"

    @property
    def placed(self) -> bool:
        return self.h is not None or self.v is not None


@dataclass(frozen=True)
class Placed:
    """One glyph to draw: class, color name, top-left corner and side length in pixels."""

    cls: str
    color: str
    x: int
    y: int
    side: int


def tokenize(prompt: str) -> list[str]:
    """Lower-cased words, digits and clause punctuation."""
    return re.findall(r"[a-z]+|[0-9]+|[,.;:!?]", prompt.lower())


def _clause_ids(tokens: list[str]) -> list[int]:
    ids, clause = [], 0
    for tok in tokens:
        if tok in _CLAUSE_BREAKS:
            clause += 1
        ids.append(clause)
    return ids


def _match_noun(tokens: list[str], i: int) -> tuple[int, str, bool] | None:
    """Longest class surface form starting at token i -> (length, class, plural)."""
    for n in range(_MAX_FORM_LEN, 0, -1):
        key = tuple(tokens[i : i + n])
        if len(key) == n and key in _FORMS:
            cls, plural = _FORMS[key]
            # "orange" followed by a noun is a color ("an orange cup"), not the fruit.
            if key == ("orange",) and _match_noun(tokens, i + 1) is not None:
                return None
            return n, cls, plural
    return None


def _placement_at(tokens: list[str], i: int) -> tuple[int, dict[str, str]] | None:
    """An absolute placement starting at token i: '(on|in|at|to) the [far] left [side|half|...]',
    also 'top left corner'. Returns (length, {'h'|'v': side}); a trailing 'of' makes it a relation."""
    if i + 2 >= len(tokens) or tokens[i] not in ("on", "in", "at", "to") or tokens[i + 1 : i + 2] != ["the"]:
        return None
    j, found = i + 2, {}
    while j < len(tokens) and (tokens[j] in _SIDES or tokens[j] in ("far", "very")):
        if tokens[j] in _SIDES:
            found[_SIDES[tokens[j]]] = _SIDE_CANON.get(tokens[j], tokens[j])
        j += 1
    if not found:
        return None
    while j < len(tokens) and tokens[j] in _SIDE_NOUNS:
        j += 1
    if j < len(tokens) and tokens[j] == "of":  # "to the left of a cat": a relation, not a placement
        return None
    return j - i, found


def _count_before(tokens: list[str], clauses: list[int], lo: int, noun: int) -> tuple[int | None, str]:
    """Last number-ish token between the previous mention (lo) and the noun, same clause."""
    for k in range(noun - 1, lo - 1, -1):
        if clauses[k] != clauses[noun]:
            break
        tok = tokens[k]
        if tok.isdigit():
            return max(1, min(int(tok), MAX_PER_MENTION)), "digit"
        if tok in NUMBER_WORDS:
            return NUMBER_WORDS[tok], "word"
        if tok in SINGULAR_WORDS:
            return 1, "one"
    return None, ""


def parse(prompt: str) -> list[Mention]:
    """Object mentions with their count, adjacent color, clause and absolute placement."""
    tokens = tokenize(prompt)
    clauses = _clause_ids(tokens)
    mentions: list[Mention] = []
    placements: list[tuple[int, dict[str, str]]] = []
    i, prev_end = 0, 0
    while i < len(tokens):
        place = _placement_at(tokens, i)
        if place is not None:
            placements.append((i, place[1]))
            i += place[0]
            continue
        noun = _match_noun(tokens, i)
        if noun is None:
            i += 1
            continue
        length, cls, plural = noun
        count, kind = _count_before(tokens, clauses, prev_end, i)
        if count is None:
            count, kind = (3, "bare_plural") if plural else (1, "one")
        color = tokens[i - 1] if i > 0 and tokens[i - 1] in PALETTE and clauses[i - 1] == clauses[i] else None
        mentions.append(Mention(cls, count, kind, color, clauses[i], i))
        i += length
        prev_end = i
    return _attach_placements(mentions, placements, clauses)


def _attach_placements(
    mentions: list[Mention], placements: list[tuple[int, dict[str, str]]], clauses: list[int]
) -> list[Mention]:
    """A placement belongs to the nearest preceding mention in its clause, else the next mention."""
    out = list(mentions)
    for pos, sides in placements:
        before = [k for k, m in enumerate(out) if m.start < pos and m.clause == clauses[pos]]
        after = [k for k, m in enumerate(out) if m.start > pos]
        target = before[-1] if before else (after[0] if after else None)
        if target is not None:
            out[target] = replace(out[target], **sides)
    return out


def _apply_failures(mentions: list[Mention], n_words: int, rng: random.Random) -> list[Mention]:
    """Count fuzz, neglect, leakage and terse-prompt color drift, in that fixed order."""
    out: list[Mention] = []
    for m in mentions:
        count = m.count
        if m.count_kind == "word" and rng.random() >= P_COUNT_WORD_EXACT:
            count = count + 1 if count <= 1 or rng.random() < 0.5 else count - 1
        elif m.count_kind == "bare_plural":
            count = rng.randint(2, 4)
        out.append(replace(m, count=min(count, MAX_PER_MENTION)))

    by_clause: dict[int, list[int]] = {}
    for k, m in enumerate(out):
        by_clause.setdefault(m.clause, []).append(k)
    dropped: set[int] = set()
    for members in by_clause.values():
        if len(members) < 2:
            continue
        loose = [k for k in members if not out[k].placed]  # placement grounds an object
        for k in loose:
            if k != members[0] and rng.random() < P_NEGLECT:
                dropped.add(k)
        colors = [out[k].color for k in loose if out[k].color]
        if len(colors) >= 2 and rng.random() < P_LEAK:
            bled = rng.choice(colors)
            for k in loose:
                if out[k].color:
                    out[k] = replace(out[k], color=bled)

    final = []
    for k, m in enumerate(out):
        if k in dropped:
            continue
        if m.color and n_words < MIN_DETAIL_WORDS and rng.random() >= P_COLOR_TERSE:
            m = replace(m, color=rng.choice([c for c in COLORS if c != m.color]))
        final.append(m)
    return final


def glyph_cell(size: int, crowded: bool) -> int:
    """Marker cell size in px (even); a glyph's side is 4 cells (3 code cells + 2 half-cell margins)."""
    base = max(4, 2 * round(3 * size / 128))
    return max(4, base - 2) if crowded else base


def _band(side: str | None, extent: int, half: int, axis_constrained: bool) -> tuple[int, int]:
    """Range of glyph centres for one axis: a side third, or the middle band when only the other axis
    is constrained (so 'left'/'right' objects also share a height, as GenEval's relation test needs)."""
    lo, hi = half + 1, extent - half - 1
    if side in ("left", "top"):
        return lo, max(lo, min(hi, int(0.3 * extent)))
    if side in ("right", "bottom"):
        return min(hi, max(lo, int(0.7 * extent))), hi
    if axis_constrained:
        return max(lo, int(0.4 * extent)), min(hi, max(lo, int(0.6 * extent)))
    return lo, hi


def layout(mentions: list[Mention], size: int, rng: random.Random) -> list[Placed]:
    """Non-overlapping glyph positions; placed objects first, unplaceable ones are skipped."""
    instances: list[tuple[Mention, str]] = []
    for m in sorted(mentions, key=lambda m: not m.placed):
        for _ in range(m.count):
            instances.append((m, m.color or rng.choice(COLORS)))
    instances = instances[:MAX_OBJECTS]
    side = 4 * glyph_cell(size, crowded=len(instances) > 6)
    half = side // 2
    boxes: list[Placed] = []
    for m, color in instances:
        full = (half + 1, size - half - 1)
        # Relax step by step before giving up: both bands, then the named side only, then anywhere.
        stages = [
            (_band(m.h, size, half, m.v is not None), _band(m.v, size, half, m.h is not None)),
            (_band(m.h, size, half, False), _band(m.v, size, half, False)),
            (full, full),
        ]
        for attempt in range(600):
            bx, by = stages[attempt // 200]
            if bx[0] > bx[1] or by[0] > by[1]:
                continue
            cx, cy = rng.randint(*bx), rng.randint(*by)
            cand = Placed(m.cls, color, cx - half, cy - half, side)
            if all(_apart(cand, b) for b in boxes):
                boxes.append(cand)
                break
    return boxes


def _apart(a: Placed, b: Placed) -> bool:
    return (
        a.x + a.side + GAP <= b.x or b.x + b.side + GAP <= a.x or a.y + a.side + GAP <= b.y or b.y + b.side + GAP <= a.y
    )


def marker_color(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black markers on light fills, white on dark ones (luma threshold)."""
    luma = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luma > 110 else (255, 255, 255)


# Ring order of the 8 code bits in the 3x3 grid (row, col); (1, 1) is the always-on anchor.
RING: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))


def draw_glyph(draw: ImageDraw.ImageDraw, p: Placed) -> None:
    fill = PALETTE[p.color]
    mark = marker_color(fill)
    draw.rectangle([p.x, p.y, p.x + p.side - 1, p.y + p.side - 1], fill=fill)
    cell = p.side // 4
    margin = cell // 2
    code = CLASS_NAMES.index(p.cls) + 1
    cells = [(1, 1)] + [rc for bit, rc in enumerate(RING) if code >> bit & 1]
    for r, c in cells:
        x0, y0 = p.x + margin + c * cell, p.y + margin + r * cell
        # Markers are inset by one pixel so neighbouring set cells stay readable as separate cells.
        draw.rectangle([x0 + 1, y0 + 1, x0 + cell - 2, y0 + cell - 2], fill=mark)


def scene(prompt: str, seed: int, size: int = 128) -> list[Placed]:
    """The glyphs render() would draw (for debugging and docs; the detector never sees this)."""
    rng = random.Random(hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest())
    n_words = len([t for t in tokenize(prompt) if t not in _CLAUSE_BREAKS])
    return layout(_apply_failures(parse(prompt), n_words, rng), size, rng)


def render(prompt: str, seed: int, size: int = 128) -> Image.Image:
    """Draw ``prompt`` as an RGB ``size``x``size`` image; deterministic in (prompt, seed, size)."""
    if size < 32:
        raise ValueError(f"render: size ({size}) must be >= 32 so glyphs stay decodable")
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for p in scene(prompt, seed, size):
        draw_glyph(draw, p)
    return image
