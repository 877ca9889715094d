"""Recommendation data: one in-memory shape, loaders for the formats Relay reads, splits.

Shared by the envs (DUET/LettinGo profiles, generative recommenders) and the rec rewards and baselines
(semantic IDs, genrec evaluation), so it lives in ``rewards/`` (which ``envs/`` may import, not the
other way round) and nothing here knows about prompts. DUET's context windows are in ``envs/recdata.py``.
Every id is a ``str`` (LC-Rec keys users by string and items by int; mixing the
two would make ``"7" != 7`` bugs). Per-user interactions are kept in time order.

Formats (see docs/rec.md):
- LC-Rec / LETTER: ``X.inter.json`` ``{user: [item, ...]}`` in time order + ``X.item.json``
  ``{item: {title, description, brand, categories}}``.
- P5: ``user_sequence.txt`` lines ``user_id item_id item_id ...`` + an item-text file ``item_id<space>text``.
- A table (JSONL / CSV / Parquet, read with HF ``datasets``) with columns user, item, timestamp and
  optional rating, review.

Malformed input is never dropped silently: every bad line is collected into a ``LoadReport``; with
``on_error="raise"`` (default) a ``RecDataError`` lists them all (file:line: what, fix); with
``on_error="skip"`` the bad lines are skipped and the report is kept on ``RecData.report``.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

OnError = Literal["raise", "skip"]


# ---------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class Interaction:
    """One user-item event. ``timestamp`` is None for formats that only give the order."""

    user: str
    item: str
    timestamp: float | None = None
    rating: float | None = None
    review: str | None = None


@dataclass
class ItemInfo:
    """Item texts. ``categories`` goes from the broadest to the narrowest level."""

    title: str = ""
    description: str = ""
    brand: str = ""
    categories: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BadLine:
    file: str
    line: int | None  # 1-based physical line; None when the format has no lines (a JSON value, Parquet row)
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


@dataclass
class LoadReport:
    """Everything a loader skipped or refused, one entry per bad line."""

    bad: list[BadLine] = field(default_factory=list)

    def add(self, file: str | Path, line: int | None, message: str) -> None:
        self.bad.append(BadLine(str(file), line, message))

    def __bool__(self) -> bool:
        return bool(self.bad)

    def __str__(self) -> str:
        return "\n".join(str(b) for b in self.bad)


class RecDataError(ValueError):
    """Malformed recommendation data; the message lists every bad line with file and line."""

    def __init__(self, report: LoadReport, hint: str = ""):
        self.report = report
        n = len(report.bad)
        head = f"{n} malformed line{'s' if n != 1 else ''}"
        shown = "\n  ".join(str(b) for b in report.bad[:50])
        more = f"\n  ... and {n - 50} more" if n > 50 else ""
        tail = (
            f"\n{hint}"
            if hint
            else "\nFix the lines, or pass on_error='skip' to skip them (they are listed on RecData.report)."
        )
        super().__init__(f"{head}:\n  {shown}{more}{tail}")


@dataclass
class RecData:
    """Users' time-ordered interactions plus item texts.

    ``interactions[user]`` is sorted by time (stable for equal/absent timestamps).
    ``items`` may hold items nobody interacted with, and may lack texts for some interacted items
    (``item_text`` then renders the id).
    """

    interactions: dict[str, list[Interaction]]
    items: dict[str, ItemInfo] = field(default_factory=dict)
    name: str = ""
    report: LoadReport = field(default_factory=LoadReport)

    @property
    def users(self) -> list[str]:
        return list(self.interactions)

    @cached_property
    def item_ids(self) -> list[str]:
        """Items that occur in interactions, in order of first appearance (catalog for negatives)."""
        seen: dict[str, None] = {}
        for seq in self.interactions.values():
            for x in seq:
                seen.setdefault(x.item, None)
        return list(seen)

    @property
    def num_users(self) -> int:
        return len(self.interactions)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.interactions.values())

    @property
    def has_timestamps(self) -> bool:
        return all(x.timestamp is not None for s in self.interactions.values() for x in s)

    @cached_property
    def popularity(self) -> Counter[str]:
        """Interaction count per item (for popularity negatives)."""
        return Counter(x.item for s in self.interactions.values() for x in s)

    @cached_property
    def item_events(self) -> dict[str, list[tuple[tuple[float, int], Interaction]]]:
        """item -> [(sort key, interaction)] sorted by time; the key is (timestamp, global load order),
        or (position in the user's sequence, load order) when there are no timestamps."""
        events: dict[str, list[tuple[tuple[float, int], Interaction]]] = defaultdict(list)
        order = 0
        ts = self.has_timestamps
        for seq in self.interactions.values():
            for pos, x in enumerate(seq):
                events[x.item].append((((x.timestamp if ts else pos), order), x))  # type: ignore[arg-type]
                order += 1
        for ev in events.values():
            ev.sort(key=lambda e: e[0])
        return dict(events)

    def item_text(self, item: str, **kwargs: Any) -> str:
        info = self.items.get(item)
        return item_text(info, **kwargs) if info is not None else f"item {item}"


# --------------------------------------------------------------------------------------- item text


def item_text(
    item: ItemInfo,
    fields: Sequence[str] = ("title", "brand", "categories", "description"),
    max_description_chars: int = 300,
) -> str:
    """One line describing an item, e.g. ``Title: X; Brand: Y; Categories: A > B; Description: ...``.

    Empty fields are left out; the description is cut at a word boundary (it is often a page long and
    would crowd out the history in a prompt).
    """
    parts = []
    for f in fields:
        if f == "title" and item.title:
            parts.append(f"Title: {item.title.strip()}")
        elif f == "brand" and item.brand:
            parts.append(f"Brand: {item.brand.strip()}")
        elif f == "categories" and item.categories:
            parts.append("Categories: " + " > ".join(c.strip() for c in item.categories if c.strip()))
        elif f == "description" and item.description:
            d = " ".join(item.description.split())
            if len(d) > max_description_chars:
                d = d[:max_description_chars].rsplit(" ", 1)[0] + " ..."
            parts.append(f"Description: {d}")
        elif f not in ("title", "brand", "categories", "description"):
            raise ValueError(f"item_text: unknown field {f!r}; use title, brand, categories, description")
    return "; ".join(parts)


def _categories(value: Any) -> list[str]:
    # LC-Rec stores "A,B,C"; other dumps store a list (or a list of lists, Amazon's raw metadata).
    if value is None:
        return []
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for v in value:
            out.extend(_categories(v) if isinstance(v, (list, tuple)) else [str(v).strip()])
        return [c for c in out if c]
    return [str(value)]


def item_info(d: Mapping[str, Any]) -> ItemInfo:
    """An LC-Rec item record (title, description, brand, categories) as an ItemInfo."""
    return ItemInfo(
        title=str(d.get("title") or ""),
        description=" ".join(d["description"])
        if isinstance(d.get("description"), list)
        else str(d.get("description") or ""),
        brand=str(d.get("brand") or ""),
        categories=_categories(d.get("categories")),
    )


def _finish(report: LoadReport, on_error: OnError) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}; use 'raise' or 'skip'")
    if report and on_error == "raise":
        raise RecDataError(report)


