"""DUET / LettinGo: profile format, parser, prompt builder and SFT warm-start completions (pure parts).

The policy writes, in one completion, for the user and (joint mode) for the item::

    <user_profile><cue>..</cue><constructed_prompt>..</constructed_prompt><profile>..</profile></user_profile>
    <item_profile><cue>..</cue><constructed_prompt>..</constructed_prompt><profile>..</profile></item_profile>

``cue``: keywords; ``constructed_prompt``: the self-prompt the policy writes for itself; ``profile``:
the text the frozen recommender reads. Modes: ``"joint"`` (DUET: both blocks) and ``"user_only"``
(LettinGo: only ``<user_profile>``).

Parsing rules (strict, because every ambiguity is a way to hedge for reward):
- each required block appears exactly once; in ``user_only`` an ``<item_profile>`` block is a failure;
- inside a block each of the three fields appears exactly once, with non-blank content;
- fields are scoped: a ``<cue>`` belongs to the block it is in; a field outside any block, a block
  inside a block, a tag inside a field, an unclosed or unmatched tag: failure;
- repeated blocks or fields: failure (not "take the first": two profiles would let the policy hedge);
- text outside the blocks (e.g. reasoning before them) and between fields is ignored;
- tags are exact and case-sensitive (``<cue>``, no attributes or spaces).
Any failure -> ``parse_profiles`` returns None (the reward is DUET's format-failure value, -1);
``check_profiles`` also says why.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rewards.rec.data import ItemInfo, RecData
from rewards.spec import RewardSpec
from rl.config import DataError
from rl.env_api import Env, EnvArgs

if TYPE_CHECKING:
    from rewards.rec.ease import Ease

logger = logging.getLogger("relay")

Mode = Literal["joint", "user_only"]
BLOCKS = ("user_profile", "item_profile")
FIELDS = ("cue", "constructed_prompt", "profile")
_TAG = re.compile(r"<(/?)(user_profile|item_profile|cue|constructed_prompt|profile)>")
EVAL_KS = (1, 3, 5, 10)  # every eval row: hit@k and ndcg@k at these cut-offs, and mrr
# Paired rows (trained-start, trained-raw_history): mean per-user difference with a percentile-bootstrap CI.
BOOTSTRAP_RESAMPLES, BOOTSTRAP_ALPHA = 1000, 0.05


def paired_metrics(num_candidates: int) -> tuple[str, ...]:
    """The paired rows' metrics: ndcg@10 and hit@k at the largest eval cut-off below the candidate count
    (hit@10 among 1 + 19; hit@5 among DUET's 1 + 9, where hit@10 is 1 for every user and every policy)."""
    k = max((k for k in EVAL_KS if k < num_candidates), default=EVAL_KS[0])
    return ("ndcg@10", f"hit@{k}")


@dataclass(frozen=True)
class Profile:
    cue: str
    constructed_prompt: str
    profile: str


@dataclass(frozen=True)
class ParsedProfiles:
    user: Profile
    item: Profile | None  # None in user_only mode


def _check_mode(mode: str) -> None:
    if mode not in ("joint", "user_only"):
        raise ValueError(f"mode={mode!r}; use 'joint' (DUET) or 'user_only' (LettinGo)")


def check_profiles(text: str, mode: Mode = "joint") -> tuple[ParsedProfiles | None, str | None]:
    """Parse ``text``; returns ``(profiles, None)`` or ``(None, reason)``."""
    _check_mode(mode)
    blocks: dict[str, dict[str, str]] = {}
    block: str | None = None  # the open block
    fields: dict[str, str] = {}
    field_name: str | None = None  # the open field
    field_start = 0
    for m in _TAG.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if not closing:
            if name in BLOCKS:
                if block is not None:
                    return None, f"<{name}> opened inside <{block}>"
                if name in blocks:
                    return None, f"<{name}> appears more than once"
                block, fields = name, {}
            else:
                if block is None:
                    return None, f"<{name}> outside any profile block"
                if field_name is not None:
                    return None, f"<{name}> opened inside <{field_name}>"
                if name in fields:
                    return None, f"<{name}> appears more than once in <{block}>"
                field_name, field_start = name, m.end()
        else:
            if field_name is not None:
                if name != field_name:
                    return None, f"</{name}> closes <{field_name}>"
                content = text[field_start : m.start()].strip()
                if not content:
                    return None, f"<{field_name}> in <{block}> is empty"
                fields[field_name], field_name = content, None
            elif block is not None:
                if name != block:
                    return None, f"</{name}> without a matching open tag inside <{block}>"
                missing = [f for f in FIELDS if f not in fields]
                if missing:
                    return None, f"<{block}> lacks " + ", ".join(f"<{f}>" for f in missing)
                blocks[block], block = fields, None
            else:
                return None, f"</{name}> without a matching open tag"
    if field_name is not None or block is not None:
        return None, f"<{field_name or block}> is not closed"
    if "user_profile" not in blocks:
        return None, "no <user_profile> block"
    if mode == "joint" and "item_profile" not in blocks:
        return None, "no <item_profile> block (mode joint needs both)"
    if mode == "user_only" and "item_profile" in blocks:
        return None, "<item_profile> present in user_only mode"
    user = Profile(**blocks["user_profile"])
    item = Profile(**blocks["item_profile"]) if mode == "joint" else None
    return ParsedProfiles(user, item), None


def parse_profiles(text: str, mode: Mode = "joint") -> ParsedProfiles | None:
    """The profiles in a completion, or None on any format failure (rules in the module docstring)."""
    return check_profiles(text, mode)[0]


# ---------------------------------------------------------------------------------------- prompts

_FIELD_HELP = (
    "  <cue>a few keywords that capture the essentials</cue>\n"
    "  <constructed_prompt>an instruction you write for yourself: what the profile should cover</constructed_prompt>\n"
    "  <profile>the profile itself, following your constructed prompt</profile>\n"
)


def system_prompt(mode: Mode = "joint") -> str:
    _check_mode(mode)
    if mode == "user_only":
        return (
            "You write a user profile for a recommender system. Read the user's purchase history and answer "
            "with exactly one block, three tags inside it, each exactly once and nothing nested:\n"
            f"<user_profile>\n{_FIELD_HELP}</user_profile>\n"
            "A separate model will rank candidate items using only your <profile> text, so describe the "
            "user's tastes concretely (product types, brands, uses)."
        )
    return (
        "You write profiles for a recommender system: one of the user and one of the item. Answer with "
        "exactly two blocks, each holding the same three tags exactly once, nothing nested:\n"
        f"<user_profile>\n{_FIELD_HELP}</user_profile>\n"
        f"<item_profile>\n{_FIELD_HELP}</item_profile>\n"
        "A separate model will predict how the user rates the item using only your two <profile> texts, "
        "so describe the user's tastes and the item's qualities concretely."
    )


def build_messages(
    user_history_texts: Sequence[str],
    item_text: str | None = None,
    mode: Mode = "joint",
    item_history_texts: Sequence[str] = (),
) -> list[dict[str, str]]:
    """Chat prompt: system (format) + user (numbered history, and in joint mode the item).

    ``item_history_texts``: optional lines about the item's recent reviewers/reviews (DUET's item side).
    In ``user_only`` mode the target item must not be shown: its profile is ranked against
    candidates and naming the target would leak the answer.
    """
    _check_mode(mode)
    lines = ["The user's purchase history, oldest first:"]
    lines += [f"{i}. {t}" for i, t in enumerate(user_history_texts, 1)] or ["(no purchases)"]
    if mode == "joint":
        if item_text is None:
            raise ValueError("build_messages(mode='joint') needs item_text: the item to profile")
        lines += ["", f"The item: {item_text}"]
        if item_history_texts:
            lines += ["Recent buyers of the item:"] + [f"- {t}" for t in item_history_texts]
        lines += ["", "Write the <user_profile> and the <item_profile>."]
    else:
        if item_text is not None or item_history_texts:
            raise ValueError(
                "build_messages(mode='user_only') must not show the target item (it would leak); pass item_text=None"
            )
        lines += ["", "Write the <user_profile>."]
    return [{"role": "system", "content": system_prompt(mode)}, {"role": "user", "content": "\n".join(lines)}]


# ----------------------------------------------------------------------------- SFT warm start

_STOP = set(
    "a an the and or of for with to in on at by from as is are be this that it its your you our new set pack "
    "count piece pcs inch inches mm cm ft lb oz x w h size use used using high quality".split()
)


def _clean(s: str) -> str:
    # Item texts must not smuggle tag characters into a completion the parser then rejects.
    return " ".join(s.replace("<", " ").replace(">", " ").split())


def _keywords(items: Sequence[ItemInfo], n: int) -> list[str]:
    counts: Counter[str] = Counter()
    for it in items:
        if it.categories:
            counts[_clean(it.categories[-1]).lower()] += 2  # the narrowest category says most
        for w in re.findall(r"[A-Za-z][A-Za-z\-]{2,}", it.title):
            if w.lower() not in _STOP:
                counts[w.lower()] += 1
    return [w for w, _ in counts.most_common(n)]


def _top_categories(items: Sequence[ItemInfo], n: int) -> list[str]:
    """The ``n`` most frequent narrowest categories of ``items``, most frequent first."""
    return [c for c, _ in Counter(_clean(it.categories[-1]) for it in items if it.categories).most_common(n)]


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else ""


def _block(name: str, cue: str, prompt: str, profile: str) -> str:
    return (
        f"<{name}>\n<cue>{cue}</cue>\n<constructed_prompt>{prompt}</constructed_prompt>\n"
        f"<profile>{profile}</profile>\n</{name}>"
    )


def _user_block(history: Sequence[ItemInfo], n_keywords: int) -> str:
    kws = _keywords(history, n_keywords) or ["general products"]
    cats = _top_categories(history, 3)
    brands = [b for b, _ in Counter(_clean(h.brand).rstrip(".") for h in history if h.brand.strip()).most_common(2)]
    recent = [_clean(h.title)[:60].rstrip(" .") for h in history[-3:] if h.title.strip()]
    profile = f"This user buys {_join(cats) or 'a mix of'} products"
    profile += f", often from {_join(brands)}." if brands else "."
    if recent:
        profile += f" Recent purchases: {'; '.join(recent)}."
    profile += f" Likely interested in {_join(kws[:4])}."
    prompt = f"Describe which product types, brands and uses this user prefers, focusing on {_join(kws[:3])}."
    return _block("user_profile", ", ".join(kws), prompt, profile)


def _item_block(item: ItemInfo, n_keywords: int) -> str:
    kws = _keywords([item], n_keywords) or ["product"]
    kind = _clean(item.categories[-1]) if item.categories else "general"
    profile = f"{_clean(item.title).rstrip('.') or 'An item'}. A {kind} product"
    profile += f" by {_clean(item.brand).rstrip('.')}." if item.brand.strip() else "."
    profile += f" Suits users who look for {_join(kws[:3])}."
    prompt = f"Describe what this {kind} item offers and who would buy it."
    return _block("item_profile", ", ".join(kws), prompt, profile)


def template_completion(
    user_history: Sequence[ItemInfo], item: ItemInfo | None = None, mode: Mode = "joint", n_keywords: int = 6
) -> str:
    """A well-formed completion built from item texts alone (keywords from titles/categories).

    For the SFT warm start: teaches the format; the RL stage then teaches content. Always parses
    under ``parse_profiles(..., mode)``.
    """
    _check_mode(mode)
    out = _user_block(user_history, n_keywords)
    if mode == "joint":
        if item is None:
            raise ValueError("template_completion(mode='joint') needs the item")
        out += "\n" + _item_block(item, n_keywords)
    return out


# ------------------------------------------------------------------------------ reward wiring


def user_profile_extractor(mode: Mode = "user_only"):
    """Completion text -> the ``<profile>`` of ``<user_profile>``, or None on any format failure."""
    _check_mode(mode)

    def extract(text: str) -> str | None:
        parsed = parse_profiles(text, mode)
        return parsed.user.profile if parsed is not None else None

    return extract


def joint_profile_extractor(text: str) -> tuple[str, str] | None:
    """Completion text -> (user profile, item profile) in joint mode, or None on a format failure."""
    parsed = parse_profiles(text, "joint")
    return (parsed.user.profile, parsed.item.profile) if parsed is not None and parsed.item is not None else None


def ranker_reward(ranker, mode: Mode = "user_only"):
    """``RankerReward`` over the user ``<profile>``; an unparsable completion scores -1.

    Use with ``mode="user_only"`` prompts: a joint prompt shows the target item, which the user
    profile could simply copy.
    """
    from rewards.rec.ranker import RankerReward

    return RankerReward(ranker, user_profile_extractor(mode), name=f"duet_ranker_{mode}")


def rating_reward(predictor):
    """``RatingReward`` over both profiles (joint mode); an unparsable completion scores -1."""
    from rewards.rec.rating import RatingReward

    return RatingReward(predictor, joint_profile_extractor, name="duet_rating")


# ----------------------------------------------------------------------------- short SFT template


def short_template_completion(
    user_history: Sequence[ItemInfo], item: ItemInfo | None = None, mode: Mode = "joint", n_keywords: int = 4
) -> str:
    """A compact well-formed completion (categories and keywords) for small policies/short budgets.

    Same six tags as ``template_completion``; the user profile names the user's most frequent narrowest
    categories, which an embedding ranker picks up well.
    """
    _check_mode(mode)
    kws = _keywords(user_history, n_keywords) or ["general products"]
    cats = _top_categories(user_history, 2)
    out = _block("user_profile", ", ".join(kws[:2]), "list product types", _join(cats or kws[:2]))
    if mode == "joint":
        if item is None:
            raise ValueError("short_template_completion(mode='joint') needs the item")
        kind = _clean(item.categories[-1]) if item.categories else "product"
        out += "\n" + _block("item_profile", ", ".join(_keywords([item], 2) or ["product"]), "name the item", kind)
    return out


def minimal_template_completion(
    user_history: Sequence[ItemInfo], item: ItemInfo | None = None, mode: Mode = "joint"
) -> str:
    """The smallest well-formed completion (~25 tokens a block): fixed cue and prompt, the profile is the
    narrowest category of the user's most recent item. For tiny test policies that must learn the format fast."""
    _check_mode(mode)
    last = next((h for h in reversed(user_history) if h.categories), None)
    out = _block("user_profile", "products", "list product types", _clean(last.categories[-1]) if last else "products")
    if mode == "joint":
        if item is None:
            raise ValueError("minimal_template_completion(mode='joint') needs the item")
        out += "\n" + _block(
            "item_profile", "item", "name the item", _clean(item.categories[-1]) if item.categories else "product"
        )
    return out


def recent_template_completion(
    user_history: Sequence[ItemInfo], item: ItemInfo | None = None, mode: Mode = "joint", n_recent: int = 2
) -> str:
    """A compact completion for small real policies (93 SmolLM2 tokens a user block on average): the profile names the
    user's two most frequent narrowest categories and the ``n_recent`` most recent titles (cut to 40 characters
    at a word), which MiniLM ranks about as well as the whole raw history, at half the ``full`` template's length."""
    _check_mode(mode)
    cats = _top_categories(user_history, 2)
    recent = [_cut(_clean(h.title), 40) for h in user_history[-n_recent:] if h.title.strip()]
    profile = f"Buys {_join(cats) or 'a mix of'} products."
    if recent:
        profile += f" Recent: {'; '.join(recent)}."
    cue = ", ".join(_keywords(user_history, 2) or ["general products"])
    user = _block("user_profile", cue, "types and recent buys", profile)
    return _with_compact_item("recent_template_completion", user, item, mode)


def history_template_completion(
    user_history: Sequence[ItemInfo], item: ItemInfo | None = None, mode: Mode = "joint", n_recent: int = 3
) -> str:
    """The user's ``n_recent`` most recent purchases, newest first, as the profile (title cut to 30 characters at
    a word, then the narrowest category; ~80 SmolLM2 tokens a user block). MiniLM ranks this copy at the whole raw
    history's level (docs/rec.md), so a policy warm-started on it starts there and RL has to add to it."""
    _check_mode(mode)
    lines = []
    for h in reversed(user_history[-n_recent:]):
        title = _cut(_clean(h.title), 30) or "an item"
        lines.append(f"{title} ({_clean(h.categories[-1])})" if h.categories else title)
    cue = ", ".join(_keywords(user_history, 2) or ["general products"])
    user = _block("user_profile", cue, "recent buys, newest first", "; ".join(lines) or "a mix of products")
    return _with_compact_item("history_template_completion", user, item, mode)


def copy_template_completion(raw_history: str, item: ItemInfo | None = None, mode: Mode = "joint") -> str:
    """``raw_history`` (``DuetEnv.raw_history_text``: the prompt's own history lines, oldest first) verbatim as the
    profile: the very text the eval's ``raw_history`` row ranks. A policy warm-started on it starts where the raw
    history is (where it copies exactly), so whatever RL then drops, reorders or adds is measured against it."""
    _check_mode(mode)
    user = _block("user_profile", "purchase history", "the history as written", raw_history or "a mix of products")
    return _with_compact_item("copy_template_completion", user, item, mode)


def _with_compact_item(template: str, user_block: str, item: ItemInfo | None, mode: Mode) -> str:
    """A compact template's completion: its user block, then in joint mode the item block."""
    if mode != "joint":
        return user_block
    if item is None:
        raise ValueError(f"{template}(mode='joint') needs the item")
    return user_block + "\n" + _compact_item_block(item)


def _compact_item_block(item: ItemInfo) -> str:
    """The joint mode's item block of the compact templates: the title (40 characters) and its kind."""
    kind = _clean(item.categories[-1]) if item.categories else "product"
    return _block("item_profile", kind, "the item", f"{_cut(_clean(item.title), 40) or 'An item'}. A {kind} product.")


def _cut(text: str, n: int) -> str:
    """``text`` cut to at most ``n`` characters at a word boundary, without trailing punctuation."""
    if len(text) > n:
        text = text[:n].rsplit(" ", 1)[0]
    return text.rstrip(" .,;:-(")


# --------------------------------------------------------------------------------------- the env

REPO_ROOT = Path(__file__).resolve().parents[1]
BRIEF_SYSTEM = {
    "user_only": "Write a user profile: <user_profile> with <cue>, <constructed_prompt>, <profile>.",
    "joint": "Write <user_profile> and <item_profile>, each with <cue>, <constructed_prompt>, <profile>.",
}
BUNDLED_INTER = "envs/data/scientific300/Scientific300.inter.json"


def resolve_path(path: str) -> Path:
    """A path as given (absolute, or relative to the working directory), else relative to the repo root.

    The fallback lets recipe configs name the bundled data (``envs/data/...``) from any directory.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    alt = REPO_ROOT / p
    return alt.resolve() if alt.exists() else p.resolve()


class DataArgs(BaseModel):
    """Where the interactions and item texts come from (shared by the env and its reward actors)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["lcrec", "p5", "table"] = Field(
        "lcrec",
        description="'lcrec' (X.inter.json + X.item.json), 'p5' (user_sequence.txt + item_id<space>text) "
        "or 'table' (JSONL/CSV/TSV/Parquet with user, item, timestamp[, rating] columns).",
    )
    path: str = Field(
        BUNDLED_INTER,
        description="Interactions file (inter.json, user_sequence.txt, or the table). Default: the bundled "
        "300-user Amazon Scientific subset. Relative paths: the working directory, then the repo root.",
    )
    item_path: str | None = Field(
        None, description="Item texts (LC-Rec item.json or P5 text file); lcrec finds X.item.json by itself."
    )
    user_col: str = Field("user", description="table: user column.")
    item_col: str = Field("item", description="table: item column.")
    timestamp_col: str | None = Field("timestamp", description="table: timestamp column (None: file order).")
    rating_col: str | None = Field("rating", description="table: rating column (needed by reward=rating).")
    on_error: Literal["fail", "skip"] = Field(
        "fail",
        description="Malformed lines in the data files: 'fail' stops before the run starts, listing each as "
        "file:line; 'skip' drops them, logs how many per file and writes the count to RUN_DIR/data_report.json.",
    )

    def load(self) -> RecData:
        """The data, or a ``DataError`` (a config error: exit 2, no run directory) naming file:line and the fix."""
        from rewards.rec.data import RecDataError, load_lcrec, load_p5, load_table

        path = resolve_path(self.path)
        if not path.is_file():
            raise DataError([f"env.args.data.path ({self.path!r}): no such file ({path}); give an existing file"])
        item_path = resolve_path(self.item_path) if self.item_path else None
        if item_path is not None and not item_path.is_file():
            raise DataError(
                [f"env.args.data.item_path ({self.item_path!r}): no such file ({item_path}); give an existing file"]
            )
        on_error = "skip" if self.on_error == "skip" else "raise"
        try:
            if self.format == "lcrec":
                data = load_lcrec(path, item_path, on_error=on_error)
            elif self.format == "p5":
                data = load_p5(path, item_path, on_error=on_error)
            else:
                data = load_table(
                    path,
                    item_text_path=item_path,
                    user_col=self.user_col,
                    item_col=self.item_col,
                    timestamp_col=self.timestamp_col,
                    rating_col=self.rating_col,
                    on_error=on_error,
                )
        except RecDataError as exc:
            shown = [str(b) for b in exc.report.bad[:20]]
            more = [f"... and {len(exc.report.bad) - 20} more"] if len(exc.report.bad) > 20 else []
            fix = (
                "fix the lines, or set env.args.data.on_error=skip to drop them"
                if on_error == "raise"
                else "the file is unreadable as a whole; fix it"
            )
            raise DataError([*shown, *more, f"env.args.data ({self.format}): {fix}"]) from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:  # a file the format's reader cannot parse at all
            raise DataError(
                [f"env.args.data.path ({self.path!r}): cannot be read as format {self.format!r} "
                 f"({type(exc).__name__}: {exc}); check env.args.data.format and the file"]
            ) from None  # fmt: skip
        if data.report:
            for file, n in skipped_per_file(data).items():
                logger.warning("env.args.data.on_error=skip: skipped %d malformed line(s) in %s", n, file)
        return data


def skipped_per_file(data: RecData) -> dict[str, int]:
    """Lines a loader skipped (``on_error: skip``), counted per file."""
    return dict(Counter(b.file for b in data.report.bad))


def data_report(data: RecData, args: DataArgs) -> dict[str, Any]:
    """What ``RUN_DIR/data_report.json`` records: the policy, skipped lines per file, the first few of them."""
    return {
        "on_error": args.on_error,
        "skipped_lines": len(data.report.bad),
        "skipped_per_file": skipped_per_file(data),
        "first_skipped": [str(b) for b in data.report.bad[:20]],
    }


_DATA_CACHE: dict[str, RecData] = {}


def load_data(data: DataArgs | dict) -> RecData:
    """``DataArgs.load`` memoised per process (env, evaluation and a reward actor each load once)."""
    args = data if isinstance(data, DataArgs) else DataArgs.model_validate(data)
    key = args.model_dump_json()
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = args.load()
    return _DATA_CACHE[key]


@dataclass(frozen=True)
class DuetProtocol:
    """A named ranking protocol: how many negatives each target is ranked against, and which kinds."""

    name: str
    num_negatives: int
    negatives: tuple[str, ...]  # the negative kinds it allows
    about: str


DUET_PROTOCOLS = {
    "custom": DuetProtocol(
        "custom", 19, ("random", "popular", "ease"), "1 + num_negatives candidates of any negative kind"
    ),
    "duet": DuetProtocol("duet", 9, ("random", "ease"), "DUET's 1 + 9 candidates, random or EASE-hard negatives"),
}


class DuetArgs(EnvArgs):
    data: DataArgs = Field(default_factory=DataArgs, description="Interactions and item texts.")
    protocol: Literal["custom", "duet"] = Field(
        "custom",
        description="Ranking protocol (training candidates and eval alike). 'custom': target + num_negatives "
        "(default 19) negatives of any kind. 'duet': DUET's 1 + 9: num_negatives is 9 (an explicit other value "
        "is refused) and negatives random or ease. Eval always reports hit@1/3/5/10, ndcg@1/3/5/10 and mrr.",
    )
    split: Literal["leave_one_out", "timestamp"] = Field(
        "leave_one_out", description="How held-out events are chosen (timestamp needs a table with timestamps)."
    )
    eval_split: Literal["valid", "test"] = Field("valid", description="Held-out examples `relay eval` scores.")
    history_window: int = Field(10, ge=1, description="Most recent history items shown in the prompt (DUET: 10).")
    profile: Literal["joint", "user_only"] = Field(
        "user_only", description="'joint' (DUET: user + item profiles) or 'user_only' (LettinGo: user profile)."
    )
    num_train_users: int | Literal["all"] = Field(
        256, description="Users (one example each) in the RL training set: a seeded sample, or 'all'."
    )
    num_eval_users: int | Literal["all"] = Field(
        64, description="Held-out users scored by `relay eval`: a seeded sample, or 'all'."
    )
    reward: Literal["ranker", "rating"] = Field(
        "ranker",
        description="'ranker': rank metric of the target among candidates by MiniLM cosine to the user "
        "profile; 'rating': 1 - |pred - rating| / 4 from a frozen LM reading both profiles (joint, needs ratings).",
    )
    num_negatives: int | None = Field(
        None,
        ge=1,
        description="Negatives per example (candidates = target + these), fixed once per example. Set by the "
        "protocol (custom 19, duet 9); under duet an explicit other value is refused.",
    )
    negatives: Literal["random", "popular", "ease"] = Field(
        "random",
        description="'random' (uniform), 'popular' (probability ∝ interaction count) or 'ease': the top "
        "num_negatives items of an EASE model (rewards.rec.ease) fitted once per env on the split's training "
        "interactions, scored from the user's history, never the target or a history item (DUET's hard "
        "negatives; deterministic). The duet protocol allows random and ease.",
    )
    ease_lambda: float = Field(
        500.0, gt=0, description="negatives=ease: EASE's L2 strength λ (Steck 2019; 500 is its typical value)."
    )
    k: int = Field(10, ge=1, description="Cutoff of the training reward metric.")
    metric: Literal["ndcg", "hit", "mrr", "approx_ndcg", "softmax"] = Field(
        "ndcg",
        description="Training reward: a rank metric @k, or a smooth one over the candidates at `temperature`, "
        "where profiles that tie on the rank still differ (so a GRPO group whose profiles all rank the target "
        "alike keeps an advantage): 'approx_ndcg' (ndcg of the soft rank 1 + sum sigmoid((s_c - s_t) / T), no "
        "cutoff) or 'softmax' (the target's probability among the candidates; it pays for betting on one kind of item: "
        "with SmolLM2 it taught the policy to repeat a title, docs/rec.md). Eval always reports the rank metrics.",
    )
    temperature: float = Field(
        0.05, gt=0, description="metric approx_ndcg or softmax: the temperature on the ranker's cosines."
    )
    item_fields: list[str] = Field(
        default_factory=lambda: ["title", "brand", "categories"],
        description="Item text fields the ranker embeds for candidates (add 'description' for longer texts).",
    )
    prompt_item_chars: int = Field(120, ge=10, description="Each history item's text in the prompt is cut to this.")
    ranker_model: str | None = Field(None, description="sentence-transformers directory; None = packaged MiniLM.")
    rating_model: str = Field(
        "tiny",
        description="reward=rating: a local causal LM directory for the frozen rating predictor; 'tiny' builds "
        "a random tiny Qwen2 (smoke runs only: its ratings mean nothing).",
    )
    rating_engine: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="reward=rating: generation backend of the rating predictor; 'auto' = vLLM when it is installed "
        "and a GPU is present, else transformers.",
    )
    system_prompt: Literal["full", "brief"] = Field(
        "full",
        description="'full': the format explained (``system_prompt``); 'brief': one line naming the tags "
        "(~20 tokens instead of ~300 for the tiny test tokenizer; for tiny policies that learned the format by SFT).",
    )
    sft_template: Literal["full", "short", "minimal", "recent", "history", "copy"] = Field(
        "full",
        description="SFT completions: 'full' (sentences), 'short' (categories + keywords), 'recent' (categories + "
        "the two most recent titles: compact, for small real policies), 'history' (the three most recent "
        "purchases, newest first, title and category: ranks at the raw history's level), 'copy' (the prompt's "
        "history lines verbatim: the raw_history row's own text, so RL starts from it) or 'minimal' "
        "(fixed cue and prompt, the last item's category: for tiny test policies).",
    )

    @field_validator("num_train_users", "num_eval_users", mode="before")
    @classmethod
    def _users(cls, v: Any) -> Any:
        if v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("use a positive number of users (a seeded sample) or 'all'")

    @field_validator("num_negatives")
    @classmethod
    def _protocol_fixes(cls, v: int | None, info: ValidationInfo) -> int | None:
        name = info.data.get("protocol")
        if v is None or name != "duet" or v == DUET_PROTOCOLS["duet"].num_negatives:
            return v
        want = DUET_PROTOCOLS["duet"].num_negatives
        raise ValueError(
            f"protocol duet fixes num_negatives = {want} (1 + {want} candidates); remove env.args.num_negatives "
            f"(the protocol sets it), set it to {want}, or set env.args.protocol=custom"
        )

    @field_validator("negatives")
    @classmethod
    def _protocol_allows(cls, v: str, info: ValidationInfo) -> str:
        p = DUET_PROTOCOLS.get(info.data.get("protocol", ""))
        if p is None or v in p.negatives:
            return v
        raise ValueError(
            f"protocol {p.name} ranks against {' or '.join(p.negatives)} negatives; set env.args.negatives to "
            f"{' or '.join(p.negatives)}, or set env.args.protocol=custom"
        )

    @model_validator(mode="after")
    def _protocol_defaults(self) -> DuetArgs:
        if self.num_negatives is None:
            self.num_negatives = DUET_PROTOCOLS[self.protocol].num_negatives
        return self

    @property
    def spec(self) -> DuetProtocol:
        return DUET_PROTOCOLS[self.protocol]


