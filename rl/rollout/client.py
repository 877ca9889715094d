"""The learner's one way to the rollout pool: ship the adapter when its version moved, derive the seeds,
generate, measure; and, when the engines share the learner's devices, wake them before and put them to
sleep after. Sync GRPO (``rl.learner.grpo.make_rollout_func``), async GRPO
(``rl.learner.async_rollout.AsyncRollouts``) and PPO (``rl.learner.ppo.PPORecipe``) all go through it,
so they sample the same completions for the same (seed, step, prompt position) and write the same
``rollout/*`` metrics.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from typing import Any

from rl.adapter import tensors_nbytes
from rl.rollout.sampling import sample_seed
from rl.rollout.types import Rollout, SamplingParams


def rollout_metrics(rollouts: Sequence[Rollout], step: int, generate_seconds: float) -> dict[str, float]:
    """The per-step rollout metrics of ``rollouts`` generated for learner step ``step``."""
    n_tokens = sum(len(r.completion_ids) for r in rollouts)
    staleness = [step - r.version for r in rollouts]  # per sample, in policy versions; 0 = on-policy
    return {
        # A checksum of every generated token id: resumed and uninterrupted runs must agree on it.
        "rollout/token_hash": zlib.crc32(json.dumps([r.completion_ids for r in rollouts]).encode()),
        "rollout/generate_seconds": generate_seconds,
        "rollout/tokens": n_tokens,
        "rollout/tokens_per_second": n_tokens / max(generate_seconds, 1e-9),
        "rollout/adapter_version": min(r.version for r in rollouts),
        "rollout/staleness_mean": sum(staleness) / len(staleness),
        "rollout/staleness_max": max(staleness),
    }


def rollout_sampling(rollout: Any) -> SamplingParams:
    """The training rollouts' ``SamplingParams`` from the ``rollout`` config section (``RolloutConfig``);
    every learner (GRPO family, PPO) samples with these."""
    return SamplingParams(
        max_new_tokens=rollout.max_new_tokens,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        beam_search=rollout.beam_search,
    )


class RolloutClient:
    """See the module docstring. ``pool``: an ``rl.rollout.pool.RolloutPool`` (or anything with its
    ``sync_adapter``/``adopt_adapter``/``generate``/``sleep``/``wake_up``)."""

    def __init__(self, pool: Any, sampling: SamplingParams, num_generations: int, base_seed: int,
                 colocate: bool = False):  # fmt: skip
        self.pool, self.sampling, self.g = pool, sampling, num_generations
        self.base_seed, self.colocate = base_seed, colocate
        self.version: int | None = None  # the adapter version the pool holds, as far as this client knows

    def sync(self, version: int, tensors: dict[str, Any], accelerator: Any = None) -> dict[str, float]:
        """Ship ``tensors`` as ``version`` unless the pool already holds it; the sync metrics, or {} if
        nothing moved. With a data-parallel ``accelerator`` (identical adapters on every rank, DDP) rank 0
        ships it once and the other ranks record the version after a barrier."""
        if self.version == version:
            return {}
        t0 = time.perf_counter()
        if accelerator is None or accelerator.num_processes == 1:
            self.pool.sync_adapter(version, tensors)
        else:
            if accelerator.is_main_process:
                self.pool.sync_adapter(version, tensors)
            accelerator.wait_for_everyone()  # no rank generates before the workers hold `version`
            if not accelerator.is_main_process:
                self.pool.adopt_adapter(version, tensors)
        self.version = version
        return {"rollout/sync_seconds": time.perf_counter() - t0, "rollout/sync_bytes": tensors_nbytes(tensors)}

    def seeds(self, seed_step: int, n_prompts: int, offset: int = 0) -> list[int]:
        """One seed per (step, position in the global batch, sample): independent of how the pool shards
        and of how many learner ranks split the batch (rank r holds global prompts r*n_prompts onwards)."""
        return [sample_seed(self.base_seed, seed_step, offset + i, j) for i in range(n_prompts) for j in range(self.g)]

    def generate(self, prompts: list[Any], version: int, seed_step: int | None = None,
                 offset: int = 0) -> tuple[list[Rollout], float]:  # fmt: skip
        """``num_generations`` rollouts per prompt from adapter ``version`` (refused by a worker holding
        another), seeded by ``seed_step`` (default ``version``); returns them and the seconds taken."""
        seeds = self.seeds(version if seed_step is None else seed_step, len(prompts), offset)
        t0 = time.perf_counter()
        rollouts = self.pool.generate(prompts, self.g, self.sampling, seeds=seeds, expected_version=version)
        return rollouts, time.perf_counter() - t0

    def wake_up(self, accelerator: Any = None) -> dict[str, float]:
        """``colocate``: the engines back on the devices (rank 0 asks; every rank waits)."""
        if not self.colocate:
            return {}
        t0 = time.perf_counter()
        if accelerator is None or accelerator.is_main_process:
            self.pool.wake_up()
        if accelerator is not None:
            accelerator.wait_for_everyone()
        return {"rollout/wake_seconds": time.perf_counter() - t0}

    def sleep(self, accelerator: Any = None) -> None:
        """``colocate``: every rank done generating, then the engines free the devices for the learner."""
        if not self.colocate:
            return
        if accelerator is not None:
            accelerator.wait_for_everyone()
        if accelerator is None or accelerator.is_main_process:
            self.pool.sleep()
