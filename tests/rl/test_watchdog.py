"""cluster.stall_timeout_s: a hung reward actor and a hung rollout actor stop the run resumably, with stacks."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import cli_cmd, cli_env, read_metrics

REPO = Path(__file__).resolve().parents[2]
HANGS = Path(__file__).resolve().parent / "fixtures" / "hangs.py"


def _relay(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run(cli_cmd(*args), cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    return proc, time.monotonic() - t0


def _dump(run_dir: Path, step: int) -> tuple[dict, dict[str, str]]:
    out = run_dir / f"stall-step{step}"
    assert out.is_dir(), sorted(p.name for p in run_dir.iterdir())
    return json.loads((out / "stall.json").read_text()), {p.name: p.read_text() for p in out.iterdir()}


@pytest.mark.slow
def test_hung_reward_then_hung_rollout_stop_with_stacks_and_resume_finishes(tmp_path):
    run_dir = tmp_path / "run"
    reward_flag, rollout_flag = tmp_path / "hang-reward", tmp_path / "hang-rollout"
    reward_flag.touch()
    overrides = [
        f"env.name={HANGS}:HangingRolloutLettersEnv",
        f"env.args={{rollout_flag: '{rollout_flag}', rollout_after: 1}}",
        # timeout_s far beyond the stall timeout: the watchdog, not the pool's own timeout, must act
        f"rewards.functions=[{{name: hang, source: '{HANGS}:hanging_reward', "
        f"kwargs: {{flag: '{reward_flag}', after: 1}}, timeout_s: 300}}]",
        "learner.max_steps=3",
        "learner.batch_size=8",
        "rollout.max_new_tokens=4",
        "checkpoint.every_steps=1",
        "cluster.stall_timeout_s=10",
        "logging.progress_bar=false",
        "logging.tensorboard=false",
    ]

    # 1. The reward hangs on its 2nd call (step 2): stacks of the driver and of every actor, exit 3.
    proc, _ = _relay("train", "configs/letters.yaml", *overrides, "--run-dir", str(run_dir))
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "step 2 made no progress" in proc.stderr and "reward 'hang' score (samples" in proc.stderr
    assert f"run `relay resume {run_dir}`" in proc.stderr and "checkpoint-1" in proc.stderr
    record, files = _dump(run_dir, 2)
    assert any(c["call"].startswith("reward 'hang' score") for c in record["in_flight"])
    assert "driver pid" in files["driver.txt"] and "_calculate_rewards" in files["driver.txt"]  # TRL waiting
    reward_dumps = [t for n, t in files.items() if n.startswith("actor-RewardWorker-")]
    rollout_dumps = [t for n, t in files.items() if n.startswith("actor-RolloutWorker-")]
    assert reward_dumps and rollout_dumps  # every actor of the run, by py-spy
    assert any("sleep_forever_in_reward" in t for t in reward_dumps)  # the hung frame, by name

    # 2. Reward fixed; now the rollout engine hangs on its 2nd batch after the resume (step 3).
    reward_flag.unlink()
    rollout_flag.touch()
    proc, _ = _relay("resume", str(run_dir))
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "step 3 made no progress" in proc.stderr and "rollout generate (" in proc.stderr
    assert "waiting on workers [0]" in proc.stderr
    record, files = _dump(run_dir, 3)
    assert any(c["call"].startswith("rollout generate") for c in record["in_flight"])
    assert any("sleep_forever_in_rollout" in t for n, t in files.items() if n.startswith("actor-RolloutWorker-"))

    # 3. Nothing hangs any more: `relay resume` finishes the run, every step once.
    rollout_flag.unlink()
    proc, _ = _relay("resume", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(read_metrics(run_dir)) == [1, 2, 3]
    assert (run_dir / "adapter" / "adapter_config.json").is_file()


def test_watchdog_names_the_call_in_flight_and_interrupts_a_driver_stuck_elsewhere(tmp_path):
    from rl.watchdog import StallDetected, Watchdog

    dog = Watchdog(tmp_path, timeout_s=0.5, poll_s=0.05, grace_s=0.5)
    dog.start(step=4)
    with dog.track("rollout generate: waiting on workers [1]") as call:
        for _ in range(3):  # progress within the timeout: no stall
            time.sleep(0.2)
            call.update("rollout generate: waiting on workers [1]")
        dog.check()
        with pytest.raises(StallDetected) as err:  # then nothing for longer than the timeout
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                dog.check()  # what the pools call while they poll
                time.sleep(0.05)
    assert "step 5 made no progress" in str(err.value) and "waiting on workers [1]" in str(err.value)
    assert "test_watchdog_names_the_call_in_flight" in (tmp_path / "stall-step5" / "driver.txt").read_text()
    assert (tmp_path / "stall-step5" / "stall.json").is_file()
    dog.stop()

    # A driver stuck outside any polled call is interrupted after grace_s (the driver turns it into StallDetected).
    # Even when a library has set SIGINT to be ignored (where _thread.interrupt_main does nothing).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    dog = Watchdog(tmp_path, timeout_s=0.3, poll_s=0.05, grace_s=0.3)
    dog.start(step=7)
    try:
        with pytest.raises(KeyboardInterrupt):
            # The stall dump lists the job's live actors first (py-spy, up to dump_timeout_s each when an
            # earlier test left a Ray cluster up), so wait for the interrupt rather than for a fixed time.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        dog.stop()
        signal.signal(signal.SIGINT, previous)
    assert dog.interrupted and isinstance(dog.stalled, StallDetected)
    assert "no remote call in flight" in str(dog.stalled)
    dog.stop()
