"""relay submit: pure helpers, and a real 2-step job through the Ray Jobs API on a token-auth head."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rl.submit import (
    build_entrypoint,
    build_runtime_env,
    exit_code_for,
    job_config_path,
    job_env_vars,
    resolve_address,
)

REPO = Path(__file__).resolve().parents[2]


def test_address_from_flag_then_environment():
    assert resolve_address("http://h:8265", {"RAY_ADDRESS": "http://x:1"}) == "http://h:8265"
    assert resolve_address(None, {"RAY_ADDRESS": "http://x:1"}) == "http://x:1"
    assert resolve_address(None, {}) is None


def test_config_path_is_relative_to_working_dir(tmp_path):
    assert job_config_path("configs/letters.yaml", REPO) == "configs/letters.yaml"
    assert job_config_path(str(REPO / "configs" / "letters.yaml"), REPO) == "configs/letters.yaml"
    outside = tmp_path / "x.yaml"
    outside.write_text("seed: 0\n")
    with pytest.raises(ValueError, match="outside --working-dir"):
        job_config_path(str(outside), REPO)
    with pytest.raises(ValueError, match="does not exist"):
        job_config_path("configs/nope.yaml", REPO)


def test_entrypoint_is_quoted():
    cmd = build_entrypoint("configs/q.yaml", ["learner.max_steps=2", "name=a b"], "/runs/x y")
    assert cmd == "python -m rl.cli train configs/q.yaml learner.max_steps=2 'name=a b' --run-dir '/runs/x y'"


def test_env_vars_copied_by_name_never_invented():
    env = {"HF_HUB_OFFLINE": "1", "MY_SECRET": "s3cr3t", "OTHER": "x"}
    got, missing = job_env_vars(["MY_SECRET", "UNSET_ONE"], env)
    assert got == {"HF_HUB_OFFLINE": "1", "MY_SECRET": "s3cr3t"}
    assert missing == ["UNSET_ONE"]
    renv = build_runtime_env(REPO, got)
    assert renv["working_dir"] == str(REPO) and renv["env_vars"] == got
    assert ".venv/" in renv["excludes"] and "runs/" in renv["excludes"]


def test_exit_codes():
    assert exit_code_for("SUCCEEDED", None) == 0
    assert exit_code_for("FAILED", 2) == 2
    assert exit_code_for("FAILED", None) == 1
    assert exit_code_for("STOPPED", 0) == 1


def test_missing_address_is_a_usage_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "rl.submit", "configs/letters.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "RAY_ADDRESS" in proc.stderr


# ---- a real Ray head on loopback ---------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _stop_head(temp_dir: str) -> None:
    """Stop only the Ray processes of this head (their command lines name its temp dir), not `ray stop`,
    which would kill every Ray process of this user on a shared machine."""
    import signal

    me = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        found = False
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if temp_dir in cmdline:
                found = True
                try:
                    os.kill(int(pid_dir.name), sig)
                except ProcessLookupError:
                    pass
        if not found:
            return
        time.sleep(3)


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` with token auth, its own temp dir, and everything bound to 127.0.0.1."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the `ray` CLI is not on PATH")
    temp_dir = tempfile.mkdtemp(prefix="rsub-", dir="/tmp")
    token_path = Path(temp_dir) / "auth_token"
    token_path.write_text(os.urandom(32).hex())
    token_path.chmod(0o600)
    gcs, dash, agent_grpc, agent_http, rt_env, metrics, client = _free_ports(7)
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path), RAY_USAGE_STATS_ENABLED="0")
    # The cluster's Python environment is the one with Relay installed (as on a real cluster image): the job's
    # `python -m rl` entrypoint must find it first on PATH even when the venv is not activated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [
        ray_bin, "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
        "--num-cpus=4", "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--dashboard-agent-listen-port={agent_http}", f"--runtime-env-agent-port={rt_env}",
        f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}", "--disable-usage-stats",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        _stop_head(temp_dir)
        pytest.fail(f"ray start failed:\n{proc.stdout}\n{proc.stderr}")
    try:
        yield {"address": f"http://127.0.0.1:{dash}", "env": env, "temp_dir": temp_dir}
    finally:
        _stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_submit_two_step_job_to_token_auth_head(ray_head, tmp_path):
    run_dir = tmp_path / "run"
    env = dict(ray_head["env"], RELAY_TEST_SECRET="not-in-any-file")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rl.submit",
            "configs/letters.yaml",
            "learner.max_steps=2",
            "logging.progress_bar=false",
            "--address",
            ray_head["address"],
            "--working-dir",
            str(REPO),
            "--run-dir",
            str(run_dir),
            "--env",
            "RELAY_TEST_SECRET",
        ],  # fmt: skip
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "SUCCEEDED" in proc.stderr
    assert "run directory:" in proc.stdout  # the job's own output, streamed back
    for name in ("config.yaml", "versions.json", "metrics.jsonl", "summary.json", "relay.log"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "adapter").is_dir()
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    assert "not-in-any-file" not in (run_dir / "config.yaml").read_text()

    # without the token, the job server refuses
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    no_token["RAY_AUTH_MODE"] = "disabled"
    denied = subprocess.run(
        [sys.executable, "-m", "rl.submit", "configs/letters.yaml", "--address", ray_head["address"], "--no-wait"],
        cwd=REPO,
        env=no_token,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert denied.returncode != 0
