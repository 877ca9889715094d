"""Asynchronous rollouts end to end: the real CLI, Ray rollout/reward actors and TRL's GRPOTrainer."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_three_async_steps_train_on_stale_batches_with_finite_loss(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    args = ["train", "configs/letters.yaml", "learner.max_steps=3", "rollout.mode=async", "rollout.max_staleness=1",
            "rollout.max_new_tokens=8", "logging.tensorboard=false", "logging.progress_bar=false", "--run-dir", str(run_dir)]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "rl", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in records)
    # Step 1's batch can only come from the initial adapter; later ones were generated a version early.
    assert [r["rollout/staleness_max"] for r in records] == [0, 1, 1]
    assert [r["rollout/adapter_version"] for r in records] == [0, 0, 1]
    # At staleness 0 the rollout logprobs are the learner's: IS weights ~1. Later they move off 1.
    assert records[0]["rollout/is_weight_min"] == pytest.approx(1.0, abs=1e-3)
    assert records[0]["rollout/is_weight_max"] == pytest.approx(1.0, abs=1e-3)
    later = records[1:]
    assert any(abs(r["rollout/is_weight_max"] - 1) > 1e-3 or abs(r["rollout/is_weight_min"] - 1) > 1e-3 for r in later)
    assert all(r["rollout/is_weight_max"] <= 3.0 + 1e-6 for r in records)  # rollout.is_cap
