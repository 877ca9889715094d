"""Every group-based algorithm trains through config alone: the adapter changes, metrics are finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp", "ppo"])
def test_algorithm_runs_and_moves_the_adapter(name, tmp_path, ray_cluster):
    import torch
    from safetensors.torch import load_file

    from rl.config import load_config
    from rl.driver import train

    cfg = load_config(
        Path(__file__).resolve().parents[2] / "configs" / "letters.yaml",
        [f"algorithm.name={name}", "learner.max_steps=2", "rollout.max_new_tokens=8",
         "logging.progress_bar=false", "logging.tensorboard=false", "checkpoint.every_steps=1", "checkpoint.keep=3",
         *(["algorithm.kl_coef=0.05"] if name == "reinforce_pp" else [])],  # the only one that reads it
    )  # fmt: skip
    run_dir = train(cfg, tmp_path / name)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert math.isfinite(r["loss"]) and math.isfinite(r["reward"]) and math.isfinite(r["grad_norm"])
    first = load_file(str(run_dir / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors"))
    last = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any(not torch.equal(first[k], last[k]) for k in first), "the adapter did not move"
