"""Evaluation during training (``eval.every_steps``): a held-out reward next to the training reward.

Every N steps, right after the optimizer step, the current adapter is loaded into the rollout actors
(the version the next training batch will use anyway) and the env's held-out split
(``Env.eval_dataset``) is generated with ``eval.sampling`` (greedy by default), then scored by the
run's own reward pools with the run's weights. The numbers are merged into that step's metrics
record as ``eval/<metric>`` (so metrics.jsonl, TensorBoard and W&B get them the way they get every
training metric) and appended to ``RUN_DIR/eval_history.jsonl``, which ``checkpoint.keep_best``
reads (``rl.checkpoint.best_checkpoint``).

Training is not disturbed: the eval draws its sampling seeds from its own stream, touches no
learner RNG, records nothing in the training stats but its own ``eval/`` keys, and re-syncing an
adapter version the pool already holds is a no-op for what the next step generates. In async mode
the eval runs on the prefetch thread (``AsyncRollouts.run_on_pool``), after the batches already
queued, so it never interleaves with their adapter syncs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rl.adapter import lora_state_dict
from rl.checkpoint import EVAL_HISTORY
from rl.rollout.sampling import eval_seed
from rl.rollout.types import SamplingParams

logger = logging.getLogger(__name__)


def eval_problems(cfg, env) -> tuple[list[str], Any]:
    """(problems, held-out dataset) for ``eval.every_steps``; the dataset is None when it is off."""
    if not cfg.eval.every_steps:
        return [], None
    field = f"eval.every_steps ({cfg.eval.every_steps})"
    try:
        dataset = env.eval_dataset()
    except NotImplementedError:
        dataset = None
    if dataset is None:
        return [
            f"{field}: env {cfg.env.name!r} has no held-out split to evaluate on during training "
            "(Env.eval_dataset returns None); set eval.every_steps=0, or use `relay eval` after training"
        ], None
    if "prompt" not in dataset.column_names or len(dataset) == 0:
        return [f"{field}: env {cfg.env.name!r}'s held-out split is empty or has no 'prompt' column"], None
    if cfg.learner.num_workers > 1:
        return [
            f"{field}: periodic eval runs in a single learner process; set learner.num_workers=1 or eval.every_steps=0"
        ], None
    if cfg.eval.max_prompts:
        n, total = cfg.eval.max_prompts, len(dataset)
        if n < total:  # spread over the split (keeps e.g. every GenEval tag represented)
            dataset = dataset.select([int(i * total / n) for i in range(n)])
    return [], dataset


def eval_sampling(cfg) -> SamplingParams:
    s = cfg.eval.sampling
    return SamplingParams(
        max_new_tokens=s.max_new_tokens or cfg.rollout.max_new_tokens,
        temperature=s.temperature,
        top_p=cfg.rollout.top_p if s.temperature > 0 else 1.0,
        top_k=cfg.rollout.top_k if s.temperature > 0 else 0,
    )


def periodic_eval_callback(cfg, dataset, run_dir: Path, rollout_pool, reward_pools, stats, tokenizer,
                           async_rollouts=None) -> PeriodicEval:  # fmt: skip
    """The ``PeriodicEval`` of a GRPO run (``dataset``: the held-out split ``eval_problems`` returned)."""
    return PeriodicEval(
        every=cfg.eval.every_steps,
        dataset=dataset,
        rollout_pool=rollout_pool,
        reward_pools=reward_pools,
        sampling=eval_sampling(cfg),
        n=cfg.eval.sampling.n,
        base_seed=cfg.seed,
        stats=stats,
        tokenizer=tokenizer,
        run_dir=run_dir,
        batch_size=cfg.eval.batch_size,
        run_on_pool=async_rollouts.run_on_pool if async_rollouts is not None else None,
    )


class PeriodicEval(TrainerCallback):
    """Runs the held-out eval at every ``every``-th step (see the module docstring)."""

    def __init__(
        self,
        *,
        every: int,
        dataset,
        rollout_pool,
        reward_pools: list[Any],  # rewards.pool.RewardPool, each named and weighted by its spec
        sampling: SamplingParams,
        n: int,
        base_seed: int,
        stats,
        tokenizer,
        run_dir: Path,
        batch_size: int = 64,
        run_on_pool: Callable[[Callable[[], Any]], Any] | None = None,
    ):
        self.every, self.dataset, self.pool, self.reward_pools = every, dataset, rollout_pool, reward_pools
        self.sampling, self.n, self.base_seed, self.stats = sampling, n, base_seed, stats
        self.tokenizer, self.history = tokenizer, Path(run_dir) / EVAL_HISTORY
        self.batch_size = batch_size
        self.run_on_pool = run_on_pool or (lambda job: job())
        self.prompts = list(dataset["prompt"])
        self.columns = {c: list(dataset[c]) for c in dataset.column_names if c != "prompt"}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every or not state.is_world_process_zero or model is None:
            return
        metrics = self.evaluate(step, model)
        for key, value in metrics.items():
            self.stats.add(key, value)  # merged into this step's log record (metrics.jsonl, TensorBoard, W&B)
        with self.history.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        logger.info("eval at step %d: %s", step, {k: round(v, 4) for k, v in metrics.items()})

    def _generate(self, step: int, tensors) -> list:
        self.pool.sync_adapter(step, tensors)  # the version the next training batch is generated with
        out = []
        for start in range(0, len(self.prompts), self.batch_size):
            chunk = self.prompts[start : start + self.batch_size]
            seeds = [eval_seed(self.base_seed, step, start + i, j) for i in range(len(chunk)) for j in range(self.n)]
            for r in self.pool.generate(chunk, self.n, self.sampling, seeds=seeds, expected_version=step):
                r.prompt_index += start
                out.append(r)
        return out

    def evaluate(self, step: int, model) -> dict[str, float]:
        t0 = time.perf_counter()
        tensors = lora_state_dict(getattr(model, "module", model))
        rollouts = self.run_on_pool(lambda: self._generate(step, tensors))
        texts = self.tokenizer.batch_decode([r.completion_ids for r in rollouts], skip_special_tokens=True)
        prompts = [self.prompts[r.prompt_index] for r in rollouts]
        conversational = isinstance(prompts[0], list)
        # What TRL hands reward functions: assistant messages for chat prompts, else the text.
        completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
        columns = {c: [v[r.prompt_index] for r in rollouts] for c, v in self.columns.items()}
        ids = [r.completion_ids for r in rollouts]

        async def score_all():
            return await asyncio.gather(*(p.ascore(prompts, completions, ids, **columns) for p in self.reward_pools))

        results = asyncio.run(score_all())
        metrics: dict[str, float] = {}
        totals: list[float | None] = [None] * len(rollouts)
        for pool, result in zip(self.reward_pools, results, strict=True):
            name, weight = pool.spec.name, pool.spec.weight
            scored = [v for v in result.values if v is not None]
            if scored:
                metrics[f"eval/rewards/{name}"] = sum(scored) / len(scored)
            metrics[f"eval/rewards/{name}/n_unscored"] = float(len(result.values) - len(scored))
            for i, v in enumerate(result.values):
                if v is not None:  # like TRL: a sample's reward is the weighted sum of its scored components
                    totals[i] = (totals[i] or 0.0) + weight * v
        scored_totals = [t for t in totals if t is not None]
        if scored_totals:
            metrics["eval/reward"] = sum(scored_totals) / len(scored_totals)
        metrics["eval/completion_length"] = sum(len(i) for i in ids) / len(ids)
        metrics["eval/num_samples"] = float(len(rollouts))
        metrics["eval/seconds"] = time.perf_counter() - t0
        return metrics
