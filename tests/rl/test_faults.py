"""Faults during a real run: a reward actor that dies, a reward that raises; secrets stay out of the run dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "faulty_rewards.py"


@pytest.mark.slow
def test_run_survives_a_dying_reward_actor_and_a_raising_reward(tmp_path, ray_cluster, monkeypatch):
    from rl.config import load_config
    from rl.driver import train

    secret = "sk-relay-test-secret-4f2a9c"
    monkeypatch.setenv("RELAY_TEST_API_KEY", secret)
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    functions = [
        {"name": "crashy", "source": f"{FIXTURES}:crash_once_then_score", "kwargs": {"marker_dir": str(marker_dir)},
         "max_retries": 2, "num_cpus": 0.5},
        {"name": "flaky", "source": f"{FIXTURES}:raise_on_odd_batches", "num_workers": 2, "num_cpus": 0.5},
        {"name": "letter_fraction", "num_cpus": 0.5},
    ]  # fmt: skip
    cfg = load_config(
        Path(__file__).resolve().parents[2] / "configs" / "letters.yaml",
        [
            "learner.max_steps=3",
            "rollout.max_new_tokens=8",
            "logging.progress_bar=false",
            f"rewards.functions={json.dumps(functions)}",
        ],
    )
    run_dir = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    # The actor died once; its chunk was retried on the restarted actor and scored exactly once.
    assert sum(r["rewards/crashy/n_retried"] for r in records) == 16
    assert sum(r["rewards/crashy/n_failed"] for r in records) == 0
    calls = [int(x) for x in (marker_dir / "calls.log").read_text().split()]
    assert sum(calls) == 3 * 16
    # Each failure is counted (and excluded from the loss), and the run went on.
    flaky_failed = sum(r["rewards/flaky/n_failed"] for r in records)
    assert flaky_failed + sum(1 for r in records for _ in [0] if r["rewards/flaky/mean"] is not None) > 0
    log = (run_dir / "relay.log").read_text()
    if flaky_failed:
        assert "flaky" in log
    # The secret was used by the reward (it raises without it) but is written nowhere in the run dir.
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"secret leaked into {path}"