@dataclass(frozen=True)
class DuetExample:
    user: str
    history: tuple[str, ...]  # item ids in the prompt window, oldest first
    target: str
    candidates: tuple[str, ...]  # target first, then negatives
    rating: float | None


class DuetEnv(Env):
    """DUET (joint user + item profiles) and LettinGo (user profile only) over a frozen recommender."""

    Args = DuetArgs

    def __init__(self, args: DuetArgs, seed: int = 0):
        super().__init__(args, seed)
        if args.reward == "rating" and args.profile != "joint":
            raise ValueError(
                "env.args.reward ('rating') reads both profiles; set env.args.profile=joint (or reward=ranker)"
            )
        self._examples: dict[str, list[DuetExample]] = {}
        self._ease: Ease | None = None

    # ------------------------------------------------------------------ data

    @property
    def data(self) -> RecData:
        return load_data(self.args.data)

    def data_report(self) -> dict[str, Any] | None:
        return data_report(self.data, self.args.data) if self.args.data.on_error == "skip" else None

    def _split(self):
        from rewards.rec.data import leave_one_out, timestamp_split

        return leave_one_out(self.data) if self.args.split == "leave_one_out" else timestamp_split(self.data)

    def ease(self) -> Ease:
        """The EASE model behind ``negatives: ease``, fitted once per env on the split's *training*
        interactions only (``split.train``: no validation or test target is in it)."""
        if self._ease is None:
            from rewards.rec.ease import Ease

            train = self._split().train
            start = time.perf_counter()
            self._ease = Ease.fit(
                ([x.item for x in s] for s in train.values()), self.data.item_ids, self.args.ease_lambda
            )
            logger.info(
                "duet: EASE (lambda %g) fitted on %d training users' interactions over %d items in %.1f s",
                self.args.ease_lambda, len(train), len(self._ease.items), time.perf_counter() - start,
            )  # fmt: skip
        return self._ease

    def examples(self, which: str) -> list[DuetExample]:
        """'train' (each train user's last train event, predicted from the earlier ones), 'valid' or 'test'."""
        if which in self._examples:
            return self._examples[which]
        from envs.recdata import user_window
        from rewards.rec.data import Example
        from rewards.rec.negatives import NegativeSampler

        split = self._split()
        if which == "train":
            raw = [Example(tuple(s[:-1]), s[-1]) for _, s in sorted(split.train.items()) if len(s) >= 2]
            n, offset = self.args.num_train_users, 0
        elif which in ("valid", "test"):
            raw = sorted(getattr(split, which), key=lambda e: e.user)
            n, offset = self.args.num_eval_users, 1
        else:
            raise ValueError(f"examples({which!r}); use 'train', 'valid' or 'test'")
        raw = [ex for ex in raw if ex.history]  # nothing to profile without a history
        if not raw:
            raise ValueError(f"env.args.data: the {which!r} split is empty; check the data and env.args.split")
        rng = random.Random(self.seed * 7919 + offset)
        if n != "all" and n < len(raw):
            raw = [raw[i] for i in sorted(rng.sample(range(len(raw)), n))]
        data = self.data
        sampler = NegativeSampler(
            data.item_ids,
            self.args.negatives,
            popularity=data.popularity,
            seed=self.seed * 104729 + offset,
            ease=self.ease() if self.args.negatives == "ease" else None,
        )
        out = []
        for ex in raw:
            window = user_window(ex.history, n=self.args.history_window)
            full_history = [x.item for x in ex.history]
            negs = sampler.sample(self.args.num_negatives, ex.target.item, full_history)
            out.append(
                DuetExample(
                    user=ex.user,
                    history=tuple(x.item for x in window),
                    target=ex.target.item,
                    candidates=(ex.target.item, *negs),
                    rating=ex.target.rating,
                )
            )
        if self.args.reward == "rating" and any(e.rating is None for e in out):
            missing = sum(e.rating is None for e in out)
            raise ValueError(
                f"env.args.reward ('rating'): {missing} of {len(out)} {which} targets have no rating in "
                f"{self.args.data.path}; use a table with a rating column (env.args.data.format=table) or reward=ranker"
            )
        self._examples[which] = out
        return out

    def _prompt_text(self, item: str) -> str:
        """One history line: the title and the narrowest category, cut to ``prompt_item_chars``."""
        info = self.data.items.get(item)
        if info is None:
            return f"item {item}"
        text = _clean(info.title).rstrip(".") or f"item {item}"
        if len(text) > self.args.prompt_item_chars:
            text = text[: self.args.prompt_item_chars].rsplit(" ", 1)[0] + "..."
        return f"{text} ({_clean(info.categories[-1])})" if info.categories else text

    def history_lines(self, ex: DuetExample) -> list[str]:
        """The history as the prompt shows it: one ``_prompt_text`` line per item, oldest first."""
        return [self._prompt_text(i) for i in ex.history]

    def raw_history_text(self, ex: DuetExample) -> str:
        """The eval's ``raw_history`` profile: the prompt's history lines joined by "; " (also the ``copy`` SFT
        template's profile)."""
        return "; ".join(self.history_lines(ex))

    def shown_item(self, ex: DuetExample) -> str:
        """The item the joint prompt profiles: the target for the rating reward; the most recent history
        item for the ranker (a ranked user profile must never see the target)."""
        return ex.target if self.args.reward == "rating" else ex.history[-1]

    def messages(self, ex: DuetExample) -> list[dict[str, str]]:
        history = self.history_lines(ex)
        if self.args.profile == "user_only":
            out = build_messages(history, mode="user_only")
        else:
            out = build_messages(history, self._prompt_text(self.shown_item(ex)), mode="joint")
        if self.args.system_prompt == "brief":
            out[0] = {"role": "system", "content": BRIEF_SYSTEM[self.args.profile]}
        return out

    def _rows(self, examples: list[DuetExample]) -> dict[str, list]:
        data = self.data
        return {
            "prompt": [self.messages(e) for e in examples],
            "user": [e.user for e in examples],
            "target_item": [e.target for e in examples],
            "history": [list(e.history) for e in examples],
            "candidates": [list(e.candidates) for e in examples],
            "item_title": [data.items[e.target].title if e.target in data.items else e.target for e in examples],
            "rating": [float("nan") if e.rating is None else e.rating for e in examples],
        }

    def train_dataset(self):
        from datasets import Dataset

        return Dataset.from_dict(self._rows(self.examples("train")))

    def eval_dataset(self):
        from datasets import Dataset

        return Dataset.from_dict(self._rows(self.examples(self.args.eval_split)))

    # --------------------------------------------------------------- rewards

    def reward_kwargs(self) -> dict[str, Any]:
        data = self.args.data.model_dump()
        data["path"] = str(resolve_path(data["path"]))  # actors may run elsewhere than the driver's cwd
        if data["item_path"]:
            data["item_path"] = str(resolve_path(data["item_path"]))
        if self.args.reward == "rating":
            return {"model_path": self.args.rating_model, "engine": self.args.rating_engine}
        return {
            "data": data,
            "mode": self.args.profile,
            "k": self.args.k,
            "metric": self.args.metric,
            "temperature": self.args.temperature,
            "item_fields": list(self.args.item_fields),
            "model_path": self.args.ranker_model,
        }

    def rewards(self) -> list[RewardSpec]:
        if self.args.reward == "rating":
            return [RewardSpec("duet_rating", "envs.duet:DuetRatingReward", 1.0, self.reward_kwargs())]
        return [RewardSpec("duet_ranker", "envs.duet:DuetRankerReward", 1.0, self.reward_kwargs())]

    # ------------------------------------------------------------------- SFT

    def sft_dataset(self, n: int):
        """Template completions (``template_completion``) for the training users' windows, cycled to ``n``."""
        from datasets import Dataset

        examples = self.examples("train")
        template = {
            "full": template_completion,
            "short": short_template_completion,
            "minimal": minimal_template_completion,
            "recent": recent_template_completion,
            "history": history_template_completion,
            "copy": copy_template_completion,
        }[self.args.sft_template]
        items = self.data.items

        def item_infos(ex: DuetExample) -> list[ItemInfo]:
            return [items.get(i, ItemInfo(title=f"item {i}")) for i in ex.history]

        # what the template reads: the items, or for `copy` the eval's raw_history text (the lines as the prompt shows them)
        history_of = self.raw_history_text if self.args.sft_template == "copy" else item_infos
        prompts, completions = [], []
        for j in range(n):
            ex = examples[j % len(examples)]
            shown = items.get(self.shown_item(ex), ItemInfo()) if self.args.profile == "joint" else None
            prompts.append(self.messages(ex))
            completions.append(template(history_of(ex), shown, mode=self.args.profile))
        return Dataset.from_dict({"prompt": prompts, "completion": completions})

    # ------------------------------------------------------------ evaluation

    def negatives_label(self) -> str:
        """The negatives in words, e.g. ``19 random negatives``."""
        n, kind = self.args.num_negatives, self.args.negatives
        if kind == "ease":
            return (
                f"{n} EASE-hard negatives (the top-{n} EASE scores of the history, lambda "
                f"{self.args.ease_lambda:g}, fitted on the training interactions only)"
            )
        return f"{n} {kind} negatives"

    def eval_protocol(self, max_prompts: int | None = None) -> str:
        n = len(self.examples(self.args.eval_split)[: max_prompts or None])  # examples are cached per split
        a, ks = self.args, "/".join(map(str, EVAL_KS))
        return (
            f"protocol {a.protocol} ({a.spec.about}): {a.split} split, {a.eval_split} targets of {n} users; each "
            f"ranked among 1 + {self.negatives_label()} by the frozen ranker's cosine to the user profile "
            f"(pessimistic ties); greedy decoding; metrics hit@{ks}, ndcg@{ks}, mrr; rows: no_profile (no user "
            "text: the expected metrics of a random order of the candidates), raw_history (the raw history text "
            "as the profile), then each policy's profiles (an unparsable one ranks last); trained-start and "
            f"trained-raw_history: mean per-user difference of {'/'.join(paired_metrics(1 + a.num_negatives))} "
            "over the same users "
            f"with a paired bootstrap {1 - BOOTSTRAP_ALPHA:.0%} CI ({BOOTSTRAP_RESAMPLES} resamples)"
            + (
                "; MAE/RMSE of the rating predictor against the held-out ratings (no_profile: the mid-scale prediction)"
                if self.args.reward == "rating"
                else ""
            )
        )

    def evaluate(self, policies: dict, out_dir: Any, max_prompts: int | None = None) -> dict:
        """Ranking metrics (and MAE/RMSE with ratings): ``no_profile`` (chance), ``raw_history``, then each
        policy's profiles (e.g. ``start``, ``trained``); then ``trained-start`` and ``trained-raw_history``:
        the mean per-user difference of ndcg@10 and hit@10 with its paired bootstrap 95% CI in ``ci95``.
        ``OUT/eval_samples.jsonl`` holds every user's candidates, profiles and the target's rank per row."""
        from rewards.rec.metrics import paired_rank_difference, random_order_metrics

        examples = self.examples(self.args.eval_split)
        if max_prompts:
            examples = examples[:max_prompts]
        ranker = build_ranker(self.args.data, self.args.item_fields, self.args.ranker_model)
        predictor = (
            build_rating_predictor(self.args.rating_model, engine=self.args.rating_engine)
            if self.args.reward == "rating"
            else None
        )
        data = self.data
        none: list[str | None] = [None] * len(examples)
        no_profile: dict[str, float] = random_order_metrics([len(e.candidates) for e in examples], EVAL_KS)
        no_profile["num_users"] = len(examples)
        if predictor is not None:  # nothing to read: the predictor's fallback, the middle of the scale
            no_profile.update(self._rating_row(predictor, examples, none, none, data))
        raw_user = [self.raw_history_text(e) for e in examples]
        raw_item = [self._prompt_text(e.target) for e in examples]
        ranks: dict[str, list[float]] = {}
        results: dict[str, Any] = {"no_profile": no_profile}
        results["raw_history"], ranks["raw_history"] = self._score(
            ranker, predictor, examples, raw_user, raw_item, data
        )
        samples: dict[str, list[str]] = {}
        for name, generate in policies.items():
            texts = generate([self.messages(e) for e in examples])
            samples[name] = texts
            parsed = [parse_profiles(t, self.args.profile) for t in texts]
            users = [p.user.profile if p else None for p in parsed]
            items_ = [p.item.profile if p and p.item else None for p in parsed]
            results[name], ranks[name] = self._score(ranker, predictor, examples, users, items_, data)
        for base in ("start", "raw_history"):
            if "trained" in ranks and base in ranks:
                results[f"trained-{base}"] = paired_rank_difference(
                    ranks["trained"], ranks[base], paired_metrics(1 + self.args.num_negatives),
                    n_resamples=BOOTSTRAP_RESAMPLES, seed=self.seed, alpha=BOOTSTRAP_ALPHA,
                )  # fmt: skip
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "eval_samples.jsonl", "w") as f:
            for j, e in enumerate(examples):
                row = {"user": e.user, "target": e.target, "candidates": list(e.candidates)}
                row.update({"raw_history": raw_user[j], **{name: texts[j] for name, texts in samples.items()}})
                row["rank"] = {name: int(r[j]) for name, r in ranks.items()}  # 1 = the target ranked first
                f.write(json.dumps(row) + "\n")
        return results

    def _score(
        self, ranker, predictor, examples, user_profiles, item_profiles, data
    ) -> tuple[dict[str, float], list[float]]:
        """One eval row and the target's rank per user (an unparsable profile ranks last)."""
        import numpy as np

        from rewards.rec.metrics import rank_metrics

        ok = [j for j, p in enumerate(user_profiles) if p is not None]
        ranks = np.array([float(len(e.candidates)) for e in examples])  # [B] unparsable: the worst rank
        if ok:
            ranks[ok] = ranker.rank(
                [user_profiles[j] for j in ok],
                [examples[j].target for j in ok],
                [list(examples[j].history) for j in ok],
                [list(examples[j].candidates[1:]) for j in ok],
            )
        row: dict[str, float] = rank_metrics(ranks, EVAL_KS)
        row["parse_rate"] = len(ok) / len(examples)
        row["num_users"] = len(examples)
        if predictor is not None:
            row.update(self._rating_row(predictor, examples, user_profiles, item_profiles, data))
        return row, ranks.tolist()

    def _rating_row(self, predictor, examples, user_profiles, item_profiles, data) -> dict[str, float]:
        """MAE/RMSE of the predictor reading both profiles; a missing profile or prediction: mid-scale."""
        from rewards.rec.metrics import mae, rmse

        ok = [j for j, p in enumerate(user_profiles) if p is not None]
        both = [j for j in ok if item_profiles[j] is not None]
        mid = (predictor.lo + predictor.hi) / 2
        preds = [mid] * len(examples)  # unparsable profiles or predictions: the middle of the scale
        got = (
            predictor.predict(
                [user_profiles[j] for j in both],
                [item_profiles[j] for j in both],
                [data.items[examples[j].target].title if examples[j].target in data.items else "" for j in both],
            )
            if both
            else []
        )
        for j, p in zip(both, got, strict=True):
            if p is not None:
                preds[j] = min(max(p, predictor.lo), predictor.hi)
        truth = [e.rating for e in examples]
        return {
            "mae": mae(preds, truth),
            "rmse": rmse(preds, truth),
            "rating_parse_rate": sum(p is not None for p in got) / len(examples),
        }


