"""Relay vs plain TRL on the same GRPO workload: seconds per step, the ratio, and where Relay's time goes.

    python bench/overhead.py [--model tiny|smollm2-135m-instruct|DIR] [--runners trl,relay-hf-sync]
                             [--steps 20] [--max-new-tokens 24] [--batch-size 16] [--num-generations 4]
                             [--repeats 3] [--threads N] [--rollout-threads N]

Runners (``--runners``, comma-separated; ``trl`` is required: every ratio is to it):
- ``trl``: plain TRL GRPOTrainer generating in-process (transformers generate on the PEFT model), the
  reward called in-process;
- ``relay-<engine>-<mode>`` (engine hf or vllm, mode sync or async): the same GRPOTrainer with generation
  in one Ray rollout actor (adapter synced every step) and the reward in one Ray reward actor. The vllm
  runners use vLLM's CPU build with a 1 GiB KV cache, as configs/reprompt_smollm2.yaml does;
- ``relay-vllm-async-split``: relay-vllm-async with the cores split, half the threads to the learner and the
  rest to the rollout actor (the other runners give each of them all the cores, so overlapped work shares them).
Goals (issue #14): relay-hf-sync <= 1.05x plain TRL; relay-vllm-async < 1.0x (generation overlaps the learner).

Workload, identical for every runner: the model (``--model``: ``tiny``, the tiny Qwen2 built locally, with
2 attention heads of 32 when a vllm runner is asked for since vLLM's CPU kernels need that head size; a
packaged model such as ``smollm2-135m-instruct``, materialised from its Python package, no download; or a
local model directory), the built-in ``letters`` env's prompts and its ``letter_fraction`` reward,
configs/letters.yaml's GRPO arguments and LoRA (r=16, all linear layers), ``--batch-size`` completions of at
most ``--max-new-tokens`` tokens in groups of ``--num-generations`` per step, ``--steps`` steps per run,
``--threads`` torch threads in the learner (default: torch's). Each repeat runs every runner once, in the
listed order on even repeats and reversed on odd ones (run-to-run variance on a shared 2-core machine is
larger than the overhead being measured).

Step time is the wall time between the trainer's step-begin and step-end callbacks (generation, rewards
and the update), median over the steps after two warm-up steps; the ratio is of the medians over repeats.
Each Relay runner's breakdown (generation, adapter sync, reward call, the learner's wait for rollouts and
the remainder, TRL's own work) comes from its last run's metrics.jsonl, mean after the warm-up steps.
Writes the "Relay vs plain TRL (bench/overhead.py)" section of docs/benchmarks.md for the tiny model and
"Relay vs plain TRL on <model> (bench/overhead.py)" for any other, so the two never overwrite each other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from transformers import TrainerCallback  # noqa: E402

from bench.common import StepTimer, mean_after_warmup, write_section  # noqa: E402

LETTERS = Path(__file__).resolve().parents[1] / "configs" / "letters.yaml"
TINY = "tiny"
TINY_TITLE = "Relay vs plain TRL (bench/overhead.py)"
MODEL_TITLES = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct"}  # packaged model name -> its section's name
WARMUP = 2  # steps left out of every mean and median


@dataclass(frozen=True)
class Runner:
    name: str  # what --runners takes
    label: str  # the table's description
    engine: str | None = None  # rollout.engine; None: plain TRL, in-process generation
    mode: str = "sync"  # rollout.mode
    goal: tuple[str, float] | None = None  # (operator, bound) on the ratio to plain TRL
    split_cores: bool = False  # learner and rollout actor each get half the cores' threads (not both all of them)

    def goal_text(self, ratio: float) -> str:
        if self.goal is None:
            return "—"
        op, bound = self.goal
        met = ratio <= bound if op == "<=" else ratio < bound
        return f"{op} {bound:.2f}x: {'met' if met else 'missed'}"


BASELINE = "trl"
RUNNERS = {
    r.name: r
    for r in (
        Runner(BASELINE, "plain TRL GRPOTrainer, in-process generation"),
        Runner("relay-hf-sync", "Relay, hf rollout actor, sync", "hf", "sync", ("<=", 1.05)),
        Runner("relay-hf-async", "Relay, hf rollout actor, async", "hf", "async"),
        Runner("relay-vllm-sync", "Relay, vLLM rollout actor, sync", "vllm", "sync"),
        Runner("relay-vllm-async", "Relay, vLLM rollout actor, async", "vllm", "async", ("<", 1.0)),
        Runner(
            "relay-vllm-async-split",
            "Relay, vLLM rollout actor, async, cores split between learner and actor",
            "vllm",
            "async",
            ("<", 1.0),
            split_cores=True,
        ),
    )
}
DEFAULT_RUNNERS = "trl,relay-hf-sync"


class UsageError(ValueError):
    """A command-line value that cannot work; the message names the option and the fix."""


def parse_runners(text: str) -> list[Runner]:
    """``--runners``: comma-separated names from RUNNERS, ``trl`` among them, each once."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    valid = ", ".join(RUNNERS)
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown runner(s) {', '.join(unknown)}; valid names: {valid} (comma-separated, e.g. {DEFAULT_RUNNERS})"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r} names a runner twice; list each once (valid names: {valid})")
    if BASELINE not in names or len(names) < 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: list {BASELINE} (the baseline every ratio is to) and at least one Relay runner, "
            f"e.g. {BASELINE},relay-vllm-async (valid names: {valid})"
        )
    return [RUNNERS[n] for n in names]


