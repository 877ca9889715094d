"""Rollout engines side by side: ``hf`` (transformers) vs ``vllm`` (vLLM's CPU build here) in Ray actors.

    python bench/engines.py [--model tiny|DIR] [--prompts 4] [--n 8] [--max-new-tokens 128]
                            [--repeats 3] [--grpo-steps 8] [--dtype float32]

1. Generation: one Ray rollout actor per engine, same model, prompts, n, lengths and sampling
   (temperature 1, per-rollout seeds); both actors start first (start-up time reported), then the
   generate calls alternate hf, vllm, hf, vllm, ... (``--repeats`` each, after one warm-up call each).
   Reported: completion tokens/s around the Ray call (what the learner sees).
2. GRPO: ``relay train configs/letters.yaml`` with ``rollout.engine=hf`` and ``=vllm`` alternately
   (``--repeats`` runs each), median seconds per optimizer step after two warm-up steps.

``--model tiny`` is the tiny Qwen2 with 2 attention heads (head size 32: vLLM's CPU kernels support no
smaller head); ``--model smollm2-135m-instruct`` the packaged real model; ``--model DIR`` any local checkpoint.
Writes the "Rollout engines" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from bench.common import StepTimer, local_cluster, write_section  # noqa: E402

ENGINES = ("hf", "vllm")
PROMPTS = [
    [{"role": "user", "content": "Describe a photo of a red bench left of a cat."}],
    [{"role": "user", "content": "Write a prompt for an image of two dogs on a green couch."}],
    [{"role": "user", "content": "Describe a small blue car next to a yellow umbrella."}],
    [{"role": "user", "content": "A picture of three apples on a white table; add visual detail."}],
]


def engine_kwargs(engine: str, model_dir: str, dtype: str) -> dict:
    kwargs = {"model_path": model_dir, "lora": {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"},
              "dtype": dtype, "torch_threads": 1}  # fmt: skip
    if engine == "vllm":
        kwargs.update(cpu_kv_cache_gib=1, enforce_eager=True, max_model_len=1024)
    return kwargs


def bench_generation(model_dir: str, opts) -> dict[str, dict]:
    from rl.rollout.pool import RolloutPool
    from rl.rollout.types import SamplingParams

    prompts = (PROMPTS * opts.prompts)[: opts.prompts]
    sampling = SamplingParams(max_new_tokens=opts.max_new_tokens, temperature=1.0)
    pools, out = {}, {}
    for engine in ENGINES:
        t0 = time.perf_counter()
        pools[engine] = RolloutPool(1, engine, engine_kwargs(engine, model_dir, opts.dtype), num_cpus_per_worker=1)
        out[engine] = {"startup_s": time.perf_counter() - t0, "tps": []}  # the pool waits for its engines
    try:
        for rep in range(opts.repeats + 1):  # rep 0: warm-up, not recorded
            for engine in ENGINES:
                seeds = [1000 * rep + i for i in range(len(prompts) * opts.n)]
                pools[engine].generate(prompts, opts.n, sampling, seeds=seeds)
                if rep:
                    out[engine]["tps"].append(pools[engine].stats.last_tokens_per_second)
    finally:
        for pool in pools.values():
            pool.close()
    return out


def bench_grpo(model_dir: str, opts, work: Path) -> dict[str, list[float]]:
    from rl.config import load_config
    from rl.driver import train

    letters = Path(__file__).resolve().parents[1] / "configs" / "letters.yaml"
    runs: dict[str, list[float]] = {e: [] for e in ENGINES}
    for rep in range(opts.repeats):
        for engine in ENGINES:
            cfg = load_config(letters, [f"model.name={model_dir}", f"rollout.engine={engine}", f"model.dtype={opts.dtype}",
                                        f"learner.max_steps={opts.grpo_steps}", "logging.tensorboard=false",
                                        "logging.progress_bar=false", "checkpoint.every_steps=0"])  # fmt: skip
            timer = StepTimer()
            train(cfg, work / f"grpo-{engine}-{rep}", callbacks=[timer])
            runs[engine].append(timer.median())
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="'tiny' (head size 32) or a local model directory")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grpo-steps", type=int, default=8, help="0 skips the GRPO part")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    opts = parser.parse_args()

    from rl.tiny_model import TinyModelSpec, build_tiny_model

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="relay-bench-engines-"))
    if opts.model == "tiny":
        model_dir = str(build_tiny_model(work / "model", TinyModelSpec(num_attention_heads=2, num_key_value_heads=1)))
        model_name = "tiny Qwen2 (hidden 64, 2 layers, 2 heads of 32)"
    else:
        from rl import packaged_models

        if packaged_models.is_packaged(opts.model):  # e.g. smollm2-135m-instruct: its converted cache dir
            model_dir = str(packaged_models.materialise(opts.model, None))
        else:
            model_dir = opts.model
        model_name = f"`{opts.model}`"
    with local_cluster(num_cpus=4):
        gen = bench_generation(model_dir, opts)
    grpo = bench_grpo(model_dir, opts, work) if opts.grpo_steps else {}
    load_after = os.getloadavg()

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    ratio = med(gen["vllm"]["tps"]) / med(gen["hf"]["tps"])
    rows = "\n".join(
        f"| {e} | {gen[e]['startup_s']:.1f} | {med(gen[e]['tps']):.1f} | {', '.join(f'{x:.0f}' for x in gen[e]['tps'])} |"
        for e in ENGINES
    )
    table = (
        "| engine | actor start-up s | completion tokens/s, median | each repeat |\n"
        f"|---|---|---|---|\n{rows}\n| **vllm / hf** | | **{ratio:.2f}x** | |\n"
    )
    grpo_table = ""
    if grpo:
        grpo_rows = "\n".join(
            f"| {e} | {med(grpo[e]):.2f} | {', '.join(f'{x:.2f}' for x in grpo[e])} |" for e in ENGINES
        )
        grpo_table = (
            f"\nGRPO on `configs/letters.yaml` with this model, {opts.grpo_steps} steps per run, runs alternating:\n\n"
            f"| engine | s/step, median of {opts.repeats} runs | each run |\n|---|---|---|\n{grpo_rows}\n"
            f"| **vllm / hf** | **{med(grpo['vllm']) / med(grpo['hf']):.2f}x** | |\n"
        )
    command = (
        f"python bench/engines.py --model {opts.model} --prompts {opts.prompts} --n {opts.n} "
        f"--max-new-tokens {opts.max_new_tokens} --repeats {opts.repeats} --grpo-steps {opts.grpo_steps} --dtype {opts.dtype}"
    )
    body = (
        f"`{command}` on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), {model_name}, "
        f"{opts.dtype}, {opts.prompts} prompts x {opts.n} samples x up to {opts.max_new_tokens} tokens, temperature 1, "
        f"one Ray actor per engine (1 CPU, 1 torch thread), vLLM {gen_version()} with a 1 GiB KV cache and eager mode. "
        f"Load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}.\n\n{table}{grpo_table}"
    )
    print(body)
    label = "SmolLM2-135M-Instruct" if "smollm2" in opts.model else Path(opts.model).name
    write_section(f"Rollout engines: hf vs vllm, {label} (bench/engines.py)", body)


def gen_version() -> str:
    from rl.rollout.vllm_glue import installed_build

    build = installed_build()
    return f"{build[0]} build {build[1]}" if build else "not installed"


if __name__ == "__main__":
    main()
