"""The env contract and its registry.

An env builds a ``datasets.Dataset`` with a ``prompt`` column (chat messages) plus context columns
that reward functions receive as keyword arguments, and declares its reward components and
weights. Envs live in ``envs/``; ``rl/`` finds them by name (lazy import strings), never imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from rewards.spec import RewardSpec
from rl.registry import Registry


class EnvArgs(BaseModel):
    """Base of every env's argument schema (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")


class Env:
    """Base class. Subclasses set ``Args`` and implement ``train_dataset`` and ``rewards``."""

    Args: ClassVar[type[EnvArgs]] = EnvArgs

    def __init__(self, args: EnvArgs, seed: int = 0):
        self.args = args
        self.seed = seed

    def train_dataset(self):  # -> datasets.Dataset
        raise NotImplementedError

    def eval_dataset(self):  # -> datasets.Dataset | None
        return None

    def rewards(self) -> list[RewardSpec]:
        raise NotImplementedError

    def sft_dataset(self, n: int):  # -> datasets.Dataset with `prompt` (messages) and `completion` (str)
        """Examples for a supervised warm start (``sft.steps > 0``); envs without one raise."""
        raise NotImplementedError(f"env {type(self).__name__} has no SFT data; set sft.steps=0")

    def data_report(self) -> dict[str, Any] | None:
        """What the env's data loaders skipped (e.g. malformed lines with ``env.args.data.on_error: skip``),
        written by the driver to ``RUN_DIR/data_report.json``; None: nothing to report."""
        return None

    def prepare_model(self, model_path: str, run_dir: Path) -> str:
        """The model the run starts from, made from ``model_path`` before the SFT warm start.

        Default: ``model_path`` unchanged. An env that needs extra tokens (e.g. semantic item IDs)
        writes a modified copy into ``run_dir`` and returns its path. Must be idempotent: the driver
        calls it on resume and evaluation calls it again to find the same model.
        """
        return model_path

    def trainable_token_ids(self, model_path: str) -> list[int]:
        """Token ids whose embedding rows a LoRA warm start must train (PEFT ``trainable_token_indices``)."""
        return []

    def logits_processors(self, run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
        """Extra logits processors for the rollout engines, as ``("module:factory", kwargs)`` specs.

        ``factory(tokenizer, **kwargs)`` is called once per engine and returns an object with
        ``for_batch(prompt_length) -> transformers.LogitsProcessor`` (HF engine, one per generate batch,
        placed before the seeded sampler) and optionally ``for_request() -> (output_ids, logits) -> logits``
        (vLLM). Default: none.
        """
        return []

    def token_teacher(self, run_dir: Path) -> tuple[str, dict[str, Any]] | None:
        """The env's token-level teacher for on-policy distillation (``algorithm.distill_coef``), as a
        ``("module:factory", kwargs)`` spec, or None (the default: the env has none).

        ``factory(tokenizer, **kwargs)`` runs once in the learner and returns a ``TokenTeacher``
        (``rl.algos.distill``): ``log_probs(input_ids [B, T], logits_to_keep L, vocab_size V) -> [B, L, V]``,
        the teacher's log-probabilities of the next token at each completion position (``-inf`` = none).
        """
        return None

    def evaluate(self, policies: dict[str, Any], out_dir: Any, max_prompts: int | None = None) -> dict[str, Any]:
        """Score each policy (name -> ``generate(list_of_prompts) -> list[str]``) on the env's eval set.

        ``policies`` maps names such as ``start`` and ``trained`` to generation functions; each also
        carries ``.engine`` (the ``HFEngine`` with the policy's model, tokenizer and adapter) for envs
        that decode their own way (e.g. beam search). Returns
        ``{name: {metric: value}}`` (the env may add rows, e.g. ``raw``); written as eval.json.
        """
        raise NotImplementedError(f"env {type(self).__name__} has no evaluation")

    def eval_protocol(self, max_prompts: int | None = None) -> str | None:
        """One line naming what ``evaluate`` measures (data, split, decoding, metric rules), printed above
        every eval table so a number is never read without its protocol. Default: none stated."""
        return None


ENVS: Registry[type[Env]] = Registry("env")
ENVS.register("letters", "envs.letters:LettersEnv")
ENVS.register("reprompt", "envs.reprompt:RePromptEnv")
ENVS.register("duet", "envs.duet:DuetEnv")
ENVS.register("genrec", "envs.genrec:GenRecEnv")


def env_arg_problems(env_cls: type[Env], args: dict[str, Any], prefix: str = "env.args") -> list[str]:
    """Validate ``args`` against ``env_cls.Args``; each problem names the dotted field and the fix."""
    try:
        env_cls.Args.model_validate(args)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            dotted = ".".join([prefix, *map(str, err["loc"])])
            if err["type"] == "extra_forbidden":
                known = ", ".join(env_cls.Args.model_fields)
                out.append(f"{dotted}: unknown argument for this env; known: {known}")
            else:
                out.append(f"{dotted} ({err.get('input')!r}): {err['msg']}; change the value")
        return out
    return []


def build_env(name: str, args: dict[str, Any], seed: int) -> Env:
    env_cls = ENVS.resolve(name)
    return env_cls(env_cls.Args.model_validate(args), seed=seed)
