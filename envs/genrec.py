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
   and the RL model, plus popularity and SASRec trained on the same split. Protocol: docs/genrec.md.

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
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from envs.duet import DataArgs, data_report, load_data, resolve_path
from rewards.rec.data import Example, RecData, Split, leave_one_out
from rewards.spec import RewardSpec
from rl.atomic import atomic_path
from rl.env_api import Env, EnvArgs

logger = logging.getLogger("relay")

INDEX_FILE = "semantic_index.json"
MODEL_DIR = "genrec_model"
SFT_TASKS = ("next_item", "title_to_id", "id_to_title")


class GenRecArgs(EnvArgs):
    data: DataArgs = Field(
        default_factory=DataArgs,
        description="Interactions and item texts: LC-Rec JSON (default: the bundled 300-user Amazon Scientific "
        "subset) or P5 (format=p5, path=user_sequence.txt, item_path=item texts 'item_id<space>text').",
    )
    method: Literal["rq_kmeans", "rq_vae"] = Field("rq_kmeans", description="Semantic-ID quantiser.")
    levels: int = Field(3, ge=1, le=8, description="Code levels before the disambiguation level.")
    codebook_size: int = Field(
        16, ge=2, description="Codes per level (16 suits a ~1.4k-item catalogue; 256 for tens of thousands)."
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
    history_cap: int = Field(20, ge=1, description="Most recent history items in a prompt (the protocol's cap).")
    num_train_examples: int | None = Field(
        None, ge=1, description="Cap on leave-one-out training examples (every prefix of each train sequence)."
    )
    eval_split: Literal["valid", "test"] = Field("valid", description="Held-out examples `relay eval` scores.")
    num_eval_users: int | None = Field(None, ge=1, description="Evaluate at most this many users (default: all).")
    num_beams: int = Field(10, ge=1, description="Beam width of the constrained beam-search evaluation (>= 10).")
    eval_batch_size: int = Field(16, ge=1, description="Prompts per beam-search batch.")
    sft_tasks: dict[str, float] = Field(
        default_factory=lambda: {"next_item": 0.8, "title_to_id": 0.1, "id_to_title": 0.1},
        description="SFT task mix (weights): next_item (history -> next ID), title_to_id, id_to_title (LC-Rec).",
    )
    rule_weight: float = Field(1.0, description="Weight of the rule reward (1 if the generated ID is the target).")
    ranking_weight: float = Field(1.0, description="Weight of MiniOneRec's ranking penalty of wrong samples.")
    validity_weight: float = Field(0.1, description="Weight of the validity reward (1 for a catalogue ID).")
    prefix_weight: float = Field(
        0.0, description="Weight of the prefix reward (share of the target's leading code levels matched; 0 = off)."
    )
    sasrec_epochs: int = Field(40, ge=1, description="SASRec baseline: max epochs (early stopping on validation).")

    @field_validator("sft_tasks")
    @classmethod
    def _known_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(SFT_TASKS))
        if unknown:
            raise ValueError(f"unknown SFT task(s) {unknown}; use {', '.join(SFT_TASKS)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("task weights must be >= 0 with a positive sum, e.g. {next_item: 1}")
        return v

    @field_validator("num_beams")
    @classmethod
    def _beams_cover_k(cls, v: int) -> int:
        if v < 10:
            raise ValueError("must be >= 10: Recall@10 / NDCG@10 rank within the beams; set num_beams=10")
        return v


# ------------------------------------------------------------------------------------- pure helpers


def train_examples(split: Split, cap: int | None = None) -> list[Example]:
    """Leave-one-out training examples: every prefix of each user's train sequence predicts its next item."""
    out = []
    for seq in split.train.values():
        for t in range(1, len(seq)):
            out.append(Example(tuple(seq[:t]), seq[t]))
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


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


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
        return leave_one_out(self.data)

    def _cache_dir(self) -> Path:
        return Path(self.args.cache_dir or Path(tempfile.gettempdir()) / "relay-genrec").expanduser()

    def _data_key(self) -> str:
        self.data  # noqa: B018  a missing or malformed data file: a DataError (file:line, fix) before any stat
        d = self.args.data
        parts = [d.format, _file_key(resolve_path(d.path))]
        if d.item_path:
            parts.append(_file_key(resolve_path(d.item_path)))
        return "|".join(parts)

    @cached_property
    def index_file(self) -> Path:
        """The semantic index this env uses: ``index_path``, else a cached build (built on first use)."""
        from rewards.rec.semantic_ids import build_semantic_index, format_stats

        a = self.args
        if a.index_path:
            path = resolve_path(a.index_path)
            if not path.is_file():
                raise FileNotFoundError(f"env.args.index_path ({a.index_path!r}): no such file; build one or unset it")
            return path
        settings = [
            self._data_key(),
            a.method,
            a.levels,
            a.codebook_size,
            a.extra_level,
            a.kmeans_backend,
            self.seed,
            a.embed_model,
        ]
        key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
        path = self._cache_dir() / f"index-{key}.json"
        if path.is_file():
            return path
        items = self.data.item_ids
        index = build_semantic_index(
            items,
            embeddings=self._embeddings(items),
            method=a.method,
            levels=a.levels,
            codebook_size=a.codebook_size,
            seed=self.seed,
            kmeans_backend=a.kmeans_backend,
            extra_level=a.extra_level,
            embed_model=a.embed_model,
        )
        with atomic_path(path) as tmp:
            index.save(tmp)
        logger.info("semantic index %s: %s", path, format_stats(index.stats()))
        return path

    def _embeddings(self, items: list[str]):
        import numpy as np

        from rewards.rec.semantic_ids import embed_texts

        key = hashlib.sha256(json.dumps([self._data_key(), self.args.embed_model, items]).encode()).hexdigest()[:16]
        path = self._cache_dir() / f"emb-{key}.npy"
        if path.is_file():
            return np.load(path)
        emb = embed_texts([self.data.item_text(i) for i in items], self.args.embed_model)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.save(tmp, emb)
        return emb

    @cached_property
    def index(self):
        from rewards.rec.semantic_ids import SemanticIndex

        index = SemanticIndex.load(self.index_file)
        missing = [i for i in self.data.item_ids if i not in index]
        if missing:
            raise ValueError(
                f"env.args.index_path ({self.args.index_path!r}): {len(missing)} catalogue items have no code "
                f"(e.g. {missing[:3]}); build the index on this data or unset index_path"
            )
        return index

    # ---- datasets
    def prompt(self, ex: Example) -> list[dict[str, str]]:
        from rewards.rec.genrec_eval import genrec_prompt

        return genrec_prompt([x.item for x in ex.history], self.index, self.args.history_cap)

    def train_dataset(self):
        from datasets import Dataset

        examples = train_examples(self.split, self.args.num_train_examples)
        return Dataset.from_dict(
            {
                "prompt": [self.prompt(ex) for ex in examples],
                "target_item": [ex.target.item for ex in examples],
                "user": [ex.user for ex in examples],
            }
        )

    def sft_dataset(self, n: int):
        """``n`` examples of the task mix: next-item examples cycle through the training examples, the
        alignment tasks through the catalogue (seeded)."""
        from datasets import Dataset

        examples = train_examples(self.split, self.args.num_train_examples)
        items = self.data.item_ids
        rng = random.Random(self.seed + 1)
        counters = {t: 0 for t in SFT_TASKS}
        prompts, completions = [], []
        for task in task_plan(n, self.args.sft_tasks, self.seed):
            j = counters[task]
            counters[task] += 1
            if task == "next_item":
                ex = examples[j % len(examples)]
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
        return Dataset.from_dict({"prompt": prompts, "completion": completions})

    def eval_dataset(self):
        """The held-out users (``eval_split``), with the training rows' columns (eval.every_steps)."""
        from datasets import Dataset

        examples = self.eval_examples()
        return Dataset.from_dict(
            {
                "prompt": [self.prompt(ex) for ex in examples],
                "target_item": [ex.target.item for ex in examples],
                "user": [ex.user for ex in examples],
            }
        )

    def eval_examples(self) -> list[Example]:
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
        if (target / "config.json").is_file():
            return str(target)
        index = self.index
        msg = f"genrec: semantic index {index.levels} levels {index.codebook_sizes}; {format_stats(index.stats())}"
        print(msg)
        logger.info("%s (saved to %s)", msg, index_out)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        ids = add_code_tokens(tokenizer, model, index, seed=self.seed)
        with atomic_path(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        logger.info("genrec: %d code tokens added; prepared model %s", len(ids), target)
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

    # ---- evaluation
    def baselines(self, examples: list[Example]) -> dict[str, dict[str, float]]:
        """Popularity and SASRec (early-stopped on validation) on the same split, full catalogue."""
        from rewards.rec.baselines import PopularityBaseline, SASRecBaseline, SASRecConfig, evaluate_scores

        catalog = self.data.item_ids
        train = self.split.train
        pop = PopularityBaseline(catalog).fit(train)
        sas = SASRecBaseline(catalog, SASRecConfig(max_epochs=self.args.sasrec_epochs, seed=self.seed))
        sas.fit(train, self.split.valid)
        cap = self.args.history_cap
        return {
            "popularity": evaluate_scores(pop.scores, examples, catalog, history_cap=cap),
            "sasrec": evaluate_scores(sas.scores, examples, catalog, history_cap=cap),
        }

    def evaluate(self, policies: dict, out_dir: Any, max_prompts: int | None = None) -> dict:
        """eval.json rows ``popularity``, ``sasrec``, then ``sft`` (the start policy when the run made an SFT
        warm start, else ``start``) and ``rl`` (the trained adapter): recall@5/10, ndcg@5/10, n."""
        from rewards.rec.genrec_eval import evaluate_genrec
        from rewards.rec.semantic_ids import SemanticIndex

        out = Path(out_dir)
        examples = self.eval_examples()[:max_prompts] if max_prompts else self.eval_examples()
        results = self.baselines(examples)
        index = SemanticIndex.load(self.run_index_file(out))
        names = {"start": "sft" if (out / "sft_model" / "config.json").is_file() else "start", "trained": "rl"}
        for name, generate in policies.items():
            engine = getattr(generate, "engine", None)
            if engine is None:
                raise TypeError(
                    f"policy {name!r} has no .engine; genrec evaluates by beam search on the model itself "
                    "(rl.evaluate.policy attaches it)"
                )
            results[names.get(name, name)] = evaluate_genrec(
                engine.model,
                engine.tokenizer,
                index,
                examples,
                num_beams=self.args.num_beams,
                history_cap=self.args.history_cap,
                batch_size=self.args.eval_batch_size,
            )
        return results