def _json_file(path: Path, report: LoadReport) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        report.add(path, e.lineno, f"invalid JSON ({e.msg}, column {e.colno})")
        raise RecDataError(report, hint="The whole file is unreadable; fix the JSON syntax.") from e


# ------------------------------------------------------------------------------------------ loaders


def lcrec_item_path(inter_path: str | Path) -> Path | None:
    """The ``X.item.json`` next to an ``X.inter.json``, if it exists (LC-Rec's layout)."""
    inter_path = Path(inter_path)
    if not inter_path.name.endswith(".inter.json"):
        return None
    guess = inter_path.with_name(inter_path.name[: -len(".inter.json")] + ".item.json")
    return guess if guess.exists() else None


def load_lcrec(
    inter_path: str | Path,
    item_path: str | Path | None = None,
    *,
    on_error: OnError = "raise",
    name: str = "",
) -> RecData:
    """Load LC-Rec / LETTER JSON: ``{user: [item, ...]}`` (time order) and ``{item: {title, ...}}``.

    ``item_path`` defaults to the ``X.item.json`` next to ``X.inter.json`` when it exists.
    """
    inter_path = Path(inter_path)
    if item_path is None:
        item_path = lcrec_item_path(inter_path)
    report = LoadReport()
    raw = _json_file(inter_path, report)
    if not isinstance(raw, dict):
        report.add(inter_path, 1, f"top level is {type(raw).__name__}; expected an object {{user: [item, ...]}}")
        raise RecDataError(report, hint="")
    interactions: dict[str, list[Interaction]] = {}
    for user, seq in raw.items():
        if not isinstance(seq, list) or not all(isinstance(i, (int, str)) and not isinstance(i, bool) for i in seq):
            report.add(inter_path, None, f"user {user!r}: expected a list of item ids, got {str(seq)[:60]}")
            continue
        if seq:
            interactions[str(user)] = [Interaction(str(user), str(i)) for i in seq]
    items: dict[str, ItemInfo] = {}
    if item_path is not None:
        item_path = Path(item_path)
        raw_items = _json_file(item_path, report)
        if not isinstance(raw_items, dict):
            report.add(item_path, 1, f"top level is {type(raw_items).__name__}; expected {{item: {{title, ...}}}}")
        else:
            for item, d in raw_items.items():
                if not isinstance(d, dict):
                    report.add(
                        item_path, None, f"item {item!r}: expected an object with title/description/brand/categories"
                    )
                    continue
                items[str(item)] = item_info(d)
    _finish(report, on_error)
    return RecData(interactions, items, name=name or inter_path.name.split(".")[0], report=report)


