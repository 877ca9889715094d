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

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from envs.recdata import ItemInfo

Mode = Literal["joint", "user_only"]
BLOCKS = ("user_profile", "item_profile")
FIELDS = ("cue", "constructed_prompt", "profile")
_TAG = re.compile(r"<(/?)(user_profile|item_profile|cue|constructed_prompt|profile)>")


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
    cats = [c for c, _ in Counter(_clean(h.categories[-1]) for h in history if h.categories).most_common(3)]
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
