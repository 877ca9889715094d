"""Every group-based algorithm trains through config alone: the adapter changes, metrics are finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def run_of(tmp_path_factory, ray_cluster):
    """``run_of(name)``: the run dir of a 2-step letters run with ``algorithm.name=name`` (each trained once)."""
    from rl.config import load_config
    from rl.driver import train

    runs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in runs:
            cfg = load_config(
                Path(__file__).resolve().parents[2] / "configs" / "letters.yaml",
                [
                    f"algorithm.name={name}",
                    "learner.max_steps=2",
                    "rollout.max_new_tokens=8",
                    "logging.progress_bar=false",
                    "logging.tensorboard=false",
                    "checkpoint.every_steps=1",
                    "checkpoint.keep=3",
                    *(["algorithm.kl_coef=0.05"] if name == "reinforce_pp" else []),
                ],
            )  # algorithm.kl_coef: only reinforce_pp reads it
            runs[name] = train(cfg, tmp_path_factory.mktemp(name) / "run")
        return runs[name]

    return get


def _keys(run_dir: Path) -> set[str]:
    return {k for line in (run_dir / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp", "ppo"])
def test_algorithm_runs_and_moves_the_adapter(name, run_of):
    import torch
    from safetensors.torch import load_file

    run_dir = run_of(name)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert math.isfinite(r["loss"]) and math.isfinite(r["reward"]) and math.isfinite(r["grad_norm"])
    first = load_file(str(run_dir / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors"))
    last = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any(not torch.equal(first[k], last[k]) for k in first), "the adapter did not move"


# What only one learner writes: TRL's own GRPO statistics, and PPO's value-head / KL-in-reward terms.
GRPO_ONLY = {
    "clip_ratio/high_max", "clip_ratio/high_mean", "clip_ratio/low_mean", "clip_ratio/low_min",
    "clip_ratio/region_mean", "completions/max_length", "completions/min_length", "completions/max_terminated_length",
    "completions/mean_terminated_length", "completions/min_terminated_length", "entropy", "epoch",
    "frac_reward_zero_std", "num_tokens",
}  # fmt: skip
PPO_ONLY = {
    "clipfrac", "kl", "kl_penalty", "n_unscored", "policy_drift_kl", "policy_loss", "returns/mean", "value_loss",
    "values/explained_variance", "values/mean",
}  # fmt: skip


@pytest.mark.slow
def test_grpo_and_ppo_write_one_metric_vocabulary(run_of):
    """The rollout, reward-pool and throughput metrics have the same keys whichever learner wrote them."""
    grpo, ppo = _keys(run_of("grpo")), _keys(run_of("ppo"))
    assert grpo - GRPO_ONLY == ppo - PPO_ONLY, sorted((grpo - GRPO_ONLY) ^ (ppo - PPO_ONLY))
    assert {"rollout/token_hash", "rollout/mismatch_kl", "rewards/letter_fraction/n_failed", "step_time"} <= grpo & ppo