def load_item_texts(
    path: str | Path, *, on_error: OnError = "raise", report: LoadReport | None = None
) -> dict[str, ItemInfo]:
    """Read a P5-style item-text file: one ``item_id<space>text`` per line (text becomes the title)."""
    path = Path(path)
    own = report is None
    report = report if report is not None else LoadReport()
    items: dict[str, ItemInfo] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            item, _, text = line.strip().partition(" ")
            if not text.strip():
                report.add(path, lineno, f"item {item!r} has no text; expected 'item_id<space>text'")
                continue
            if item in items:
                report.add(path, lineno, f"item {item!r} appears twice; keep one line per item")
                continue
            items[item] = ItemInfo(title=text.strip())
    if own:
        _finish(report, on_error)
    return items


def load_p5(
    sequence_path: str | Path,
    item_text_path: str | Path | None = None,
    *,
    on_error: OnError = "raise",
    name: str = "",
) -> RecData:
    """Load P5 ``user_sequence.txt`` (``user_id item_id item_id ...`` per line, time order)."""
    sequence_path = Path(sequence_path)
    report = LoadReport()
    interactions: dict[str, list[Interaction]] = {}
    with open(sequence_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            user, seq = tokens[0], tokens[1:]
            if not seq:
                report.add(sequence_path, lineno, f"user {user!r} has no items; expected 'user_id item_id item_id ...'")
                continue
            if user in interactions:
                report.add(sequence_path, lineno, f"user {user!r} appears on an earlier line too; merge into one line")
                continue
            interactions[user] = [Interaction(user, i) for i in seq]
    items = load_item_texts(item_text_path, report=report) if item_text_path is not None else {}
    _finish(report, on_error)
    return RecData(interactions, items, name=name or sequence_path.stem, report=report)


_TABLE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def _scan_text_table(path: Path, builder: str, report: LoadReport) -> list[dict[str, Any]]:
    # datasets stops at the first unparsable line without naming it reliably; re-read with the
    # standard library to list every bad line, and keep the good rows for on_error="skip".
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", newline="") as f:
        if builder == "json":
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    report.add(path, lineno, f"invalid JSON ({e.msg}); one JSON object per line")
                    continue
                if not isinstance(row, dict):
                    report.add(path, lineno, f"expected a JSON object, got {type(row).__name__}")
                    continue
                rows.append({**row, "__line__": lineno})
        else:
            reader = csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            header = next(reader, None) or []
            for row_values in reader:
                lineno = reader.line_num
                if not any(v.strip() for v in row_values):
                    continue
                if len(row_values) != len(header):
                    report.add(
                        path, lineno, f"{len(row_values)} fields, header has {len(header)} ({', '.join(header)})"
                    )
                    continue
                rows.append({**dict(zip(header, row_values, strict=True)), "__line__": lineno})
    return rows


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == ""


def _float_or_none(v: Any) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        raise ValueError(v)
    x = float(v)
    if math.isnan(x):
        return None
    return x


def load_table(
    path: str | Path,
    *,
    item_text_path: str | Path | None = None,
    user_col: str = "user",
    item_col: str = "item",
    timestamp_col: str | None = "timestamp",
    rating_col: str | None = "rating",
    review_col: str | None = "review",
    on_error: OnError = "raise",
    name: str = "",
) -> RecData:
    """Load an interactions table (JSONL / CSV / TSV / Parquet) through HF ``datasets``.

    Columns are named by the ``*_col`` arguments; ``timestamp``/``rating``/``review`` may be absent
    from the file (then None). Rows are sorted per user by timestamp (stable). ``item_text_path``: a
    LC-Rec ``item.json`` or a P5 ``item_id<space>text`` file.
    """
    import datasets

    path = Path(path)
    builder = _TABLE_FORMATS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"{path}: unknown table format {path.suffix!r}; use one of {sorted(_TABLE_FORMATS)}")
    report = LoadReport()
    rows: Iterable[dict[str, Any]]
    datasets.disable_progress_bars()
    try:
        kwargs: dict[str, Any] = {}
        if builder == "csv":
            # ids stay text: pandas would turn an int column with a gap into floats ("7" -> "7.0")
            kwargs["converters"] = {user_col: str, item_col: str}
            if path.suffix == ".tsv":
                kwargs["delimiter"] = "\t"
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        if builder == "csv":
            line_of = lambda i: i + 2  # noqa: E731  header is line 1 (no quoted multi-line fields assumed)
        elif builder == "json":
            nonblank = [n for n, line in enumerate(open(path, encoding="utf-8"), 1) if line.strip()]
            line_of = lambda i: nonblank[i] if i < len(nonblank) else None  # noqa: E731
        else:
            line_of = lambda i: None  # noqa: E731  parquet has rows, not lines: reported as "row i"
        rows = ({**r, "__line__": line_of(i), "__row__": i} for i, r in enumerate(ds))
    except Exception:  # datasets/pyarrow/pandas raise many types for a bad line, none naming it
        if builder == "parquet":
            raise
        rows = _scan_text_table(path, builder, report)
        if not report:  # the scan found nothing wrong: the failure was something else
            raise
    interactions: dict[str, list[Interaction]] = defaultdict(list)
    for r in rows:
        line = r.get("__line__")
        where = "" if line is not None or "__row__" not in r else f"row {r['__row__']}: "
        user, item = r.get(user_col), r.get(item_col)
        missing = [c for c, v in ((user_col, user), (item_col, item)) if _blank(v)]
        if missing:
            report.add(path, line, f"{where}missing {', '.join(missing)}; every row needs {user_col} and {item_col}")
            continue
        values: dict[str, Any] = {}
        bad = False
        for key, col in (("timestamp", timestamp_col), ("rating", rating_col)):
            try:
                values[key] = _float_or_none(r.get(col)) if col else None
            except (TypeError, ValueError):
                report.add(path, line, f"{where}{col}={r.get(col)!r} is not a number")
                bad = True
        if bad:
            continue
        review = r.get(review_col) if review_col else None
        interactions[str(user)].append(
            Interaction(
                str(user), str(item), values["timestamp"], values["rating"], None if review is None else str(review)
            )
        )
    items: dict[str, ItemInfo] = {}
    if item_text_path is not None:
        item_text_path = Path(item_text_path)
        if item_text_path.suffix == ".json":
            raw = _json_file(item_text_path, report)
            items = {str(k): item_info(v) for k, v in raw.items() if isinstance(v, dict)}
        else:
            items = load_item_texts(item_text_path, report=report)
    _finish(report, on_error)
    out = {
        u: sorted(seq, key=lambda x: -math.inf if x.timestamp is None else x.timestamp)
        for u, seq in interactions.items()
    }
    return RecData(out, items, name=name or path.stem, report=report)


