"""Reward pool scaling with a latency-bound reward: reward-phase seconds with k = 1..4 actors.

    python bench/reward_scaling.py [--samples 64] [--call-batch 4] [--latency 0.1] [--repeats 3]

The reward (bench/latency_reward.py:fixed_latency) waits ``--latency`` seconds per call, standing
in for a remote T2I generator or judge that serves batches of ``--call-batch`` samples. The same
batch of ``--samples`` completions is scored through the real ``RewardPool`` (Ray actors, the
pool's own chunking: ``batch_size=--call-batch`` samples per actor call, each free actor takes the
next chunk) with k = 1, 2, 3, 4 actors. Seconds are the pool's own ``ScoreResult.seconds``, the
median of ``--repeats`` runs after one warm-up call per pool. Goal: speedup >= 0.85 k. Writes the
"Reward pool scaling" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import local_cluster, write_section  # noqa: E402

REWARD = Path(__file__).resolve().parent / "latency_reward.py"


def ideal_seconds(samples: int, call_batch: int, latency: float, k: int) -> float:
    """Lower bound: calls are serial per actor, so the busiest actor serves ceil(calls / k) of them."""
    return math.ceil(math.ceil(samples / call_batch) / k) * latency


def time_pool(k: int, samples: int, call_batch: int, latency: float, repeats: int) -> float:
    from rewards.pool import RewardPool, RewardSpec

    spec = RewardSpec(name="fixed_latency", source=f"{REWARD}:fixed_latency", kwargs={"latency_s": latency},
                      num_workers=k, num_cpus=0.25, batch_size=call_batch, timeout_s=None)  # fmt: skip
    prompts = [f"prompt {i}" for i in range(samples)]
    completions = [f"completion {'x' * (i % 7)}" for i in range(samples)]
    with RewardPool(spec) as pool:
        pool.score(prompts[:k], completions[:k])  # warm-up: every actor has run the function once
        times = []
        for _ in range(repeats):
            result = pool.score(prompts, completions)
            if result.n_scored != samples:
                raise RuntimeError(f"k={k}: {samples - result.n_scored} samples unscored: {result.errors}")
            times.append(result.seconds)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--call-batch", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-actors", type=int, default=4)
    opts = parser.parse_args()

    load = os.getloadavg()
    with local_cluster():
        seconds = {k: time_pool(k, opts.samples, opts.call_batch, opts.latency, opts.repeats)
                   for k in range(1, opts.max_actors + 1)}  # fmt: skip
    rows = []
    for k, s in seconds.items():
        speedup = seconds[1] / s
        ok = "yes" if speedup >= 0.85 * k else "**no**"
        ideal = ideal_seconds(opts.samples, opts.call_batch, opts.latency, k)
        rows.append(f"| {k} | {s:.3f} | {ideal:.2f} | {speedup:.2f}x | {0.85 * k:.2f}x | {ok} |")
    table = ("| actors k | reward phase s (median) | ideal s | speedup vs k=1 | goal 0.85k | met |\n"
             "|---|---|---|---|---|---|\n" + "\n".join(rows))  # fmt: skip
    calls = math.ceil(opts.samples / opts.call_batch)
    body = (
        f"`python bench/reward_scaling.py --samples {opts.samples} --call-batch {opts.call_batch} "
        f"--latency {opts.latency} --repeats {opts.repeats}` on {os.cpu_count()} CPU cores, "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) at the start.\n\n"
        f"One batch of {opts.samples} completions scored by the real `RewardPool`; the reward waits "
        f"{opts.latency * 1000:.0f} ms per call (a remote T2I GPU / judge serving {opts.call_batch} samples per call), "
        f"so a batch is {calls} calls; free actors take the next chunk.\n\n{table}\n\n"
        "The gap to the ideal is Ray's per-call overhead (submit, pickle, result fetch) and the asyncio "
        "dispatch in the learner process.\n"
    )
    print(body)
    write_section("Reward pool scaling (bench/reward_scaling.py)", body)


if __name__ == "__main__":
    main()
