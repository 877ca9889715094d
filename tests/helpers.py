"""Small builders shared by several test files (import as `from tests.helpers import ...`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")


def requires_cuda(reason: str, *, min_gpus: int = 1, modules: tuple[str, ...] = ()):
    """The one GPU skip: marks a test ``gpu`` (``pytest -m gpu`` selects them) and skips it, with one message
    naming what is missing, where fewer than ``min_gpus`` CUDA devices or one of ``modules`` are present."""
    import importlib.util

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    lacking = []
    if found < min_gpus:
        lacking.append(f"{min_gpus} CUDA GPU{'s' if min_gpus > 1 else ''} (found {found})")
    lacking += [f"the {m} package" for m in modules if importlib.util.find_spec(m) is None]
    skip = pytest.mark.skipif(bool(lacking), reason=f"needs {' and '.join(lacking)}: {reason}")

    def mark(test):
        return pytest.mark.gpu(skip(test))

    return mark


def learner_model(model_dir, seed: int = 0, scale: float = 0.3):
    """A learner-side peft model with the tests' LoraConfig and perturbed (non-identity) LoRA weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(task_type="CAUSAL_LM", **LORA))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def random_index(n_items: int = 60, sizes=(6, 5, 4), seed: int = 0):
    """A SemanticIndex of ``n_items`` distinct random codes."""
    from rewards.rec.semantic_ids import SemanticIndex

    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < n_items:
        seen.add(tuple(int(rng.integers(k)) for k in sizes))
    codes = sorted(seen)
    order = rng.permutation(len(codes))
    return SemanticIndex([f"i{j}" for j in range(n_items)], np.array([codes[o] for o in order]), list(sizes))


def stop_processes_of(temp_dir: str) -> None:
    """Leftover Ray processes of one test cluster only (their command lines name its temp dir)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if temp_dir.encode() in (d / "cmdline").read_bytes():
                        pids.append(int(d.name))
                except OSError:
                    pass
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


def run_cluster_script(source: str, tmp_path: Path, *args: str, timeout: int = 300) -> dict:
    """Run ``source`` as its own Ray driver in a subprocess (this test session already has one):
    token auth with a fresh token, its own Ray temp root (passed as argv[1], then ``args``), the repo
    on PYTHONPATH. Returns the JSON it printed after ``RESULT ``; its Ray processes are stopped after."""
    temp = tempfile.mkdtemp(prefix="rcs-", dir="/tmp")
    token = Path(temp) / "auth_token"
    token.write_text(os.urandom(32).hex())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
    env["RAY_TMPDIR"] = temp  # Ray's temp root (session dirs, the current-cluster file), not /tmp/ray
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    script = tmp_path / "cluster_script.py"
    script.write_text(source)
    try:
        proc = subprocess.run(
            [sys.executable, str(script), temp, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
    finally:
        stop_processes_of(temp)
        shutil.rmtree(temp, ignore_errors=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(line[len("RESULT ") :])


# ---- the real CLI in a subprocess ----------------------------------------------------------------


def cli_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1", PYTHONUNBUFFERED="1")


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rl", *args]


def read_metrics(run_dir: Path) -> dict[int, dict]:
    """metrics.jsonl by step."""
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def run_and_kill_after(run_dir: Path, kill_after_step: int, overrides: list[str], config: str = "configs/letters.yaml",
                       timeout: float = 240) -> None:  # fmt: skip
    """``relay train`` until metrics.jsonl has ``kill_after_step`` rows, then SIGKILL the driver's process
    group and every process of its private Ray cluster (actors included)."""
    import pytest

    ray_temp = tempfile.mkdtemp(prefix="relay-kill-", dir="/tmp")
    args = ["train", config, *overrides, f"cluster.temp_dir={ray_temp}", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cli_cmd(*args), cwd=REPO, env=cli_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after_step:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["pkill", "-9", "-f", ray_temp], check=False)


def toy_rec_data():
    """Three users' interactions in time order (u1: a b c d, u2: a c, u3: b)."""
    from rewards.rec.data import Interaction, RecData

    inter = {
        "u1": [Interaction("u1", i, t) for i, t in [("a", 1), ("b", 2), ("c", 3), ("d", 4)]],
        "u2": [Interaction("u2", i, t) for i, t in [("a", 5), ("c", 6)]],
        "u3": [Interaction("u3", "b", 7)],
    }
    return RecData(inter)
