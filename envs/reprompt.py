"""RePrompt (arXiv 2505.17540): the policy reasons in <think>, then writes an enhanced T2I prompt in
<answer>; rewards are image-level (rewards.t2i.geneval.geneval_reward) plus format and length.

Pure parts only: chat building, completion parsing, format/length rewards, prompt sources and a
built-in GenEval-style training-prompt generator. The Env class that wires these into the trainer
lives elsewhere.
"""

from __future__ import annotations

import json
import random
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field

from rewards.contract import message_text
from rewards.spec import RewardSpec
from rewards.t2i.geneval import Parsed, ideal_rewrite, load_geneval_metadata, parse_completion
from rewards.t2i.shapeworld import CLASS_NAMES, COLORS
from rl.env_api import Env, EnvArgs

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
    "reword_geneval",
    "ideal_rewrite",
    "build_rows",
    "MIN_ANSWER_WORDS",
    "MAX_ANSWER_WORDS",
]

SYSTEM_PROMPT = (
    "Rewrite the image prompt for a text-to-image model. Think inside <think> </think>, then write the "
    "final prompt inside <answer> </answer>: every object with its count, color and place in the picture."
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


# ---------------------------------------------------------------- hidden prompts: GenEval reworded
# The same requirement sets as GenEval, phrased as users ask for pictures rather than as captions: openers
# neither GenEval ("a photo of") nor the training generator use, colors after the noun, counts as "exactly",
# positions relative to the anchor. A policy that only learned the training phrasing cannot just copy here.

_HIDDEN_OPENERS = ("show me", "please draw", "I would like to see", "render", "make a picture with")
_HIDDEN_SIDES = {"left of": "with {a} on its left", "right of": "with {a} on its right",
                 "above": "with {a} above it", "below": "with {a} below it"}  # fmt: skip


def _hidden_phrase(meta: dict) -> str:
    inc = meta["include"]
    if meta["tag"] == "single_object":
        return _a(inc[0]["class"])
    if meta["tag"] == "two_object":
        return f"both {_a(inc[0]['class'])} and {_a(inc[1]['class'])}"
    if meta["tag"] == "counting":
        return f"exactly {_NUMBERS[inc[0]['count']]} {_plural(inc[0]['class'])}"
    if meta["tag"] == "colors":
        return f"{_a(inc[0]['class'])} colored {inc[0]['color']}"
    if meta["tag"] == "color_attr":
        return " and ".join(f"{_a(r['class'])} colored {r['color']}" for r in inc)
    if meta["tag"] == "position":
        anchor, mover = inc[0], inc[1]  # GenEval: mover["position"] = [relation, index of the anchor]
        return f"{_a(anchor['class'])} {_HIDDEN_SIDES[mover['position'][0]].format(a=_a(mover['class']))}"
    raise ValueError(f"unknown GenEval tag {meta['tag']!r}")


def reword_geneval(metadata: list[dict], seed: int = 0) -> list[dict]:
    """GenEval metadata rows with the same requirements (tag, include, exclude) and a reworded ``prompt``
    (see the note above); deterministic in ``seed``. Write them as .jsonl for ``env.args.eval_metadata``."""
    rng = random.Random(seed)
    return [{**meta, "prompt": f"{rng.choice(_HIDDEN_OPENERS)} {_hidden_phrase(meta)}"} for meta in metadata]


# ---------------------------------------------------------------- the env

BUNDLED_GENEVAL = Path(__file__).resolve().parent / "data" / "geneval" / "evaluation_metadata.jsonl"


def with_prefill(messages: list[dict]) -> list[dict]:
    """RePrompt's conversation: the assistant turn is pre-filled and generation continues it."""
    return [*messages, {"role": "assistant", "content": ASSISTANT_PREFILL}]


def _weak_rewrite(raw: str) -> str:
    """A well-formed but unhelpful rewrite: the raw prompt restated inside the frame (no layout, no digits)."""
    from rewards.t2i.geneval import FRAME_CLOSE, FRAME_OPEN

    return f"{FRAME_OPEN}: {raw.strip()}. {FRAME_CLOSE}"


def _think(meta: dict) -> str:
    """The reasoning: each required object with its count and color, copied from the prompt. Naming the
    color here as well as in the answer gives a tiny policy trained from scratch twice the signal to
    learn to copy color words (with class names only, seed 1 of the quickstart never learned it)."""
    names = []
    for req in meta["include"]:
        count, noun = req["count"], req["class"]
        color = f"{req['color']} " if "color" in req else ""
        names.append(_a(color + noun) if count == 1 else f"{_NUMBERS[count]} {color}{_plural(noun)}")
    return f" The picture needs {', '.join(names)}."


def sft_completion(item: dict, ideal: bool) -> str:
    """What the policy writes after the prefill: reasoning, then the enhanced prompt."""
    answer = ideal_rewrite(item["metadata"]) if ideal else _weak_rewrite(item["prompt"])
    return f"{_think(item['metadata'])} </think>\n<answer> {answer} </answer>"


def _spread(items: list, n: int | None) -> list:
    """At most ``n`` items spread evenly over the list (keeps every GenEval tag represented)."""
    if not n or n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


class RePromptArgs(EnvArgs):
    train_prompts: str = Field(
        "generated",
        description="'generated' (built-in GenEval-style generator, never the eval prompts), a GenEval "
        "metadata .jsonl, or a .txt file with one prompt per line (no metadata: image reward needs .jsonl).",
    )
    num_train_prompts: int = Field(512, ge=1, description="Training prompts drawn from the source.")
    eval_metadata: str | None = Field(
        None, description="GenEval metadata .jsonl to evaluate on (default: the bundled 553 GenEval prompts)."
    )
    image_reward_partial: bool = Field(
        True, description="Train on the fraction of GenEval clauses satisfied (denser) instead of all-or-nothing."
    )
    sft_ideal_fraction: float = Field(
        0.5, ge=0, le=1, description="Share of SFT examples whose answer is the explicit-layout rewrite."
    )
    eval_seeds: int = Field(4, ge=1, description="Images per prompt in evaluation (GenEval uses 4).")


class RePromptEnv(Env):
    """RePrompt on shapeworld: format + length + GenEval-style composition of the rendered image."""

    Args = RePromptArgs

    def _train_items(self) -> list[dict]:
        src = self.args.train_prompts
        if src == "generated":
            return generate_training_prompts(self.args.num_train_prompts, seed=self.seed)
        path = Path(src)
        if path.suffix == ".jsonl":
            return load_geneval_prompts(path)[: self.args.num_train_prompts]
        raise ValueError(
            f"env.args.train_prompts ({src!r}): the image reward judges against GenEval metadata; "
            "give 'generated' or a GenEval-style .jsonl (plain .txt prompts carry no metadata)"
        )

    def train_dataset(self):
        from datasets import Dataset

        rows = build_rows(self._train_items(), base_seed=self.seed)
        for row in rows:
            row["prompt"] = with_prefill(row["prompt"])
        return Dataset.from_list(rows)

    def rewards(self) -> list[RewardSpec]:
        return [
            RewardSpec("format", "envs.reprompt:format_reward", 1.0),
            RewardSpec("length", "envs.reprompt:length_reward", 1.0),
            RewardSpec("image", "rewards.t2i.geneval:geneval_reward", 1.0, {"partial": self.args.image_reward_partial}),
        ]

    def sft_dataset(self, n: int):
        from datasets import Dataset

        rng = random.Random(self.seed + 7)
        items = generate_training_prompts(n, seed=self.seed + 10_000)  # disjoint from the RL prompts' seed
        return Dataset.from_dict(
            {
                "prompt": [with_prefill(build_messages(it["prompt"])) for it in items],
                "completion": [sft_completion(it, rng.random() < self.args.sft_ideal_fraction) for it in items],
            }
        )

    def eval_dataset(self):
        """The GenEval evaluation prompts (``eval_metadata``) as training-style rows (eval.every_steps); the
        generated training prompts never equal them."""
        from datasets import Dataset

        rows = build_rows(self.eval_items(), base_seed=self.seed)
        for row in rows:
            row["prompt"] = with_prefill(row["prompt"])
        return Dataset.from_list(rows)

    @cached_property
    def _all_eval_items(self) -> list[dict]:
        """``eval_metadata`` read once per env (evaluate and eval_protocol both need it)."""
        return load_geneval_prompts(Path(self.args.eval_metadata) if self.args.eval_metadata else BUNDLED_GENEVAL)

    def eval_items(self, max_prompts: int | None = None) -> list[dict]:
        return _spread(self._all_eval_items, max_prompts)

    def eval_protocol(self, max_prompts: int | None = None) -> str:
        source = self.args.eval_metadata or "the bundled GenEval prompts"
        n = len(self.eval_items(max_prompts))
        return (
            f"GenEval rules on shapeworld images; {n} prompts from {source} x {self.args.eval_seeds} image seeds; "
            "greedy decoding; 'raw' renders the original prompt"
        )

    def evaluate(self, policies: dict, out_dir: Any, max_prompts: int | None = None) -> dict:
        from rewards.t2i.geneval import prompt_seed, score_prompt, score_table

        items = self.eval_items(max_prompts)
        seeds = range(self.args.eval_seeds)

        def table(image_prompts: list[str | None]) -> dict:
            rows = []
            for item, text in zip(items, image_prompts, strict=True):
                for k in seeds:
                    ok = text is not None and score_prompt(text, item["metadata"], prompt_seed(item["prompt"], k))[0]
                    rows.append({"tag": item["metadata"]["tag"], "correct": ok})
            return score_table(rows)

        results: dict[str, dict] = {"raw": table([it["prompt"] for it in items])}
        answers: dict[str, list] = {}
        for name, generate in policies.items():
            chat = [with_prefill(build_messages(it["prompt"])) for it in items]
            texts = generate(chat)
            parsed = [parse_completion(t) for t in texts]
            answers[name] = [p.answer for p in parsed]
            row = table(answers[name])
            row["format_reward"] = sum(format_reward(None, texts)) / len(texts)
            row["length_reward"] = sum(length_reward(None, texts)) / len(texts)
            row["answer_rate"] = sum(a is not None for a in answers[name]) / len(texts)
            results[name] = row
        _write_grid(items, answers, Path(out_dir))
        return results


def _write_grid(items: list[dict], answers: dict[str, list], out_dir: Path, n: int = 6) -> None:
    """eval_grid.png: per row, the image of the raw prompt and of each policy's enhanced prompt."""
    from PIL import Image, ImageDraw

    from rewards.t2i.geneval import prompt_seed
    from rewards.t2i.shapeworld import render

    names = list(answers)
    cell, text_h = 160, 70
    grid = Image.new("RGB", (cell * (1 + len(names)), (cell + text_h) * n), "white")
    draw = ImageDraw.Draw(grid)
    for r, item in enumerate(items[:n]):
        columns = [("raw", item["prompt"])] + [(nm, answers[nm][r]) for nm in names]
        for c, (label, text) in enumerate(columns):
            x, y = c * cell, r * (cell + text_h)
            if text:
                grid.paste(render(text, prompt_seed(item["prompt"], 0), size=cell), (x, y))
            caption = f"{label}: {(text or '(no answer)')}"
            lines = [caption[i : i + 26] for i in range(0, min(len(caption), 26 * 5), 26)]
            draw.multiline_text((x + 2, y + cell + 2), "\n".join(lines), fill="black")
    out_dir.mkdir(parents=True, exist_ok=True)
    grid.save(out_dir / "eval_grid.png")
    try:
        import numpy as np
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tensorboard"))
        writer.add_image("eval/raw_vs_enhanced", np.asarray(grid), dataformats="HWC")
        writer.close()
    except ImportError:  # TensorBoard is optional for the grid
        pass


def main(argv: list[str] | None = None) -> int:
    """``python -m envs.reprompt reword OUT.jsonl [--seed S] [--source META.jsonl]``: the hidden-prompt set
    (``reword_geneval``) for ``relay eval RUN_DIR env.args.eval_metadata=OUT.jsonl``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m envs.reprompt", description=main.__doc__)
    parser.add_argument("command", choices=["reword"])
    parser.add_argument("out", type=Path, help="where the reworded GenEval metadata .jsonl goes")
    parser.add_argument("--seed", type=int, default=0, help="picks each prompt's opener")
    parser.add_argument("--source", type=Path, default=BUNDLED_GENEVAL, help="GenEval metadata to reword")
    opts = parser.parse_args(argv)
    try:
        rows = reword_geneval(load_geneval_metadata(opts.source), seed=opts.seed)
    except (OSError, ValueError, KeyError) as err:
        print(f"python -m envs.reprompt reword: --source {opts.source}: {err}", file=sys.stderr)
        return 2
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} reworded GenEval prompts to {opts.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
