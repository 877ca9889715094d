"""GenRecEnv: a generative LLM recommender (TIGER / LC-Rec / MiniOneRec) as a Relay env.

The policy reads a user's history written as semantic item IDs (``<a_3><b_12><c_5><d_0>``) and
generates the next item's ID. Stages, all driven by ``relay train``:

1. ``prepare_model``: build (or load) the semantic index of the catalogue (MiniLM embeddings of the
   item texts -> RQ-KMeans / RQ-VAE codes -> disambiguation level), save it in the run directory
   (``semantic_index.json``), add the code tokens to the tokenizer and model, save the result as
   ``RUN_DIR/genrec_model`` (the model SFT starts from).
2. SFT warm start on the task mix (history -> next ID, LC-Rec's title -> ID and ID -> title); with
   ``sft.lora=true`` the new code embeddings train through PEFT ``trainable_token_indices``.
3. GRPO with MiniOneRec's rule + ranking rewards and a validity reward; rollouts are constrained to
   valid IDs by a prefix trie (``logits_processors``: ``rewards.rec.trie:trie_constraint``).
4. ``evaluate``: full-catalogue constrained beam search (``rewards.rec.genrec_eval``) for the SFT model
   and the RL model, plus popularity and SASRec trained on the same split, and a paired bootstrap CI of
   RL - SFT over the evaluated users. Protocol: docs/genrec.md.

Two named evaluation protocols (``env.args.protocol``), never mixed: each fixes the split, the history cap,
the beam width and the metrics (``PROTOCOLS``); an explicit ``history_cap`` / ``num_beams`` that differs
from the protocol's is refused.
- ``tiger`` (TIGER, LC-Rec): leave-one-out (last item = test, second-to-last = valid), history cap 20,
  10 beams, Recall@5/10 and NDCG@5/10.
- ``minionerec`` (MiniOneRec): chronological 8:1:1 split over all interactions
  (``rewards.rec.data.chronological_split``), history cap 10, 50 beams, HR@3/5/10 and NDCG@3/5/10.

The index is built once per (data, settings) and cached (``cache_dir``) because the training dataset,
whose prompts are written in IDs, is built before the run directory exists; the run directory keeps
its own copy, which evaluation and the rollout trie read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from envs.duet import DataArgs, data_report, load_data, resolve_path
from rewards.rec.data import (
    Example,
    RecData,
    Split,
    chronological_split,
    lcrec_item_path,
    leave_one_out,
    split_order,
)
from rewards.spec import RewardSpec
from rl.atomic import atomic_path, atomic_write_text
from rl.env_api import Env, EnvArgs

if TYPE_CHECKING:
    from rewards.rec.baselines import SASRecBaseline

logger = logging.getLogger("relay")

INDEX_FILE = "semantic_index.json"
MODEL_DIR = "genrec_model"
SFT_TASKS = ("next_item", "sequence", "title_to_id", "id_to_title")
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_ALPHA = 0.05


@dataclass(frozen=True)
class Protocol:
    """What one paper family measures: split, history cap, beam width, cut-offs and the hit metric's name."""

    name: str
    split: str  # "leave_one_out" | "chronological"
    history_cap: int
    num_beams: int
    ks: tuple[int, ...]
    hit_name: str  # "recall" (TIGER) or "hr" (MiniOneRec): the same number with one target
    papers: str


PROTOCOLS = {
    "tiger": Protocol("tiger", "leave_one_out", 20, 10, (5, 10), "recall", "TIGER, LC-Rec"),
    "minionerec": Protocol("minionerec", "chronological", 10, 50, (3, 5, 10), "hr", "MiniOneRec"),
}


