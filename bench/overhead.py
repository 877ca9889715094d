"""Relay vs plain TRL on the same GRPO workload: seconds per step and the ratio.

    python bench/overhead.py [--steps 20] [--max-new-tokens 24] [--repeats 3]

Workload (identical for both): the tiny Qwen2 model, the built-in `letters` env's prompts, group
size 4, 16 completions per step, LoRA r=16 on all linear layers, `letter_fraction` reward.
- plain TRL: GRPOTrainer generating in-process (transformers generate on the PEFT model), the
  reward called in-process;
- Relay: the same GRPOTrainer with generation in one Ray rollout actor (adapter synced every step)
  and the reward in one Ray reward actor.
Step time is the wall time between the trainer's step-begin and step-end callbacks (generation,
rewards and the update), median over the steps after two warm-up steps. Writes the
"Relay vs plain TRL" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from bench.common import StepTimer, mean_after_warmup, write_section  # noqa: E402


def run_plain_trl(cfg, model_dir: str, out_dir: str) -> StepTimer:
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from rewards.builtin import letter_fraction
    from rl.env_api import build_env
    from rl.learner.grpo import grpo_args

    env = build_env(cfg.env.name, cfg.env.args, cfg.seed)
    args = grpo_args(cfg, output_dir=out_dir, reward_weights=[1.0])
    args.report_to = []
    args.save_strategy = "no"
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=model_dir,
        reward_funcs=[letter_fraction],
        args=args,
        train_dataset=env.train_dataset(),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=LoraConfig(**cfg.lora.peft_kwargs()),
        callbacks=[timer],
    )
    trainer.train()
    return timer


def run_relay(cfg, run_dir: str) -> tuple[StepTimer, list[dict]]:
    import json

    from rl.driver import train

    timer = StepTimer()
    path = train(cfg, run_dir, callbacks=[timer])
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return timer, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs of each runner; the ratio is of their medians"
    )
    opts = parser.parse_args()

    from rl.config import load_config
    from rl.process_setup import quiet_libraries
    from rl.tiny_model import build_tiny_model

    quiet_libraries()
    load_before = os.getloadavg()[0]
    overrides = [
        f"learner.max_steps={opts.steps}",
        f"rollout.max_new_tokens={opts.max_new_tokens}",
        "logging.tensorboard=false",
        "logging.progress_bar=false",
    ]
    letters = Path(__file__).resolve().parents[1] / "configs" / "letters.yaml"
    cfg = load_config(letters, overrides)
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    model_dir = str(build_tiny_model(work / "model"))

    cfg_relay = load_config(letters, [*overrides, f"model.name={model_dir}"])
    # Alternating repeats: run-to-run variance on a 2-core machine is about +-15% per runner, more
    # than the overhead being measured, so one run of each says little.
    plain_runs, relay_runs = [], []
    for r in range(opts.repeats):
        plain_runs.append(run_plain_trl(cfg, model_dir, str(work / f"plain{r}")).median())
        timer, records = run_relay(cfg_relay, str(work / f"relay{r}"))
        relay_runs.append(timer.median())
    ratios = [b / a for a, b in zip(plain_runs, relay_runs, strict=True)]

    def mean_of(key: str) -> float:
        return mean_after_warmup(records, key)

    t_plain, t_relay = statistics.median(plain_runs), statistics.median(relay_runs)
    ratio = t_relay / t_plain
    gen, sync = mean_of("rollout/generate_seconds"), mean_of("rollout/sync_seconds")
    reward_s = mean_of("rewards/letter_fraction/seconds")
    table = (
        f"| runner | s/step (median of {opts.repeats} runs) | each run |\n|---|---|---|\n"
        f"| plain TRL GRPOTrainer, in-process generation | {t_plain:.3f} | {', '.join(f'{x:.3f}' for x in plain_runs)} |\n"
        f"| Relay (1 Ray rollout actor + 1 reward actor) | {t_relay:.3f} | {', '.join(f'{x:.3f}' for x in relay_runs)} |\n"
        f"| **ratio Relay / TRL** | **{ratio:.2f}x** (goal <= 1.15x) | {', '.join(f'{x:.2f}' for x in ratios)} |\n"
    )
    breakdown = (
        f"Relay step breakdown (last run, mean over steps 3..{opts.steps}): generation in the rollout actor "
        f"{gen:.3f} s (includes the Ray call), adapter sync {sync:.3f} s "
        f"({records[-1].get('rollout/sync_bytes', 0) / 1024:.0f} KiB of LoRA tensors, one object-store put), "
        f"reward actor call {reward_s:.4f} s; the rest is TRL's own work (logprob forward, loss, optimizer)."
    )
    body = (
        f"`python bench/overhead.py --steps {opts.steps} --max-new-tokens {opts.max_new_tokens}` on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), tiny Qwen2 "
        f"(hidden 64, 2 layers), 16 completions x {opts.max_new_tokens} tokens per step, LoRA r=16, "
        f"load average before the runs {load_before:.2f}.\n\n"
        f"{table}\n{breakdown}\n"
    )
    print(body)
    write_section("Relay vs plain TRL (bench/overhead.py)", body)


if __name__ == "__main__":
    main()
