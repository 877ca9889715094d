"""The distilled SFT step (``sft.distill_coef`` > 0) three ways, side by side: what the shipped step saves.

    python bench/distill_sft_step.py [--config configs/genrec_scientific.yaml] [--steps 40] [--repeats 2]
        [dotted.key=value ...]

The recipe's own SFT (``rl.learner.sft.sft_trainer``: same data, model, LoRA or not, teacher), ``--steps``
optimizer steps per run, with the step's two parts swapped:
- ``dense``: the KL to the teacher at every position of the [B, T, V] logits, masked (the first version),
  inside TRL's ``SFTTrainer.compute_loss``, which runs a second, no-grad forward for its entropy and
  token-accuracy metrics;
- ``positions``: the KL at the N labelled positions the teacher has a target for ([N, V],
  ``TeacherForcedLoss``), still inside TRL's ``compute_loss``;
- ``shipped``: ``TeacherForcedLoss`` in ``_DistillSFTTrainer`` (one forward a step).
Runs alternate (``dense, positions, shipped``, then reversed, ``--repeats`` times); the median optimizer-step
time of each run after its first 2 steps is kept. The three compute the same loss: the first and last losses
of each variant are printed beside the times (equal up to float error). Writes the section "Genrec, the
distilled SFT's step (bench/distill_sft_step.py)" of docs/benchmarks.md (``--docs`` elsewhere).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import StepTimer, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("dense", "positions", "shipped")


def dense_loss_class():
    """``TeacherForcedLoss`` with its KL computed the first way: at every position of [B, T-1, V], then masked."""
    from rl.algos.distill import forward_kl_per_token
    from rl.learner.sft import TeacherForcedLoss

    class DenseTeacherForcedLoss(TeacherForcedLoss):
        @staticmethod
        def mean_kl(logits, teacher, where):
            kl, _ = forward_kl_per_token(logits, teacher)  # [B, T-1]: every position
            return (kl * where).sum() / where.sum().clamp(min=1)

    return DenseTeacherForcedLoss


def trl_compute_loss_class():
    """TRL's own ``SFTTrainer.compute_loss`` (its second forward included), with the batch's input ids handed to
    the loss function as ``_DistillSFTTrainer`` hands them."""
    from trl import SFTTrainer

    class TRLComputeLoss(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.compute_loss_func.input_ids = inputs["input_ids"]
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return TRLComputeLoss


def one_run(cfg, env, model_path: str, variant: str, out: Path) -> dict:
    """Median step seconds (after 2) and the first / last logged loss of ``cfg.sft.steps`` steps of ``variant``."""
    from transformers import PrinterCallback

    from rl.learner.sft import sft_trainer

    parts = {
        "dense": {"loss_class": dense_loss_class(), "trainer_class": trl_compute_loss_class()},
        "positions": {"trainer_class": trl_compute_loss_class()},
        "shipped": {},
    }[variant]
    trainer, _ = sft_trainer(cfg, env, model_path, out / f"sft_trainer_{variant}", **parts)
    trainer.remove_callback(PrinterCallback)  # no raw loss dicts on the console, as in the warm start
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"step_s": timer.median(), "first_loss": losses[0], "last_loss": losses[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "genrec_scientific.yaml"))
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds (each runs every variant once)")
    ap.add_argument("--title", default="Genrec, the distilled SFT's step (bench/distill_sft_step.py)")
    ap.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"), help="where the section goes")
    ap.add_argument("overrides", nargs="*", help="dotted.key=value, as for relay train")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from rl.base_model import resolve_model
    from rl.config import ConfigError, load_config
    from rl.preflight import preflight

    try:  # bad config, env args or data: the problems by field, exit 2 (as `relay train`)
        cfg = load_config(args.config, args.overrides)
        n = args.steps * cfg.sft.batch_size  # one pass over fresh examples
        cfg = load_config(args.config, [*args.overrides, f"sft.steps={args.steps}", f"sft.num_examples={n}"])
        if cfg.sft.distill_coef <= 0:
            raise ConfigError(
                [f"sft.distill_coef ({cfg.sft.distill_coef}): the bench times the distilled step; set it > 0"]
            )
        env = preflight(cfg).env
    except ConfigError as exc:
        print(f"distill_sft_step: {exc}", file=sys.stderr)
        return 2
    out = Path(tempfile.mkdtemp(prefix="distill-sft-step-"))
    model_path = env.prepare_model(resolve_model(cfg, out), out)
    vocab = len(AutoTokenizer.from_pretrained(model_path))
    load = os.getloadavg()
    start = time.perf_counter()
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for v in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
            runs[v].append(one_run(cfg, env, model_path, v, out))
            print(f"{v}: {runs[v][-1]}", file=sys.stderr)
    base = statistics.mean(x["step_s"] for x in runs["dense"])
    lines = [
        f"`python bench/distill_sft_step.py --steps {args.steps} --repeats {args.repeats} {' '.join(args.overrides)}` "
        f"(config {Path(args.config).name}, seed {cfg.seed}, batch {cfg.sft.batch_size}, vocabulary {vocab}; "
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, 1-min load {load[0]:.2f} -> {os.getloadavg()[0]:.2f}; "
        f"{(time.perf_counter() - start) / 60:.1f} min in all). Median optimizer-step time of each run after its "
        "first 2 steps; runs alternate (dense, positions, shipped, then reversed). The three variants: `dense` = "
        "the KL to the teacher at every position of the [B, T, V] logits, masked, inside TRL's "
        "`SFTTrainer.compute_loss` (which runs a second, no-grad forward for its metrics); `positions` = the KL at "
        "the labelled positions only, still in TRL's `compute_loss`; `shipped` = `TeacherForcedLoss` in "
        "`_DistillSFTTrainer` (one forward a step). Equal losses across a row's runs and across the variants "
        "mean the same computation.",
        "",
        "| step | median step time, each run | mean | speed-up over dense | first -> last loss, each run |",
        "|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        times = [x["step_s"] for x in runs[v]]
        losses = ", ".join(f"{x['first_loss']:.4f} -> {x['last_loss']:.4f}" for x in runs[v])
        lines.append(
            f"| {v} | {' / '.join(f'{t:.3f} s' for t in times)} | {statistics.mean(times):.3f} s | "
            f"{base / statistics.mean(times):.2f}x | {losses} |"
        )
    shutil.rmtree(out, ignore_errors=True)
    body = "\n".join(lines)
    write_section(args.title, body, Path(args.docs))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