class GenRecArgs(EnvArgs):
    data: DataArgs = Field(
        default_factory=DataArgs,
        description="Interactions and item texts: LC-Rec JSON (default: the bundled 300-user Amazon Scientific "
        "subset) or P5 (format=p5, path=user_sequence.txt, item_path=item texts 'item_id<space>text').",
    )
    protocol: Literal["tiger", "minionerec"] = Field(
        "tiger",
        description="Evaluation protocol; sets the split, history_cap, num_beams and metrics. tiger (TIGER, "
        "LC-Rec): leave-one-out, history 20, 10 beams, Recall/NDCG@5/10. minionerec (MiniOneRec): chronological "
        "8:1:1 over interactions (by timestamp, or by per-user order index without timestamps), history 10, "
        "50 beams, HR/NDCG@3/5/10.",
    )
    method: Literal["rq_kmeans", "hkmeans", "rq_vae"] = Field(
        "rq_kmeans",
        description="Semantic-ID quantiser: rq_kmeans (residual k-means, TIGER/MiniOneRec style), hkmeans "
        "(hierarchical k-means, DSI/P5: k-means within each parent cluster; nearly collision-free) or rq_vae.",
    )
    levels: int = Field(3, ge=1, le=8, description="Code levels before the disambiguation level.")
    codebook_size: int | Literal["auto"] | None = Field(
        16,
        description="Codes per level. 'auto' or null: follows the catalogue, the smallest power of two >= "
        "8 * n_items ** (1 / levels), clamped to [2, 256] (3 levels: 300 items -> 64, 1,427 -> 128, > 4,096 "
        "-> 256, TIGER's 3 x 256); rewards.rec.semantic_ids.auto_codebook_size. The shipped recipe keeps 16.",
    )
    extra_level: Literal["auto", "always"] = Field(
        "always",
        description="Disambiguation level: 'always' (every ID has levels+1 tokens, so rollout.max_new_tokens = "
        "levels + 2 always fits) or 'auto' (only when codes collide).",
    )
    kmeans_backend: Literal["sklearn", "faiss"] = Field("sklearn", description="k-means implementation.")
    index_path: str | None = Field(
        None, description="Reuse a saved semantic index (JSON from rewards.rec.semantic_ids) instead of building one."
    )
    cache_dir: str | None = Field(
        None, description="Where built indexes and item embeddings are cached (default: <tmp>/relay-genrec)."
    )
    embed_model: str | None = Field(None, description="sentence-transformers directory; None = packaged MiniLM.")
    id_embeddings: Literal["text", "sasrec"] = Field(
        "text",
        description="What the semantic IDs quantise: text (the items' MiniLM text embeddings, TIGER and LC-Rec) or "
        "sasrec (the item embedding table of the run's SASRec, trained first and cached, rows scaled to unit "
        "length: collaborative IDs, for data without item texts such as a P5 user_sequence.txt alone).",
    )
    history_cap: int | None = Field(
        None, ge=1, description="Most recent history items in a prompt: set by the protocol (tiger 20, minionerec "
        "10); an explicit different value is refused.",
    )  # fmt: skip
    history_item_tokens: bool = Field(
        False,
        description="Write each history item's own token (<item_K>, one new token per catalogue item) after its "
        "semantic ID in the prompt, so the policy reads item identities as SASRec does; input only: it still "
        "answers with the ID's codes under the trie.",
    )
    num_train_examples: int | None = Field(
        None,
        ge=1,
        description="Cap on training examples (every prefix of each user's train part predicts its next item).",
    )
    eval_split: Literal["valid", "test"] = Field("valid", description="Held-out examples `relay eval` scores.")
    num_eval_users: int | None = Field(
        None, ge=1, description="Evaluate at most this many examples, the first in split order (tiger: one per "
        "user; minionerec: one per held-out interaction). Default: all.",
    )  # fmt: skip
    num_beams: int | None = Field(
        None, ge=1, description="Beam width of the constrained beam-search evaluation: set by the protocol "
        "(tiger 10, minionerec 50); an explicit different value is refused.",
    )  # fmt: skip
    eval_batch_size: int = Field(16, ge=1, description="Prompts per beam-search batch.")
    sft_tasks: dict[str, float] = Field(
        default_factory=lambda: {"next_item": 0.8, "title_to_id": 0.1, "id_to_title": 0.1},
        description="SFT task mix (weights): next_item (history -> next ID; the loss on the next ID only), "
        "sequence (one window of history_cap + 1 items of a user's train sequence, the loss on every item's ID "
        "given the ones before it, as SASRec trains every position: each example teaches up to history_cap "
        "next-item pairs for the cost of one), title_to_id, id_to_title (LC-Rec).",
    )
    rule_weight: float = Field(1.0, description="Weight of the rule reward (1 if the generated ID is the target).")
    ranking_weight: float = Field(1.0, description="Weight of MiniOneRec's ranking penalty of wrong samples.")
    validity_weight: float = Field(0.1, description="Weight of the validity reward (1 for a catalogue ID).")
    prefix_weight: float = Field(
        0.0, description="Weight of the prefix reward (share of the target's leading code levels matched; 0 = off)."
    )
    similarity_weight: float = Field(
        0.0,
        description="Weight of the similarity reward (cosine of the generated item's MiniLM text embedding to the "
        "target's; dense where the rule reward is flat on a large catalogue; 0 = off; docs/genrec.md suggests 0.5).",
    )
    teacher_weight: float = Field(
        0.0,
        description="Weight of the teacher reward: NDCG@teacher_k credit of the generated item in a frozen SASRec's "
        "ranking for the user's history (SASRec trained once on the training split, early-stopped on validation, "
        "cached; the same model is the eval's sasrec row). Dense and history-aware; 0 = off.",
    )
    teacher_k: int = Field(50, ge=1, description="Depth of the teacher's ranking that earns credit (teacher reward).")
    teacher_credit: Literal["ndcg", "topk", "logprob"] = Field(
        "ndcg",
        description="Teacher reward's credit for rank r <= teacher_k: ndcg = 1/log2(r+1) (mode-seeking: the policy "
        "chases the teacher's top item); topk = 1 (any item of the teacher's top-k set); logprob = the teacher's "
        "log-probability of the item, any rank (with algorithm.beta=1 and scale_rewards=none the optimum is the "
        "start policy times the teacher; docs/genrec.md).",
    )
    teacher_seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="SASRec seeds whose ensemble (the mean of their log probabilities over the catalogue) is the "
        "teacher of the distillation terms and the teacher reward; each is trained once and cached, and the eval "
        "adds a sasrec_ensemble row. None = the run's own SASRec (seed), the eval's sasrec row.",
    )
    sasrec_epochs: int = Field(
        300,
        ge=1,
        description="SASRec baseline: max epochs (RecBole's 300; early stopping on validation NDCG@10 ends it, "
        "patience 10).",
    )

    @field_validator("sft_tasks")
    @classmethod
    def _known_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(SFT_TASKS))
        if unknown:
            raise ValueError(f"unknown SFT task(s) {unknown}; use {', '.join(SFT_TASKS)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("task weights must be >= 0 with a positive sum, e.g. {next_item: 1}")
        return v

    @field_validator("teacher_seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"seeds repeat in {v}; list each SASRec seed once, e.g. [0, 1, 2]")
        return v

    @field_validator("codebook_size")
    @classmethod
    def _codebook(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 2:
            raise ValueError("must be >= 2 codes per level, or 'auto' (from the item count)")
        return v

    @field_validator("history_cap", "num_beams")
    @classmethod
    def _protocol_fixes(cls, v: int | None, info: ValidationInfo) -> int | None:
        name = info.data.get("protocol")
        if v is None or name not in PROTOCOLS:
            return v
        want = getattr(PROTOCOLS[name], info.field_name)
        if v != want:
            raise ValueError(
                f"protocol {name} fixes {info.field_name} = {want}; remove env.args.{info.field_name} (the protocol "
                f"sets it) or set it to {want} (per protocol: "
                f"{', '.join(f'{p.name} {getattr(p, info.field_name)}' for p in PROTOCOLS.values())})"
            )
        return v

    @model_validator(mode="after")
    def _protocol_defaults(self) -> GenRecArgs:
        p = PROTOCOLS[self.protocol]
        if self.history_cap is None:
            self.history_cap = p.history_cap
        if self.num_beams is None:
            self.num_beams = p.num_beams
        return self

    @property
    def spec(self) -> Protocol:
        return PROTOCOLS[self.protocol]


# ------------------------------------------------------------------------------------- pure helpers


def train_examples(split: Split, cap: int | None = None) -> list[Example]:
    """Leave-one-out training examples: every prefix of each user's train sequence predicts its next item."""
    out = []
    for seq in split.train.values():
        for t in range(1, len(seq)):
            out.append(Example(tuple(seq[:t]), seq[t]))
    return out[:cap] if cap else out


def sequence_examples(split: Split, history_cap: int, cap: int | None = None) -> list[Example]:
    """The ``sequence`` SFT task's windows: each user's train sequence cut, from its end, into windows of
    ``history_cap`` history items + the next one (the oldest window may be shorter); trained with the loss on
    every ID of the window, together they cover each of ``train_examples``' (prefix, next item) pairs once."""
    out = []
    for seq in split.train.values():
        for t in range(len(seq) - 1, 0, -history_cap):  # t: the window's target position
            out.append(Example(tuple(seq[max(0, t - history_cap) : t]), seq[t]))
    return out[:cap] if cap else out


def task_plan(n: int, weights: dict[str, float], seed: int) -> list[str]:
    """``n`` task names drawn with ``weights`` (seeded), in a fixed order of the draws."""
    names = [t for t in SFT_TASKS if weights.get(t, 0) > 0]
    rng = random.Random(seed)
    return rng.choices(names, weights=[weights[t] for t in names], k=n)


def short_title(data: RecData, item: str, max_chars: int = 60) -> str:
    info = data.items.get(item)
    title = " ".join((info.title if info else "").split()) or f"item {item}"
    return title if len(title) <= max_chars else title[:max_chars].rsplit(" ", 1)[0]


def sasrec_item_embeddings(sasrec: SASRecBaseline, items: Sequence[str]):
    """A trained SASRec's item embedding rows for ``items`` ([N, D] float32), each scaled to unit length: the
    directions its next-item scores (h . e) compare, without the norm that carries popularity."""
    from sklearn.preprocessing import normalize

    table = sasrec.model.item.weight.detach().float().cpu().numpy()  # [1 + n_catalog, D], row 0 = padding
    return normalize(table[[sasrec.pos[i] for i in items]])  # [N, D] float32, unit rows


@contextmanager
def _stage_lines_on_stderr(name: str = "rewards.rec.semantic_ids") -> Iterator[None]:
    """Show logger ``name``'s INFO stage lines (with wall times) on stderr for the block: the index and the
    SASRec teacher are built at preflight, before the run's log file exists. They still reach any root handler."""
    log = logging.getLogger(name)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("genrec: %(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _file_key(path: Path) -> str:
    """A file's content hash: a cache key that survives copies and fresh checkouts of the same data
    (path + mtime did not: re-materialised data rebuilt the index and its embeddings)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ the env


class GenRecEnv(Env):
    Args = GenRecArgs

    def __init__(self, args: GenRecArgs, seed: int = 0):
        super().__init__(args, seed)
        self.args: GenRecArgs = args

    # ---- data and index
    @property
    def data(self) -> RecData:
        return load_data(self.args.data)

    def data_report(self) -> dict[str, Any] | None:
        return data_report(self.data, self.args.data) if self.args.data.on_error == "skip" else None

    @cached_property
    def split(self) -> Split:
        """The protocol's split: leave-one-out (tiger) or chronological 8:1:1 over interactions (minionerec)."""
        if self.args.spec.split == "chronological":
            return chronological_split(self.data, 0.8, 0.1)
        return leave_one_out(self.data)

    def codebook_size(self) -> int:
        """Codes per level: ``env.args.codebook_size``, or the catalogue's ``auto_codebook_size``."""
        from rewards.rec.semantic_ids import auto_codebook_size

        k = self.args.codebook_size
        return k if isinstance(k, int) else auto_codebook_size(self.data.num_items, self.args.levels)

    def _cache_dir(self) -> Path:
        return Path(self.args.cache_dir or Path(tempfile.gettempdir()) / "relay-genrec").expanduser()

    @cached_property
    def _data_key(self) -> str:
        """The data files' format and content hashes (hashed once per env): the caches' data key."""
        self.data  # noqa: B018  a missing or malformed data file: a DataError (file:line, fix) before any stat
        d = self.args.data
        inter = resolve_path(d.path)
        items = resolve_path(d.item_path) if d.item_path else lcrec_item_path(inter) if d.format == "lcrec" else None
        return "|".join([d.format, _file_key(inter), *([_file_key(items)] if items is not None else [])])

    @cached_property
    def index_file(self) -> Path:
        """The semantic index this env uses: ``index_path``, else a cached build (built on first use)."""
        from rewards.rec.semantic_ids import build_semantic_index, format_stats

        a = self.args
        size = self.codebook_size()
        if a.index_path:
            path = resolve_path(a.index_path)
            if not path.is_file():
                raise FileNotFoundError(f"env.args.index_path ({a.index_path!r}): no such file; build one or unset it")
            return path
        settings = [
            self._data_key,
            a.method,
            a.levels,
            size,
            a.extra_level,
            a.kmeans_backend,
            self.seed,
            a.embed_model,
            *([a.id_embeddings] if a.id_embeddings != "text" else []),  # text: the keys of earlier builds
        ]
        key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
        path = self._cache_dir() / f"index-{key}.json"
        if path.is_file():
            return path
        items = self.data.item_ids
        rule = "" if isinstance(a.codebook_size, int) else f" (codebook_size auto for {len(items):,} items)"
        msg = f"genrec: building the semantic index of {len(items):,} items: {a.method} {a.levels} x {size}{rule}"
        print(msg, file=sys.stderr)
        logger.info(msg)
        start = time.perf_counter()
        with _stage_lines_on_stderr():  # embedding, each k-means level: one timed line each
            index = build_semantic_index(
                items,
                embeddings=self._embeddings(items),
                method=a.method,
                levels=a.levels,
                codebook_size=size,
                seed=self.seed,
                kmeans_backend=a.kmeans_backend,
                extra_level=a.extra_level,
                embed_model=a.embed_model,
            )
        with atomic_path(path) as tmp:
            index.save(tmp)
        msg = f"genrec: index built in {time.perf_counter() - start:.1f} s ({format_stats(index.stats())})"
        print(msg, file=sys.stderr)
        logger.info("%s; cached as %s", msg, path)
        return path

    def _embeddings_file(self, items: list[str]) -> Path:
        """MiniLM embeddings of ``items``' texts, rows in that order, computed once and cached as .npy."""
        import numpy as np

        from rewards.rec.semantic_ids import embed_texts

        key = hashlib.sha256(json.dumps([self._data_key, self.args.embed_model, items]).encode()).hexdigest()[:16]
        path = self._cache_dir() / f"emb-{key}.npy"
        if path.is_file():
            return path
        emb = embed_texts(
            [self.data.item_text(i) for i in items], self.args.embed_model, show_progress_bar=sys.stderr.isatty()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.save(tmp, emb)
        return path

    def _embeddings(self, items: list[str]):
        """[len(items), D] float32: what ``id_embeddings`` names, rows in ``items``' order."""
        import numpy as np

        if self.args.id_embeddings == "sasrec":
            from rewards.rec.baselines import SASRecBaseline

            return sasrec_item_embeddings(SASRecBaseline.load(self.sasrec_file), items)
        if not self.data.items:
            logger.warning(
                "genrec: the data has no item texts, so the semantic IDs quantise embeddings of 'item <id>' "
                "strings; give env.args.data.item_path or set env.args.id_embeddings=sasrec"
            )
        return np.load(self._embeddings_file(items))

    @cached_property
    def index(self):
        from rewards.rec.semantic_ids import SemanticIndex, format_stats

        index = SemanticIndex.load(self.index_file)
        missing = [i for i in self.data.item_ids if i not in index]
        if missing:
            raise ValueError(
                f"env.args.index_path ({self.args.index_path!r}): {len(missing)} catalogue items have no code "
                f"(e.g. {missing[:3]}); build the index on this data or unset index_path"
            )
        logger.info(
            "genrec: semantic index %s: %d levels %s; %s",
            self.index_file, index.levels, index.codebook_sizes, format_stats(index.stats()),
        )  # fmt: skip
        return index

    # ---- datasets
    def prompt(self, ex: Example) -> list[dict[str, str]]:
        return self.prompt_of([x.item for x in ex.history], self.index, self.args.history_cap)

    def prompt_of(self, history: list[str], index, history_cap: int) -> list[dict[str, str]]:
        """``genrec_prompt`` with this env's ``history_item_tokens`` (the ``prompt_fn`` of the beam search)."""
        from rewards.rec.genrec_eval import genrec_prompt

        return genrec_prompt(history, index, history_cap, item_tokens=self.args.history_item_tokens)

    def _rows(self, examples: list[Example]):
        """The GRPO columns of ``examples`` (training and held-out rows alike): prompt, target_item, user,
        history (item ids, oldest first: the teacher reward's input)."""
        from datasets import Dataset

        return Dataset.from_dict(
            {
                "prompt": [self.prompt(ex) for ex in examples],
                "target_item": [ex.target.item for ex in examples],
                "user": [ex.user for ex in examples],
                "history": [[x.item for x in ex.history] for ex in examples],
            }
        )

    def train_dataset(self):
        return self._rows(train_examples(self.split, self.args.num_train_examples))

    def sft_dataset(self, n: int):
        """``n`` examples of the task mix: next-item examples cycle through the training examples, sequence
        examples through ``sequence_examples`` (column ``prompt_loss_from`` marks where their loss starts), the
        alignment tasks through the catalogue (seeded)."""
        from datasets import Dataset

        from rewards.rec.genrec_eval import HISTORY_LEAD

        plan = task_plan(n, self.args.sft_tasks, self.seed)
        examples = {}  # the history tasks' examples, built only for the tasks the plan draws
        if "next_item" in plan:
            examples["next_item"] = train_examples(self.split, self.args.num_train_examples)
        if "sequence" in plan:
            examples["sequence"] = sequence_examples(self.split, self.args.history_cap, self.args.num_train_examples)
        items = self.data.item_ids
        rng = random.Random(self.seed + 1)
        counters = {t: 0 for t in SFT_TASKS}
        prompts, completions, loss_from = [], [], []
        for task in plan:
            j = counters[task]
            counters[task] += 1
            # sequence: the loss also covers the history's IDs after the prompt's lead-in (rl.learner.sft)
            loss_from.append(HISTORY_LEAD if task == "sequence" else None)
            if task in examples:
                ex = examples[task][j % len(examples[task])]
                prompts.append(self.prompt(ex))
                completions.append(self.index.id_string(ex.target.item))
                continue
            item = items[rng.randrange(len(items))]
            if task == "title_to_id":
                prompts.append([{"role": "user", "content": f"Which item is titled: {short_title(self.data, item)}?"}])
                completions.append(self.index.id_string(item))
            else:
                prompts.append(
                    [{"role": "user", "content": f"What is the title of item {self.index.id_string(item)}?"}]
                )
                completions.append(short_title(self.data, item))
        return Dataset.from_dict({"prompt": prompts, "completion": completions, "prompt_loss_from": loss_from})

    def eval_dataset(self):
        """The held-out users (``eval_split``), with the training rows' columns (eval.every_steps)."""
        return self._rows(self.eval_examples())

    def eval_examples(self) -> list[Example]:
        """The held-out examples of ``eval_split`` under the protocol's split, the first ``num_eval_users``."""
        ex = self.split.valid if self.args.eval_split == "valid" else self.split.test
        ex = [e for e in ex if e.target.item in self.index]
        return ex[: self.args.num_eval_users] if self.args.num_eval_users else ex

    # ---- rewards
    def rewards(self) -> list[RewardSpec]:
        kw = {"index_path": str(self.index_file)}
        mod = "rewards.rec.genrec_rewards"
        out = [
            RewardSpec("genrec_rule", f"{mod}:GenRecRuleReward", self.args.rule_weight, dict(kw)),
            RewardSpec("genrec_ranking", f"{mod}:GenRecRankingReward", self.args.ranking_weight, dict(kw)),
            RewardSpec("genrec_validity", f"{mod}:GenRecValidityReward", self.args.validity_weight, dict(kw)),
            RewardSpec("genrec_prefix", f"{mod}:GenRecPrefixReward", self.args.prefix_weight, dict(kw)),
        ]
        if self.args.teacher_weight:
            teacher = {
                "teacher_path": self.teacher_path,
                "k": self.args.teacher_k,
                "credit": self.args.teacher_credit,
            }
            out.append(
                RewardSpec("genrec_teacher", f"{mod}:GenRecTeacherReward", self.args.teacher_weight, kw | teacher)
            )
        if self.args.similarity_weight:
            # rows in the index's own item order (the reward maps generated IDs to index rows)
            emb = {"embeddings_path": str(self._embeddings_file(list(self.index.items)))}
            out.append(
                RewardSpec("genrec_similarity", f"{mod}:GenRecSimilarityReward", self.args.similarity_weight, kw | emb)
            )
        return [c for c in out if c.weight != 0]

    # ---- model preparation and rollout constraint
    def prepare_model(self, model_path: str, run_dir: Path) -> str:
        """Copy the index into ``run_dir``, add the code tokens to ``model_path``'s tokenizer and model
        and save them as ``run_dir/genrec_model`` (once: later calls return the saved model)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rewards.rec.semantic_ids import add_code_tokens, format_stats

        run_dir = Path(run_dir)
        target = run_dir / MODEL_DIR
        index_out = run_dir / INDEX_FILE
        if not index_out.is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(index_out) as tmp:
                shutil.copyfile(self.index_file, tmp)
        index = self.index
        msg = f"genrec: semantic index {index.levels} levels {index.codebook_sizes}; {format_stats(index.stats())}"
        print(msg)  # every run and every eval, the cached index included
        logger.info("%s (run copy %s)", msg, index_out)  # relay.log exists by now (the index loads at preflight)
        if (target / "config.json").is_file():
            return str(target)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        ids = add_code_tokens(tokenizer, model, index, seed=self.seed, item_tokens=self.args.history_item_tokens)
        with atomic_path(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        logger.info("genrec: %d code (and item) tokens added; prepared model %s", len(ids), target)
        return str(target)

    def trainable_token_ids(self, model_path: str) -> list[int]:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        return [int(i) for i in tokenizer.convert_tokens_to_ids(self.index.all_tokens())]

    def run_index_file(self, run_dir: Path) -> Path:
        path = Path(run_dir) / INDEX_FILE
        return path if path.is_file() else self.index_file

    def logits_processors(self, run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
        return [("rewards.rec.trie:trie_constraint", {"index_path": str(self.run_index_file(run_dir).resolve())})]

    def token_teacher(self, run_dir: Path) -> tuple[str, dict[str, Any]]:
        """SASRec (``teacher_path``: the run's own, or the ensemble of ``teacher_seeds``) through the ID trie,
        for ``algorithm.distill_coef`` and ``sft.distill_coef`` (``rewards.rec.genrec_teacher``)."""
        index_path = str(self.run_index_file(run_dir).resolve())
        return (
            "rewards.rec.genrec_teacher:trie_teacher",
            {"index_path": index_path, "teacher_path": self.teacher_path},
        )

    @property
    def teacher_path(self) -> str | list[str]:
        """The teacher's SASRec file, or the files of its ensemble (``teacher_seeds``), trained if not cached."""
        seeds = self.args.teacher_seeds
        if seeds is None:
            return str(self.sasrec_file)
        return [str(self._sasrec_file(s)) for s in seeds]

    # ---- evaluation
    def _rename(self, row: dict[str, float]) -> dict[str, float]:
        """Baseline rows come as recall@k; the protocol may call it hr@k (the same number)."""
        hit = self.args.spec.hit_name
        return {(f"{hit}@{k[7:]}" if k.startswith("recall@") else k): v for k, v in row.items()}

    @cached_property
    def sasrec_file(self) -> Path:
        """SASRec trained on this split's training part (early-stopped on validation), cached per (data,
        protocol, seed, epochs): the eval's ``sasrec`` row and, unless ``teacher_seeds``, the teacher."""
        return self._sasrec_file(self.seed)

    def _sasrec_file(self, seed: int) -> Path:
        from rewards.rec.baselines import SASRecBaseline, SASRecConfig

        settings = [self._data_key, self.args.protocol, seed, self.args.sasrec_epochs]
        key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
        path = self._cache_dir() / f"sasrec-{key}.pt"
        if path.is_file():
            return path
        msg = (
            f"genrec: training SASRec (seed {seed}) on the {self.args.protocol} split's training part "
            f"(max {self.args.sasrec_epochs} epochs)"
        )
        print(msg, file=sys.stderr)
        logger.info(msg)
        sas = SASRecBaseline(self.data.item_ids, SASRecConfig(max_epochs=self.args.sasrec_epochs, seed=seed))
        with _stage_lines_on_stderr("rewards.rec.baselines"):  # one line per epoch
            sas.fit(self.split.train, self.split.valid)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            sas.save(tmp)
        msg = f"genrec: SASRec trained in {sas.train_seconds:.1f} s (best epoch {sas.best_epoch}); cached as {path}"
        print(msg, file=sys.stderr)
        logger.info(msg)
        return path

    def baselines(self, examples: list[Example]) -> dict[str, dict[str, float]]:
        """Popularity and SASRec (early-stopped on validation, ``sasrec_file``) on the same split, full catalogue;
        with ``teacher_seeds``, also ``sasrec_ensemble`` (the teacher)."""
        from rewards.rec.baselines import PopularityBaseline, SASRecBaseline, evaluate_scores, load_teacher

        catalog = self.data.item_ids
        pop = PopularityBaseline(catalog).fit(self.split.train)
        sas = SASRecBaseline.load(self.sasrec_file)
        cap, ks = self.args.history_cap, self.args.spec.ks
        out = {
            "popularity": self._rename(evaluate_scores(pop.scores, examples, catalog, ks=ks, history_cap=cap)),
            # SASRec reads up to its own max_len (50) items, as RecBole runs it; the prompt cap is the LLM's
            "sasrec": self._rename(evaluate_scores(sas.scores, examples, catalog, ks=ks, history_cap=None)),
        }
        if self.args.teacher_seeds is not None:
            ens = load_teacher(self.teacher_path)
            out["sasrec_ensemble"] = self._rename(
                evaluate_scores(ens.scores, examples, catalog, ks=ks, history_cap=None)
            )
        return out

    def eval_protocol(self, max_prompts: int | None = None) -> str:
        """One line: protocol, split, eval split and its size, ranking, history cap, metrics."""
        p, a = self.args.spec, self.args
        examples = self.eval_examples()[: max_prompts or None]
        users = len({e.user for e in examples})
        if p.split == "chronological":
            split = (
                f"chronological 8:1:1 split of all {self.data.num_interactions:,} interactions ordered "
                f"{split_order(self.data)}: first 80% train, next 10% valid, last 10% test, an example = a held-out "
                "item with the user's whole earlier history"
            )
            size = f"{len(examples):,} examples of {users:,} users"
            unit = "examples"
        else:
            split = "leave-one-out split (last item = test, second-to-last = valid)"
            size = f"{users:,} users"
            unit = "users"
        hit = "Recall" if p.hit_name == "recall" else "HR"
        cuts = "/".join(map(str, p.ks))
        return (
            f"{p.name} ({p.papers}): {split}; {a.eval_split} targets of {size}; ranking: full catalogue of "
            f"{self.data.num_items:,} items by constrained beam search with {a.num_beams} beams (ranks per item), "
            f"baselines popularity and SASRec score every item (pessimistic ties); history cap {a.history_cap} "
            f"(SASRec: its own 50); "
            f"metrics {hit}@{cuts}, NDCG@{cuts}; rl-sft: mean difference over the same {unit} with a paired "
            f"bootstrap {1 - BOOTSTRAP_ALPHA:.0%} CI ({BOOTSTRAP_RESAMPLES} resamples)"
        )

    def evaluate(self, policies: dict, out_dir: Any, max_prompts: int | None = None) -> dict:
        """eval.json rows ``popularity``, ``sasrec``, then ``sft`` (the start policy when the run made an SFT
        warm start, else ``start``) and ``rl`` (the trained adapter) with the protocol's metrics
        (tiger: recall@5/10, ndcg@5/10; minionerec: hr@3/5/10, ndcg@3/5/10) and ``n``; then ``rl-sft`` (or
        ``rl-start``): the mean per-user difference of ndcg@10 and recall@10 / hr@10 with its paired
        bootstrap 95% CI in ``ci95``. Per-example ranks of every policy go to ``OUT/genrec_ranks.json``."""
        from rewards.rec.genrec_eval import genrec_ranks, metrics_from_ranks
        from rewards.rec.metrics import paired_rank_difference
        from rewards.rec.semantic_ids import SemanticIndex

        out = Path(out_dir)
        p = self.args.spec
        examples = self.eval_examples()[:max_prompts] if max_prompts else self.eval_examples()
        results = self.baselines(examples)
        # The run's own files (its SFT model, its copy of the index) sit beside the start model; ``out`` is
        # RUN_DIR/eval-<hash>/ when `relay eval RUN` has overrides (e.g. env.args.eval_split=test).
        start_model = Path(getattr(policies.get("start"), "model_path", out / "genrec_model"))
        index = SemanticIndex.load(self.run_index_file(start_model.parent))
        names = {"start": "sft" if start_model.name == "sft_model" else "start", "trained": "rl"}
        ranks: dict[str, Any] = {}
        for name, generate in policies.items():
            engine = getattr(generate, "engine", None)
            if engine is None:
                raise TypeError(
                    f"policy {name!r} has no .engine; genrec evaluates by beam search on the model itself "
                    "(rl.evaluate.policy attaches it)"
                )
            row = names.get(name, name)
            start = time.perf_counter()
            ranks[row] = genrec_ranks(
                engine.model,
                engine.tokenizer,
                index,
                examples,
                num_beams=self.args.num_beams,
                history_cap=self.args.history_cap,
                batch_size=self.args.eval_batch_size,
                prompt_fn=self.prompt_of,
                progress=sys.stderr.isatty(),
                desc=f"genrec beam search {row}",
            )
            logger.info(
                "genrec: beam search %s %d %s in %.1f s (%d beams)", row, len(ranks[row]),
                "users" if p.split == "leave_one_out" else "examples", time.perf_counter() - start,
                self.args.num_beams,
            )  # fmt: skip
            results[row] = metrics_from_ranks(ranks[row], p.ks, p.hit_name)
        base = names["start"]
        if "rl" in ranks and base in ranks:
            results[f"rl-{base}"] = paired_rank_difference(
                ranks["rl"], ranks[base], ("ndcg@10", f"{p.hit_name}@10"),
                n_resamples=BOOTSTRAP_RESAMPLES, seed=self.seed, alpha=BOOTSTRAP_ALPHA,
            )  # fmt: skip
        record = {
            "protocol": p.name,
            "eval_split": self.args.eval_split,
            "examples": [[e.user, e.target.item] for e in examples if e.target.item in index],
            "ranks": {k: [None if v == float("inf") else int(v) for v in r] for k, r in ranks.items()},
        }
        atomic_write_text(out / "genrec_ranks.json", json.dumps(record) + "\n")
        return results