# ------------------------------------------------------------------------------- filtering & splits


def k_core(data: RecData, k: int = 5, *, user_k: int | None = None, item_k: int | None = None) -> RecData:
    """Iteratively drop users with < user_k and items with < item_k interactions until both hold."""
    uk, ik = user_k or k, item_k or k
    inter = {u: list(s) for u, s in data.interactions.items()}
    while True:
        pop = Counter(x.item for s in inter.values() for x in s)
        changed = False
        new: dict[str, list[Interaction]] = {}
        for u, s in inter.items():
            kept = [x for x in s if pop[x.item] >= ik]
            changed |= len(kept) != len(s)
            if len(kept) >= uk:
                new[u] = kept
            else:
                changed = True
        inter = new
        if not changed:
            break
    return replace(data, interactions=inter, report=data.report)


@dataclass(frozen=True)
class Example:
    """Predict ``target`` for ``target.user`` from ``history`` (the user's earlier interactions, oldest first)."""

    history: tuple[Interaction, ...]
    target: Interaction

    @property
    def user(self) -> str:
        return self.target.user


@dataclass
class Split:
    """``train``: interactions the model may learn from; ``valid``/``test``: one example per held-out event."""

    train: dict[str, list[Interaction]]
    valid: list[Example]
    test: list[Example]


def leave_one_out(data: RecData) -> Split:
    """Last interaction of each user = test, second-to-last = validation, the rest = train.

    A test example's history is everything before its target (the validation item included); a
    validation example's history is the train part. Users with 2 interactions get a test example and
    no validation one; users with 1 only train.
    """
    train: dict[str, list[Interaction]] = {}
    valid: list[Example] = []
    test: list[Example] = []
    for u, s in data.interactions.items():
        n = len(s)
        if n >= 3:
            train[u] = s[:-2]
            valid.append(Example(tuple(s[:-2]), s[-2]))
            test.append(Example(tuple(s[:-1]), s[-1]))
        elif n == 2:
            train[u] = s[:1]
            test.append(Example(tuple(s[:1]), s[1]))
        elif n == 1:
            train[u] = s[:]
    return Split(train, valid, test)