def run_order(runners: list[Runner], repeat: int) -> list[Runner]:
    """The listed order on even repeats, reversed on odd ones: slow drift in the machine's load cancels."""
    return list(runners) if repeat % 2 == 0 else list(reversed(runners))


def section_title(model: str) -> str:
    """Today's section for the tiny model; a section of its own for any other (never overwriting it)."""
    if model == TINY:
        return TINY_TITLE
    name = MODEL_TITLES.get(model, Path(model).name or model)
    return f"Relay vs plain TRL on {name} (bench/overhead.py)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=TINY, help="'tiny', a packaged model name or a local model directory")
    parser.add_argument(
        "--runners",
        type=parse_runners,
        default=parse_runners(DEFAULT_RUNNERS),
        help=f"comma-separated, from: {', '.join(RUNNERS)} (default {DEFAULT_RUNNERS})",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16, help="completions per step")
    parser.add_argument("--num-generations", type=int, default=4, help="completions per prompt (group size)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each runner, alternating; the ratio is of their medians"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the learner (default: torch's)")
    parser.add_argument(
        "--rollout-threads", type=int, default=None, help="torch threads per rollout actor (default: Relay's)"
    )
    return parser


def workload_problems(opts) -> list[str]:
    """What in the options cannot make a GRPO run, each naming the option and the fix."""
    problems = [
        f"--{name.replace('_', '-')} ({getattr(opts, name)}) must be >= 1"
        for name in ("steps", "max_new_tokens", "batch_size", "num_generations", "repeats")
        if getattr(opts, name) < 1
    ]
    if not problems and opts.batch_size % opts.num_generations:
        problems.append(
            f"--batch-size ({opts.batch_size}) must be a multiple of --num-generations ({opts.num_generations}); "
            f"e.g. --batch-size {opts.num_generations * max(1, opts.batch_size // opts.num_generations)}"
        )
    return problems


def command_line(opts) -> str:
    """The command that reproduces this measurement, for the docs."""
    parts = [
        f"python bench/overhead.py --model {opts.model} --runners {','.join(r.name for r in opts.runners)}",
        f"--steps {opts.steps} --max-new-tokens {opts.max_new_tokens} --batch-size {opts.batch_size}",
        f"--num-generations {opts.num_generations} --repeats {opts.repeats}",
    ]
    if opts.threads:
        parts.append(f"--threads {opts.threads}")
    if opts.rollout_threads:
        parts.append(f"--rollout-threads {opts.rollout_threads}")
    return " ".join(parts)


# ---- the workload ---------------------------------------------------------------------------------------------


def resolve_model(model: str, work: Path, for_vllm: bool) -> tuple[str, str]:
    """(model directory, its description): the tiny model built under ``work``, a packaged model materialised
    from its package (converted once, cached; no download), or an existing local directory."""
    if model == TINY:
        from rl.tiny_model import TinyModelSpec, build_tiny_model

        if for_vllm:  # vLLM's CPU attention kernels support no head size below 32
            spec = TinyModelSpec(num_attention_heads=2, num_key_value_heads=1)
            return str(build_tiny_model(work / "model", spec)), "tiny Qwen2 (hidden 64, 2 layers, 2 heads of 32)"
        return str(build_tiny_model(work / "model")), "tiny Qwen2 (hidden 64, 2 layers)"
    from rl import packaged_models

    if packaged_models.is_packaged(model):
        try:
            directory = packaged_models.materialise(model, None)
        except packaged_models.PackagedModelError as exc:
            raise UsageError(f"--model {model}: {exc}") from None
        return str(directory), f"{MODEL_TITLES.get(model, model)} (`{directory}`)"
    if Path(model).is_dir():
        return model, f"`{model}`"
    raise UsageError(
        f"--model {model}: not {TINY!r}, a packaged model ({', '.join(sorted(packaged_models.PACKAGED))}) or an "
        "existing model directory; pass one of those"
    )


def base_overrides(opts, model_dir: str) -> list[str]:
    """configs/letters.yaml overrides every runner shares."""
    out = [
        f"model.name={model_dir}",
        f"learner.max_steps={opts.steps}",
        f"learner.batch_size={opts.batch_size}",
        f"algorithm.num_generations={opts.num_generations}",
        f"rollout.max_new_tokens={opts.max_new_tokens}",
        "logging.tensorboard=false",
        "logging.progress_bar=false",
    ]
    if opts.threads:
        out.append(f"learner.torch_threads={opts.threads}")
    if opts.rollout_threads:
        out.append(f"rollout.torch_threads={opts.rollout_threads}")
    return out


def runner_overrides(runner: Runner, cores: int) -> list[str]:
    """What makes a Relay runner: its engine and rollout mode (vLLM with configs/reprompt_smollm2.yaml's KV cache);
    a split runner's learner gets ``cores // 2`` torch threads and its rollout actor the rest (after the shared
    overrides, so these win over ``--threads``/``--rollout-threads``)."""
    if runner.engine is None:
        return []
    out = [f"rollout.engine={runner.engine}", f"rollout.mode={runner.mode}"]
    if runner.engine == "vllm":
        out.append("rollout.vllm_cpu_kv_cache_gib=1")
    if runner.split_cores:
        learner, actor = split_threads(cores)
        out += [f"learner.torch_threads={learner}", f"rollout.torch_threads={actor}"]
    return out


def split_threads(cores: int) -> tuple[int, int]:
    """A split runner's torch threads: (learner, rollout actor), half the cores each (at least 1)."""
    learner = max(1, cores // 2)
    return learner, max(1, cores - learner)


class StepRecords(TrainerCallback):
    """The trainer's per-step log records (what Relay's metrics.jsonl holds), for plain TRL."""

    def __init__(self):
        self.records: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:  # end-of-training summaries are not step records
            self.records.append(dict(logs))


def run_plain_trl(cfg, model_dir: str, out_dir: str) -> tuple[list[float], list[dict]]:
    from peft import LoraConfig
    from transformers import AutoTokenizer, PrinterCallback
    from trl import GRPOTrainer

    from rewards.builtin import letter_fraction
    from rl.env_api import build_env
    from rl.learner.grpo import grpo_args

    env = build_env(cfg.env.name, cfg.env.args, cfg.seed)
    args = grpo_args(cfg, output_dir=out_dir, reward_weights=[1.0])
    args.report_to = []
    args.save_strategy = "no"
    args.model_init_kwargs = {"dtype": cfg.model.dtype}  # as Relay's learner loads it
    timer, logs = StepTimer(), StepRecords()
    trainer = GRPOTrainer(
        model=model_dir,
        reward_funcs=[letter_fraction],
        args=args,
        train_dataset=env.train_dataset(),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=LoraConfig(**cfg.lora.peft_kwargs()),
        callbacks=[timer, logs],
    )
    trainer.remove_callback(PrinterCallback)  # as Relay's learner does: no raw log dicts on the console
    trainer.train()
    return timer.times, logs.records


def run_relay(cfg, run_dir: str) -> tuple[list[float], list[dict]]:
    from rl.driver import train

    timer = StepTimer()
    path = train(cfg, run_dir, callbacks=[timer])
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return timer.times, records


@dataclass
class RunnerResult:
    runner: Runner
    step_medians: list[float] = field(default_factory=list)  # one per repeat
    step_times: list[float] = field(default_factory=list)  # every step of the last run
    records: list[dict] = field(default_factory=list)  # the last run's per-step log records

    @property
    def median(self) -> float:
        return statistics.median(self.step_medians)


def steady(values: list[float]) -> list[float]:
    """The values after the warm-up steps (all of them when the run is too short to drop any)."""
    return values[WARMUP:] or values


def step_median(times: list[float]) -> float:
    return statistics.median(steady(times))


def run_all(runners: list[Runner], cfgs: dict, model_dir: str, repeats: int, work: Path) -> list[RunnerResult]:
    results = {r.name: RunnerResult(r) for r in runners}
    for rep in range(repeats):
        for runner in run_order(runners, rep):
            out_dir = str(work / f"{runner.name}-{rep}")
            if runner.engine is None:
                times, records = run_plain_trl(cfgs[runner.name], model_dir, out_dir)
            else:
                times, records = run_relay(cfgs[runner.name], out_dir)
            res = results[runner.name]
            res.step_medians.append(step_median(times))
            res.step_times, res.records = times, records
            print(f"repeat {rep} {runner.name}: {res.step_medians[-1]:.3f} s/step", flush=True)
    return [results[r.name] for r in runners]


# ---- the report (pure) ----------------------------------------------------------------------------------------


def _secs(x: float) -> str:
    if math.isnan(x):
        return "—"
    return f"{x:.3f}" if abs(x) >= 0.01 else f"{x:.4f}"


def _or_zero(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def breakdown(result: RunnerResult) -> dict[str, float]:
    """Where a Relay runner's step goes (last run, means after the warm-up steps).

    sync mode: the learner blocks on the adapter sync and the generation call, so it waits for both;
    async mode: both run in the background and the learner waits ``rollout/wait_seconds``. The reward
    components run concurrently, so the slowest one counts. rest = step - waited - reward."""
    recs = result.records

    def mean(key: str) -> float:
        return mean_after_warmup(recs, key, skip=WARMUP)

    step = statistics.mean(steady(result.step_times))
    gen, sync = mean("rollout/generate_seconds"), mean("rollout/sync_seconds")
    reward_keys = sorted({k for r in recs for k in r if k.startswith("rewards/") and k.endswith("/seconds")})
    reward = max((mean(k) for k in reward_keys), default=float("nan"))
    if result.runner.mode == "async":
        waited = mean("rollout/wait_seconds")
    else:
        waited = gen + _or_zero(sync)
    return {
        "step": step,
        "generate": gen,
        "sync": sync,
        "sync_kib": mean("rollout/sync_bytes") / 1024,
        "reward": reward,
        "waited": waited,
        "rest": step - _or_zero(waited) - _or_zero(reward),
        "staleness": mean("rollout/staleness_mean"),
    }


def timing_table(results: list[RunnerResult], repeats: int) -> str:
    """One row per runner: s/step, each run, the ratio to plain TRL (per repeat), the goal, completion length."""
    base = next(r for r in results if r.runner.name == BASELINE)
    rows = [
        f"| runner | s/step (median of {repeats} runs) | each run | ratio to plain TRL (each run) | goal | "
        "completion tokens (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        ratio = res.median / base.median
        per_run = ", ".join(f"{a / b:.2f}" for a, b in zip(res.step_medians, base.step_medians, strict=True))
        ratio_cell = "1.00x (baseline)" if res is base else f"**{ratio:.2f}x** ({per_run})"
        tokens = mean_after_warmup(res.records, "completions/mean_length", skip=WARMUP)
        rows.append(
            f"| {res.runner.label} (`{res.runner.name}`) | {res.median:.3f} | "
            f"{', '.join(f'{x:.3f}' for x in res.step_medians)} | {ratio_cell} | {res.runner.goal_text(ratio)} | "
            f"{tokens:.1f} |"
        )
    return "\n".join(rows) + "\n"


def breakdown_table(results: list[RunnerResult]) -> str:
    """One row per Relay runner: its step split into generation, adapter sync, reward, wait and the rest."""
    rows = [
        "| runner | s/step (last run, mean) | generation in the actor | adapter sync (KiB) | reward call | "
        "learner waited for rollouts | rest: TRL's own work | staleness (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        if res.runner.engine is None:
            continue
        b = breakdown(res)
        overlapped = " (overlapped)" if res.runner.mode == "async" else ""
        rows.append(
            f"| `{res.runner.name}` | {_secs(b['step'])} | {_secs(b['generate'])}{overlapped} | "
            f"{_secs(b['sync'])}{overlapped} ({_or_zero(b['sync_kib']):.0f} KiB) | {_secs(b['reward'])} | "
            f"{_secs(b['waited'])} | {_secs(b['rest'])} | {_or_zero(b['staleness']):.2f} |"
        )
    return "\n".join(rows) + "\n"


BREAKDOWN_NOTE = (
    "Breakdown: each Relay runner's last run, means over the steps after the {warmup} warm-up steps "
    "(metrics.jsonl). Generation: the rollout actor's generate call as the learner sees it (Ray round trip "
    "included); adapter sync: the LoRA tensors put once in the object store and loaded by the actor; reward "
    "call: the reward actor's round trip. The learner waits for generation + sync in sync mode; in async mode "
    "both run in the background while it trains, and it waits only `rollout/wait_seconds`. Rest = s/step − "
    "waited − reward: TRL's own work (logprob forward, loss, backward, optimizer) plus Relay's per-step "
    "bookkeeping (adapter snapshot, metrics). Plain TRL's step is its in-process generation + the same TRL work. "
    "Staleness: policy versions a batch lagged the learner (0 sync; 1 async with max_staleness=1)."
)


def report(opts, model_desc: str, results: list[RunnerResult], loads: tuple, threads: tuple[int, int]) -> str:
    """The docs section's body: how it was run, the timing table, the breakdown table and how to read it."""
    (b1, b5, b15), (a1, a5, a15) = loads
    split = ""
    if any(r.runner.split_cores for r in results):
        learner, actor = split_threads(os.cpu_count() or 1)
        split = f" (the split runner: learner {learner}, rollout actor {actor})"
    return (
        f"`{command_line(opts)}` on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"{model_desc}, {opts.batch_size} completions (groups of {opts.num_generations}) x up to "
        f"{opts.max_new_tokens} tokens per step, `letters` env, LoRA r=16 on all linear layers, {opts.steps} steps "
        f"per run; torch threads: learner {threads[0]}, rollout actor {threads[1]}{split}. Load average (1/5/15 min) "
        f"before {b1:.2f}/{b5:.2f}/{b15:.2f}, after {a1:.2f}/{a5:.2f}/{a15:.2f}.\n\n"
        f"{timing_table(results, opts.repeats)}\n{breakdown_table(results)}\n"
        f"{BREAKDOWN_NOTE.format(warmup=WARMUP)}\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    opts = parser.parse_args(argv)
    problems = workload_problems(opts)
    if problems:
        parser.error("; ".join(problems))

    import torch

    from rl.config import ConfigError, load_config
    from rl.process_setup import quiet_libraries

    quiet_libraries()
    if opts.threads:
        torch.set_num_threads(opts.threads)  # plain TRL's learner; Relay's gets learner.torch_threads
    threads = (torch.get_num_threads(), opts.rollout_threads or os.cpu_count() or 1)  # Relay's default: 1 actor
    work = Path(tempfile.mkdtemp(prefix="relay-bench-overhead-"))
    try:
        for_vllm = any(r.engine == "vllm" for r in opts.runners)
        model_dir, model_desc = resolve_model(opts.model, work, for_vllm)
        base = base_overrides(opts, model_dir)
        cores = os.cpu_count() or 1
        cfgs = {r.name: load_config(LETTERS, [*base, *runner_overrides(r, cores)]) for r in opts.runners}
    except (UsageError, ConfigError) as exc:
        parser.error(str(exc))
    load_before = os.getloadavg()
    results = run_all(opts.runners, cfgs, model_dir, opts.repeats, work)
    load_after = os.getloadavg()
    body = report(opts, model_desc, results, (load_before, load_after), threads)
    print(body)
    write_section(section_title(opts.model), body)


if __name__ == "__main__":
    main()
