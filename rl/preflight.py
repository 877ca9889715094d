"""Preflight: everything about a run that can be checked without side effects (config, env arguments,
reward references, the dataset, the tokenizer), checked before the run directory is created."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rewards.spec import RewardSpec
from rl.config import ConfigError, DataError, RelayConfig
from rl.env_api import ENVS, Env, build_env, env_arg_problems
from rl.registry import RegistryError

logger = logging.getLogger("relay")


@dataclass
class Plan:
    """What preflight established: the env, its dataset and the resolved reward components."""

    cfg: RelayConfig
    env: Env
    train_dataset: Any
    rewards: list[RewardSpec]
    eval_dataset: Any = None  # the held-out split eval.every_steps generates on (None: off)


def reward_specs(cfg: RelayConfig, env: Env) -> list[RewardSpec]:
    """The run's reward components, each a complete ``RewardSpec`` (function, weight, pool settings):
    the config's ``rewards.functions``, or the env's own when there are none. A config entry named like an
    env component and without a ``source`` keeps the env's function and kwargs (its own kwargs merged on
    top), so pool settings such as timeout_s can be changed without restating the env's arguments."""
    if not cfg.rewards.functions:
        return env.rewards()
    env_rewards = {c.name: c for c in env.rewards()}
    out = []
    for f in cfg.rewards.functions:
        base = env_rewards.get(f.name) if f.source is None else None
        source, kwargs = (base.source, {**base.kwargs, **f.kwargs}) if base else (f.source or f.name, dict(f.kwargs))
        out.append(RewardSpec(
            name=f.name, source=source, weight=f.weight, kwargs=kwargs, num_workers=f.num_workers,
            timeout_s=f.timeout_s, max_retries=f.max_retries, num_cpus=f.num_cpus, num_gpus=f.num_gpus,
            resources=dict(f.resources), runtime_env=f.runtime_env.to_ray(),
        ))  # fmt: skip
    return out


def tokenizer_problems(cfg: RelayConfig) -> list[str]:
    """The policy's tokenizer must load and carry a chat template (prompts are chat messages)."""
    if cfg.model.name == "tiny":
        return []  # built by Relay, with a template
    from rl import packaged_models

    if packaged_models.is_packaged(cfg.model.name):  # converted by Relay, with the model's own template
        return packaged_models.problems(cfg.model.name, cfg.model.cache_dir)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model.name)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [
            f"model.name ({cfg.model.name!r}): the tokenizer does not load ({first}); "
            "give a local model directory or a reachable hub id"
        ]
    if not getattr(tokenizer, "chat_template", None):
        return [
            f"model.name ({cfg.model.name!r}): the tokenizer has no chat template; use an instruct/chat model "
            "or add a chat_template to its tokenizer_config.json"
        ]
    return []


def preflight(cfg: RelayConfig) -> Plan:
    """Resolve the env, its dataset and every reward function; collect all problems."""
    from rewards.registry import check_reward

    problems: list[str] = []
    try:
        env_cls = ENVS.resolve(cfg.env.name)
    except RegistryError as exc:
        raise ConfigError([f"env.name ({cfg.env.name!r}): {exc}"]) from None
    problems += env_arg_problems(env_cls, cfg.env.args)
    if problems:
        raise ConfigError(problems)
    env = build_env(cfg.env.name, cfg.env.args, cfg.seed)
    components = reward_specs(cfg, env)  # may read the env's data (genrec: its index): DataError, exit 2
    if not components:  # TRL's trainers refuse an empty reward list with a traceback
        problems.append(
            f"env {cfg.env.name!r}: no reward component is left (every reward weight in env.args is 0, and "
            "rewards.functions is empty); give one reward a weight > 0 or list one under rewards.functions"
        )
    runtime_envs = {f.name: f.runtime_env for f in cfg.rewards.functions}
    for i, comp in enumerate(components):
        field = f"rewards.functions.{i}" if cfg.rewards.functions else f"env {cfg.env.name!r} reward {comp.name!r}"
        try:
            check_reward(comp.source, comp.kwargs)
        except (RegistryError, TypeError, ValueError) as exc:
            renv = runtime_envs.get(comp.name)
            if renv is not None and renv.declares_code() and isinstance(exc.__cause__, ImportError):
                # Importable only inside the reward's runtime env: its actors check it when the pools start.
                logger.warning(
                    "%s (%r): not importable here (%s); it will be checked by its actors inside their "
                    "runtime_env %s", field, comp.source, exc.__cause__, sorted(renv.to_ray()))  # fmt: skip
            else:
                problems.append(f"{field} ({comp.source!r}): {exc}")
    try:
        dataset = env.train_dataset()
    except DataError as exc:  # a malformed data file: its own file:line problems and fix
        problems += exc.problems
        dataset = None
    except (OSError, ValueError) as exc:
        problems.append(f"env.args: building the {cfg.env.name!r} dataset failed: {exc}")
        dataset = None
    if dataset is not None:
        if "prompt" not in dataset.column_names:
            problems.append(
                f"env {cfg.env.name!r}: its dataset has no 'prompt' column (columns: {dataset.column_names})"
            )
        if len(dataset) == 0:
            problems.append(f"env {cfg.env.name!r}: the training dataset is empty; check env.args")
    problems += tokenizer_problems(cfg)
    if cfg.sft.steps:
        try:
            env.sft_dataset(2)
        except NotImplementedError as exc:
            problems.append(f"sft.steps ({cfg.sft.steps}): {exc}")
    if cfg.algorithm.distill_coef > 0 and type(env).token_teacher is Env.token_teacher:
        problems.append(
            f"algorithm.distill_coef ({cfg.algorithm.distill_coef}): env {cfg.env.name!r} has no token teacher "
            "to distil from (Env.token_teacher); set algorithm.distill_coef=0 or use an env that has one (genrec)"
        )
    if cfg.sft.distill_coef > 0 and type(env).token_teacher is Env.token_teacher:
        problems.append(
            f"sft.distill_coef ({cfg.sft.distill_coef}): env {cfg.env.name!r} has no token teacher to distil from "
            "(Env.token_teacher); set sft.distill_coef=0 or use an env that has one (genrec)"
        )
    if cfg.lora.train_env_tokens and type(env).trainable_token_ids is Env.trainable_token_ids:
        problems.append(
            f"lora.train_env_tokens (True): env {cfg.env.name!r} adds no tokens of its own (Env.trainable_token_ids); "
            "set lora.train_env_tokens=false or use an env that adds tokens (genrec)"
        )
    from rl.learner.periodic_eval import eval_problems

    eval_issues, eval_dataset = eval_problems(cfg, env)  # eval.every_steps needs a held-out split
    problems += eval_issues
    if problems:
        raise ConfigError(problems)
    return Plan(cfg=cfg, env=env, train_dataset=dataset, rewards=components, eval_dataset=eval_dataset)
