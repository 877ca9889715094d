"""What a learner is given (``Session``), what a learner is (``Learner``), and the one table that picks it.

The run (``rl.driver``) builds the pools and hands the learner a frozen ``Session``; a learner only reads
it, and never imports the run. The table names each learner as ``module:Class`` so choosing one imports
only that learner (TRL for the GRPO family, Ray Train for the data-parallel one).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rl.preflight import Plan


@dataclass(frozen=True)
class Session:
    """One run's inputs to its learner: built once by the run, read-only afterwards."""

    plan: Plan  # config, env, train/eval datasets, reward components (rl.preflight)
    run_dir: Path  # where checkpoints/, metrics.jsonl, adapter/ and summary.json go
    model_path: str  # the base model every process loads (after env.prepare_model and the SFT warm start)
    rollout_pool: Any  # rl.rollout.pool.RolloutPool: generation on the rollout actors
    reward_pools: tuple[Any, ...]  # rewards.pool.RewardPool per component (name, weight: pool.spec)
    resume_from: Path | None = None  # the checkpoint to continue from (relay resume), or None
    callbacks: tuple[Any, ...] = ()  # extra transformers TrainerCallbacks (the watchdog's, a test's)
    learner_gpus: float = 0.0  # GPUs per data-parallel learner worker (0: CPU, gloo)
    actor_env: dict[str, str] = field(default_factory=dict)  # env vars for learner worker processes
    # LoraConfig kwargs every copy of the policy shares (rl.adapter.policy_lora_kwargs: the learner's and the
    # rollout actors'), so their state-dict keys match; keyword-only and required, so no learner can fall back to
    # cfg.lora's and drop what the run added (lora.train_env_tokens' embedding rows).
    lora: dict[str, Any] = field(kw_only=True)

    @property
    def cfg(self):  # -> rl.config.RelayConfig
        return self.plan.cfg


@runtime_checkable
class Learner(Protocol):
    """Trains ``session`` to ``learner.max_steps``; writes checkpoints, metrics.jsonl, adapter/ and
    summary.json into ``session.run_dir``; returns the summary (None on a non-zero data-parallel rank)."""

    def train(self, session: Session) -> dict[str, Any] | None: ...


# learner key -> "module:Class". ``learner_key`` says which key a config selects.
LEARNERS: dict[str, str] = {
    "grpo": "rl.learner.grpo_train:GRPOLearner",  # TRL's GRPOTrainer; every algorithm.name but ppo
    "grpo-data-parallel": "rl.learner.ddp:DataParallelLearner",  # the same, in learner.num_workers Ray Train workers
    "ppo": "rl.learner.ppo:PPOLearner",  # Relay's PPO loop: value head, GAE, clipped losses
}


def learner_key(cfg) -> str:
    """The ``LEARNERS`` key ``cfg`` selects (the config validator rejects PPO with learner.num_workers > 1)."""
    if cfg.algorithm.name == "ppo":
        return "ppo"
    return "grpo-data-parallel" if cfg.learner.num_workers > 1 else "grpo"


def build_learner(cfg) -> Learner:
    module, _, name = LEARNERS[learner_key(cfg)].partition(":")
    return getattr(importlib.import_module(module), name)()
