"""A recipe's learning result over several seeds: each eval row's mean, standard deviation and range.

    python bench/seeds.py CONFIG [--seeds 0 1 2] [dotted.key=value ...]     # train each seed, then tabulate
    python bench/seeds.py CONFIG --runs RUN_DIR [RUN_DIR ...]                 # tabulate finished runs

Each seed is `relay train CONFIG seed=S` (one run after another, eval after training), so the table
holds what a user running the recipe would get, not one lucky run. Writes the section
"Seeds: CONFIG" of docs/benchmarks.md with the command, every run's numbers, wall times and (for new runs)
the load average; `--note` adds how the runs were made and the protocol line `relay eval` printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def summarise(values: list[float]) -> str:
    """'mean ± std (min-max)' of one metric over seeds."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def seed_table(results: list[dict], metric: str) -> str:
    """Markdown: one line per eval row (raw/start/trained/...) with the metric per seed and its summary,
    plus trained - start per seed when both rows exist and the eval has no paired ``trained-start`` row
    (the same per-seed numbers, already among the rows)."""
    rows = [r for r in results[0]["eval"] if all(metric in res["eval"].get(r, {}) for res in results)]
    seeds = [res["seed"] for res in results]
    head = f"| {metric} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std (min-max) |\n"
    lines = [head, "|---" * (len(seeds) + 2) + "|\n"]
    for row in rows:
        vals = [res["eval"][row][metric] for res in results]
        lines.append(f"| {row} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {summarise(vals)} |\n")
    if {"start", "trained"} <= set(rows) and "trained-start" not in rows:
        gains = [res["eval"]["trained"][metric] - res["eval"]["start"][metric] for res in results]
        lines.append("| trained − start | " + " | ".join(f"{g:+.3f}" for g in gains) + f" | {summarise(gains)} |\n")
    return "".join(lines)


def train_seed(config: str, seed: int, overrides: list[str], run_dir: Path) -> float:
    cmd = [sys.executable, "-m", "rl", "train", config, "--run-dir", str(run_dir), f"seed={seed}", *overrides]
    cmd += ["eval.after_train=true", "logging.progress_bar=false"]
    start = time.monotonic()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.monotonic() - start


def run_wall_s(run_dir: Path) -> float:
    """A finished run's wall time: from the first line of relay.log to eval.json."""
    first = (run_dir / "relay.log").read_text().split(",", 1)[0]  # '2026-12-04 20:18:25,847 INFO ...'
    started = time.mktime(time.strptime(first, "%Y-%m-%d %H:%M:%S"))
    return (run_dir / "eval.json").stat().st_mtime - started


def load_run(run_dir: Path, wall_s: float | None = None) -> dict:
    import yaml

    missing = [name for name in ("config.yaml", "relay.log", "eval.json") if not (run_dir / name).is_file()]
    if missing:
        print(
            f"bench/seeds.py: {run_dir} has no {', '.join(missing)}; pass finished run directories of "
            "`relay train ... eval.after_train=true` (or `relay eval RUN_DIR` first)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    seed = yaml.safe_load((run_dir / "config.yaml").read_text())["seed"]
    eval_json = json.loads((run_dir / "eval.json").read_text())
    return {"seed": seed, "eval": eval_json, "wall_s": wall_s if wall_s is not None else run_wall_s(run_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value applied to every seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, nargs="+", help="finished run directories to tabulate instead")
    parser.add_argument("--metric", default="overall", help="eval.json metric to tabulate (default: overall)")
    parser.add_argument("--out", type=Path, default=Path("runs/seeds"), help="where the seed runs go")
    parser.add_argument(
        "--note", default="", help="how the runs were made (shared cores, load average): needed with --runs"
    )
    opts = parser.parse_args()

    load_before = os.getloadavg()
    if opts.runs:
        results = [load_run(d) for d in opts.runs]
    else:
        results = []
        for seed in opts.seeds:
            run_dir = opts.out / f"{Path(opts.config).stem}-seed{seed}"
            results.append(load_run(run_dir, train_seed(opts.config, seed, opts.overrides, run_dir)))
    load_after = os.getloadavg()
    walls = ", ".join(f"seed {r['seed']} {r['wall_s'] / 60:.1f} min" for r in results)
    command = " ".join(["python bench/seeds.py", opts.config, *opts.overrides])
    command += f" --seeds {' '.join(str(r['seed']) for r in results)}"
    body = (
        f"`{command}` on {os.cpu_count()} CPU cores ({platform.machine()})"
        + (f"; 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after." if not opts.runs else ".")
        + f" Wall time: {walls}."
        + (f" {opts.note}" if opts.note else "")
        + "\n\n"
        + seed_table(results, opts.metric)
    )
    print(body)
    write_section(f"Seeds: {opts.config}", body)


if __name__ == "__main__":
    main()
