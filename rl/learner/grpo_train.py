"""The GRPO-family learner (``LEARNERS["grpo"]``): TRL's GRPOTrainer assembled on the session's rollout
and reward pools, trained, its adapter and summary written. Also one rank of the data-parallel learner
(``rl.learner.ddp``)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from rl.learner.session import Session

logger = logging.getLogger("relay")


class GRPOLearner:
    """The ``Learner`` for every GRPO-family ``algorithm.name`` in one process."""

    def train(self, session: Session) -> dict[str, Any] | None:
        return train_grpo(session)


def train_grpo(session: Session, world_size: int = 1) -> dict[str, Any] | None:
    """TRL's GRPOTrainer with generation and rewards delegated to the session's pools; the summary on rank 0.

    ``world_size`` > 1: this is one rank of a data-parallel learner (``rl.learner.ddp``; torch.distributed
    already initialised): each rank trains on learner.batch_size / world_size completions, TRL gathers the
    rewards so advantages are computed over the global batch, and files are written by rank 0 only."""
    from peft import LoraConfig as PeftLoraConfig
    from transformers import AutoTokenizer, PrinterCallback

    from rl.checkpoint import FinalizeCheckpoints
    from rl.learner.grpo import (
        RelayGRPOTrainer,
        SamplesToTensorBoard,
        StepStats,
        grpo_args,
        make_reward_func,
        make_rollout_func,
    )
    from rl.metrics import MetricsFile, RelayProgress, RunIdToTensorBoard, run_identity, start_wandb
    from rl.rollout.client import RolloutClient, rollout_sampling
    from rl.rollout.processors import build_factories

    plan, cfg, run_dir, model_path = session.plan, session.cfg, Path(session.run_dir), session.model_path
    rollout_pool, reward_pools, resume_from = session.rollout_pool, session.reward_pools, session.resume_from
    stats = StepStats()
    tb_dir = str(run_dir / "tensorboard")
    os.environ["TENSORBOARD_LOGGING_DIR"] = tb_dir  # read by transformers' TensorBoardCallback
    args = grpo_args(cfg, output_dir=str(run_dir / "checkpoints"), reward_weights=[p.spec.weight for p in reward_pools])
    args.model_init_kwargs = {"dtype": cfg.model.dtype}
    if world_size > 1:
        args.per_device_train_batch_size = cfg.learner.batch_size // world_size  # the global batch is unchanged
        args.ddp_find_unused_parameters = False  # every LoRA parameter takes part in every step
    sampling = rollout_sampling(cfg.rollout)
    g = cfg.algorithm.num_generations
    prompts_per_step = cfg.learner.batch_size // g
    client = RolloutClient(rollout_pool, sampling, g, cfg.seed, colocate=cfg.rollout.colocate)
    async_rollouts = None
    if cfg.rollout.mode == "async":  # prefetch up to max_staleness batches with earlier adapters
        from rl.learner.async_rollout import AsyncRollouts

        async_rollouts = AsyncRollouts(client, stats, cfg.rollout.max_staleness, plan.train_dataset, prompts_per_step,
                                       cfg.learner.max_steps - 1)  # fmt: skip
        rollout_func = async_rollouts
    else:
        rollout_func = make_rollout_func(client, stats)
    options: dict = {}
    if cfg.algorithm.name != "grpo":  # TRL's own advantages are GRPO's
        options.update(advantage_estimator=cfg.algorithm.name, kl_coef=cfg.algorithm.kl_coef)
    if async_rollouts is not None:  # the step-indexed prompt order the prefetcher reads ahead in
        from rl.algos.off_policy import StepSampler

        seed, max_steps = cfg.seed, cfg.learner.max_steps
        options["step_sampler"] = lambda n_rows: StepSampler(seed, n_rows, prompts_per_step, g, max_steps)
        if cfg.rollout.is_correction != "none":
            options.update(is_correction=cfg.rollout.is_correction, is_cap=cfg.rollout.is_cap)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    # The engines' logits processors (the genrec trie) also mask the learner's log-probs: one policy, sampled
    # and trained under the same constraint.
    constraints = build_factories(plan.env.logits_processors(run_dir), tokenizer)
    if cfg.algorithm.distill_coef > 0:  # on-policy distillation towards the env's token teacher (rl.algos.distill)
        from rl.registry import import_object

        target, kwargs = plan.env.token_teacher(run_dir)  # preflight checked that the env has one
        options.update(
            token_teacher=import_object(target, what="env token_teacher")(tokenizer, **kwargs),
            distill_coef=cfg.algorithm.distill_coef,
            distill_lambda=cfg.algorithm.distill_lambda,
            distill_divergence=cfg.algorithm.distill_divergence,
        )
    trainer = RelayGRPOTrainer(
        model=model_path,
        reward_funcs=[make_reward_func(pool, stats) for pool in reward_pools],
        args=args,
        train_dataset=plan.train_dataset,
        processing_class=tokenizer,
        peft_config=PeftLoraConfig(**session.lora),
        rollout_func=rollout_func,
        relay_stats=stats,
        logit_constraints=constraints,
        **options,
    )
    if async_rollouts is not None:
        async_rollouts.dataset = trainer.train_dataset  # the rows TRL draws its batches from
        if resume_from is not None:  # the batches in flight at the checkpoint, with their own adapters
            async_rollouts.restore(resume_from)
    trainer.remove_callback(PrinterCallback)  # the progress bar and metrics.jsonl replace raw dict prints
    if async_rollouts is not None:  # in-flight batches + adapters into each checkpoint, before its marker
        from rl.learner.async_rollout import async_checkpoint_callback

        trainer.add_callback(async_checkpoint_callback(async_rollouts))
    keep_best = (cfg.checkpoint.keep_best, cfg.checkpoint.keep_best_mode) if cfg.checkpoint.keep_best else None
    trainer.add_callback(FinalizeCheckpoints(run_dir, cfg.checkpoint.keep, keep_best))  # all ranks; rank 0 writes
    if plan.eval_dataset is not None:  # eval.every_steps: held-out reward on the rollout actors
        from rl.learner.periodic_eval import periodic_eval_callback

        trainer.add_callback(periodic_eval_callback(cfg, plan.eval_dataset, run_dir, rollout_pool, reward_pools,
                                                    stats, trainer.processing_class, async_rollouts))  # fmt: skip
    main = trainer.is_world_process_zero()
    if main:
        trainer.add_callback(MetricsFile(run_dir / "metrics.jsonl"))  # before RelayProgress: it adds tokens/s
    if main and cfg.logging.progress_bar:
        trainer.add_callback(RelayProgress())
    if main and cfg.logging.tensorboard:
        trainer.add_callback(SamplesToTensorBoard(tb_dir, stats))
        trainer.add_callback(RunIdToTensorBoard(tb_dir, run_identity(run_dir)))
    if main and cfg.logging.wandb:
        start_wandb(cfg, run_dir)  # W&B id = the run id, resume="allow": a resumed run continues the same W&B run
    for callback in session.callbacks:
        trainer.add_callback(callback)
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        if async_rollouts is not None:
            async_rollouts.close()
    trainer.save_model(str(run_dir / "adapter"))  # every rank calls it; transformers writes on rank 0
    if not main:
        return None
    summary = {"steps": trainer.state.global_step, "seconds": round(time.perf_counter() - t0, 2)}
    if world_size > 1:
        summary["learner_workers"] = world_size
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("finished: %s", summary)
    return summary