# -------------------------------------------------------------------- reward classes (one per actor)


def build_ranker(data: DataArgs | dict, item_fields=("title", "brand", "categories"), model_path=None, **kwargs):
    """An ``EmbeddingRanker`` with the data's catalog (item id -> text of ``item_fields``)."""
    from rewards.rec.ranker import EmbeddingRanker

    rec = load_data(data)
    ranker = EmbeddingRanker(model_path, **kwargs)
    ranker.set_catalog({i: rec.item_text(i, fields=tuple(item_fields)) for i in rec.item_ids}, rec.popularity)
    return ranker


def build_rating_predictor(model_path: str = "tiny", **kwargs):
    """A ``RatingPredictor``; ``'tiny'`` builds (once, cached in the temp dir) a random tiny Qwen2."""
    from rewards.rec.rating import RatingPredictor

    if model_path == "tiny":
        import tempfile

        from rl.tiny_model import cached_tiny_model

        model_path = str(cached_tiny_model(Path(tempfile.gettempdir()) / "relay-tiny-models"))
    return RatingPredictor(model_path, **kwargs)


class DuetRankerReward:
    """TRL reward: rank metric (or a smooth one: ``approx_ndcg``, ``softmax``) of ``target_item`` among
    ``candidates`` by the user ``<profile>``.

    A class so that ``load_reward`` builds it once per reward actor: MiniLM loads once and item
    embeddings stay cached for the actor's life. Plain kwargs (data paths), so it ships to Ray.
    """

    def __init__(
        self,
        data: dict | None = None,
        mode: Mode = "user_only",
        k: int = 10,
        metric: str = "ndcg",
        item_fields: Sequence[str] = ("title", "brand", "categories"),
        model_path: str | None = None,
        batch_size: int = 64,
        temperature: float = 0.05,
    ):
        _check_mode(mode)
        self.ranker = build_ranker(
            data or {}, item_fields, model_path, k=k, metric=metric, batch_size=batch_size, temperature=temperature
        )
        self._reward = ranker_reward(self.ranker, mode)
        self.__name__ = "duet_ranker"

    def __call__(self, prompts, completions, completion_ids=None, **columns: Any) -> list[float | None]:
        return self._reward(prompts, completions, completion_ids, **columns)


class DuetRatingReward:
    """TRL reward: ``1 - |pred - rating| / 4`` from a frozen LM reading both profiles (joint mode)."""

    def __init__(self, model_path: str = "tiny", max_new_tokens: int = 8, batch_size: int = 16, engine: str = "auto"):
        self.predictor = build_rating_predictor(
            model_path, engine=engine, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        self._reward = rating_reward(self.predictor)
        self.__name__ = "duet_rating"

    def __call__(self, prompts, completions, completion_ids=None, **columns: Any) -> list[float | None]:
        return self._reward(prompts, completions, completion_ids, **columns)
