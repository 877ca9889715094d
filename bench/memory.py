"""Peak memory of the embedded default run, all processes together (driver, Ray GCS/raylet, actors).

    python bench/memory.py [CONFIG.yaml] [dotted overrides ...]

Runs `relay train [CONFIG] [overrides]` (default configs/quickstart.yaml) as a subprocess and samples, every 0.25 s, the
proportional set size (PSS: shared pages split between the processes sharing them, so the sum is
not inflated by shared libraries) of that process and all its descendants. Writes the
"Peak memory" section of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import write_section  # noqa: E402


def tree_pss(root: psutil.Process) -> tuple[int, int]:
    """(total PSS bytes, process count) of ``root`` and its descendants."""
    total, count = 0, 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total, count


def main() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="relay-mem-")) / "run"
    cmd = [sys.executable, "-m", "rl", "train", *sys.argv[1:], "logging.progress_bar=false", "--run-dir", str(run_dir)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    peak, peak_procs = 0, 0
    while proc.poll() is None:
        pss, count = tree_pss(root)
        if pss > peak:
            peak, peak_procs = pss, count
        time.sleep(0.25)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"relay train failed:\n{proc.stderr.read().decode()[-3000:]}")
    body = (
        f"`python bench/memory.py {' '.join(sys.argv[1:])}` — `relay train` on that config (tiny model, local Ray "
        f"cluster), {os.cpu_count()} CPU cores.\n\n"
        f"| measure | value |\n|---|---|\n"
        f"| peak total PSS, all processes | {peak / 2**20:.0f} MiB |\n"
        f"| processes at the peak (driver, Ray GCS/raylet/agents, actors) | {peak_procs} |\n"
        f"| wall time of the run | {elapsed:.0f} s |\n\n"
        "Most of it is per-process Python + torch + transformers import overhead (each Ray actor is its own "
        "interpreter); the tiny model itself is under 1 MiB.\n"
    )
    print(body)
    write_section("Peak memory of the embedded default run (bench/memory.py)", body)


if __name__ == "__main__":
    main()