def timestamp_split(
    data: RecData,
    *,
    valid_quantile: float = 0.8,
    test_quantile: float = 0.9,
    valid_start: float | None = None,
    test_start: float | None = None,
) -> Split:
    """Global time split: events before ``valid_start`` train, [valid_start, test_start) validate, the rest test.

    Cut-offs default to quantiles of all timestamps. Each held-out event becomes an example whose
    history is all of the user's earlier events (earlier held-out ones included: they happened before).
    Users whose first event is held out get an empty history.
    """
    if not data.has_timestamps:
        raise ValueError(
            f"timestamp_split needs a timestamp on every interaction ({data.name}); use leave_one_out instead"
        )
    import numpy as np

    ts = np.array([x.timestamp for s in data.interactions.values() for x in s], dtype=float)
    if not 0.0 <= valid_quantile <= test_quantile <= 1.0:
        raise ValueError(f"need 0 <= valid_quantile ({valid_quantile}) <= test_quantile ({test_quantile}) <= 1")
    v = float(np.quantile(ts, valid_quantile)) if valid_start is None else valid_start
    t = float(np.quantile(ts, test_quantile)) if test_start is None else test_start
    if v > t:
        raise ValueError(f"valid_start ({v}) must not be after test_start ({t})")
    train: dict[str, list[Interaction]] = {}
    valid: list[Example] = []
    test: list[Example] = []
    for u, s in data.interactions.items():
        tr = [x for x in s if x.timestamp < v]  # type: ignore[operator]
        if tr:
            train[u] = tr
        for i, x in enumerate(s):
            if x.timestamp >= t:  # type: ignore[operator]
                test.append(Example(tuple(s[:i]), x))
            elif x.timestamp >= v:  # type: ignore[operator]
                valid.append(Example(tuple(s[:i]), x))
    return Split(train, valid, test)


def chronological_split(data: RecData, train: float = 0.8, valid: float = 0.1) -> Split:
    """Global chronological split by interaction count (MiniOneRec's 8:1:1 with the defaults).

    All interactions are sorted by time, by (timestamp, user load order, position) when every
    interaction has one, else by (position in the user's sequence, user load order): with no timestamps
    the n-th interaction of every user is taken to happen at the same time. The first
    ``floor(train * N)`` interactions train, the next ``floor((train + valid) * N) - floor(train * N)``
    validate, the rest test. Because the order respects each user's sequence, a user's train items
    precede their validation items, which precede their test items. Each held-out interaction becomes an
    example whose history is everything the user did before it (earlier held-out ones included);
    held-out interactions with no earlier interaction (a user's first event) give no example: there is
    nothing to predict from. ``split_order(data)`` names the ordering used.
    """
    if not (0.0 < train and 0.0 <= valid and train + valid <= 1.0):
        raise ValueError(f"need 0 < train ({train}) and 0 <= valid ({valid}) with train + valid <= 1")
    ts = data.has_timestamps
    keys: list[tuple[tuple[float, int, int], str, int]] = []
    for order, (u, s) in enumerate(data.interactions.items()):
        for pos, x in enumerate(s):
            keys.append((((x.timestamp, order, pos) if ts else (pos, order, 0)), u, pos))  # type: ignore[arg-type]
    keys.sort(key=lambda k: k[0])
    n = len(keys)
    a, b = math.floor(train * n), math.floor((train + valid) * n)
    part: dict[tuple[str, int], int] = {}
    for rank, (_, u, pos) in enumerate(keys):
        part[(u, pos)] = 0 if rank < a else (1 if rank < b else 2)
    train_part: dict[str, list[Interaction]] = {}
    valid_ex: list[Example] = []
    test_ex: list[Example] = []
    for u, s in data.interactions.items():
        tr = [x for pos, x in enumerate(s) if part[(u, pos)] == 0]
        if tr:
            train_part[u] = tr
        for pos, x in enumerate(s):
            if pos == 0 or part[(u, pos)] == 0:
                continue
            (valid_ex if part[(u, pos)] == 1 else test_ex).append(Example(tuple(s[:pos]), x))
    return Split(train_part, valid_ex, test_ex)


def split_order(data: RecData) -> str:
    """How ``chronological_split`` orders ``data``: by timestamp, or by per-user order index."""
    return "by timestamp" if data.has_timestamps else "by per-user order index (no timestamps)"
