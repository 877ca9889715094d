"""Checkpoints and exact resume, through the real CLI, with runs killed by SIGKILL."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from rl.checkpoint import MARKER, checkpoints, finalize, latest_valid, problems
from tests.helpers import cli_cmd as _cmd
from tests.helpers import cli_env as _env
from tests.helpers import read_metrics as _metrics
from tests.helpers import run_and_kill_after as _run_and_kill_after

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = [
    "learner.max_steps=6",
    "checkpoint.every_steps=2",
    "checkpoint.keep=3",
    "rollout.max_new_tokens=8",
    "algorithm.beta=0.04",  # so the KL term is part of what must match
    "logging.progress_bar=false",
    "logging.tensorboard=false",
]
COMPARED = ("reward", "loss", "kl", "grad_norm", "rollout/token_hash", "rewards/letter_fraction/mean")
# What identifies the batches and their making (tokens, prompts, adapter versions, counts) must be equal.
# The learner's float metrics agree within float32 noise: bit-identical in repeated runs on one machine,
# but one CI run's uninterrupted pass gave step 1 grad_norm 1.927577 against 1.927728 for its resumed pass
# and for every local pass (rel 8e-5, batches and tokens the same). rel 1e-3 still tells a learning rate 0.2%
# off apart: that moves loss and kl by 2e-3 to 9e-3 from step 2 on (measured on this async config).
EXACT = ("hash", "staleness", "adapter_version", "completions/", "num_tokens", "rollout/tokens", "sync_bytes",
         "/n_", "epoch", "learning_rate")  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[int, dict]:
    run_dir = tmp_path_factory.mktemp("full") / "run"
    proc = subprocess.run(_cmd("train", "configs/letters.yaml", *OVERRIDES, "--run-dir", str(run_dir)), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _metrics(run_dir)


def _assert_same(a: dict, b: dict, keys, step: int) -> None:
    """Step ``step``'s metrics of two runs agree: ``EXACT`` keys equal, float metrics within float32 noise."""
    for key in keys:
        x, y = a[key], b[key]
        if any(e in key for e in EXACT) or not (isinstance(x, float) or isinstance(y, float)):
            assert x == y, f"step {step} {key}: {x} vs {y}"
        else:
            assert x == pytest.approx(y, rel=1e-3, abs=1e-5), f"step {step} {key}: {x} vs {y}"


@pytest.mark.long
def test_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path, uninterrupted):
    # Killed after step 3: resumed from checkpoint-2, so step 3's records are dropped and re-produced.
    run_dir = tmp_path / "run"
    _run_and_kill_after(run_dir, 3, [*OVERRIDES, "logging.tensorboard=true"])  # logging.* may differ on resume
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    proc = subprocess.run(_cmd("resume", str(run_dir)), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stdout
    # One run identity across the resume: the same id in run.json, in relay.log and in TensorBoard.
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == run_id
    assert (run_dir / "relay.log").read_text().count(f"run id {run_id}") == 2  # the first start and the resume
    assert any(run_id.encode() in f.read_bytes() for f in (run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # every row carries its global step explicitly
    resumed = _metrics(run_dir)
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]  # every step exactly once
    for step in range(1, 7):
        _assert_same(uninterrupted[step], resumed[step], COMPARED, step)


ASYNC_OVERRIDES = [*OVERRIDES[2:], "learner.max_steps=5", "checkpoint.every_steps=1", "rollout.mode=async",
                   "rollout.max_staleness=2"]  # fmt: skip
# Wall-clock measurements differ between any two runs; everything else must agree.
TIMINGS = ("seconds", "per_second", "runtime", "step_time")


@pytest.mark.slow
def test_async_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path):
    """Async mode: each checkpoint holds the batches in flight and the adapters generating them, so the
    resumed run trains on exactly the batches the uninterrupted one did: every metric and the token
    checksum agree, step by step, wherever the kill lands."""
    import random

    full = tmp_path / "full"
    proc = subprocess.run(_cmd("train", "configs/letters.yaml", *ASYNC_OVERRIDES, "--run-dir", str(full)), cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    kill_after = random.Random(16).randint(2, 4)  # a step picked at random from a seeded range
    run_dir = tmp_path / "run"
    _run_and_kill_after(run_dir, kill_after, [*ASYNC_OVERRIDES, "logging.tensorboard=true"])  # logging.* may differ
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    ckpt = latest_valid(run_dir / "checkpoints")
    in_flight = json.loads((ckpt / "async_rollouts.json").read_text())["batches"]
    assert in_flight, "the checkpoint held no in-flight batch: nothing was tested"
    proc = subprocess.run(_cmd("resume", str(run_dir)), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"resuming .* from checkpoint-\d+ \(step (\d+)\)", proc.stdout)
    assert match, proc.stdout[-2000:]
    resumed_at = int(match.group(1))
    # One run identity across the resume: the same id in run.json, in relay.log and in TensorBoard.
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == run_id
    assert (run_dir / "relay.log").read_text().count(f"run id {run_id}") == 2  # the first start and the resume
    assert any(run_id.encode() in f.read_bytes() for f in (run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert f"checkpoint-{resumed_at}" == ckpt.name and resumed_at < 5, "the kill came too late to test a resume"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]  # each step once: none lost, none twice
    uninterrupted, resumed = _metrics(full), _metrics(run_dir)
    assert max(r["rollout/staleness_max"] for r in resumed.values()) == 2  # really off-policy batches
    for step in range(1, 6):
        a, b = uninterrupted[step], resumed[step]
        keys = {k for k in a.keys() | b.keys() if not any(t in k for t in TIMINGS)}
        assert {k for k in keys if k not in b} == set() and {k for k in keys if k not in a} == set(), step
        _assert_same(a, b, sorted(keys), step)
        assert a["rollout/token_hash"] == b["rollout/token_hash"]  # the generated tokens, exactly


def test_resume_refuses_a_changed_config_unless_forced(tmp_path):
    from rl.config import ConfigError
    from rl.driver import resume

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("learner:\n  learning_rate: 0.005\n")
    with pytest.raises(ConfigError) as info:
        resume(run_dir, ["learner.learning_rate=0.1"])
    assert "learner.learning_rate: 0.005 in the run, 0.1 now" in str(info.value)
    assert "--force" in str(info.value)
    # max_steps is safe to change: the refusal is then about the missing checkpoint, not the config.
    with pytest.raises(ConfigError, match="no valid checkpoint"):
        resume(run_dir, ["learner.max_steps=100"])


def test_corrupt_latest_checkpoint_is_detected_and_the_previous_used(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        ckpt = root / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_model.safetensors").write_bytes(os.urandom(256))
        finalize(ckpt, step)
    # step 6: truncated file; an unfinished step 8 has no marker at all
    target = root / "checkpoint-6" / "adapter_model.safetensors"
    target.write_bytes(target.read_bytes()[:100])
    (root / "checkpoint-8").mkdir()
    assert "truncated" in problems(root / "checkpoint-6")[0]
    assert MARKER in problems(root / "checkpoint-8")[0]
    chosen = latest_valid(root, quarantine=tmp_path / "invalid")
    assert chosen == root / "checkpoint-4"
    assert sorted(p.name for p in (tmp_path / "invalid").iterdir()) == ["checkpoint-6", "checkpoint-8"]
    assert [s for s, _ in checkpoints(root)] == [4, 2]
