"""Asynchronous rollouts: a prefetching TRL ``rollout_func``.

At learner step ``t`` (policy version ``t``) the function (1) snapshots the LoRA tensors, (2) queues,
on one background thread, "sync adapter v=t, then generate batch b" for every batch b in
``rl.algos.off_policy.prefetch_targets`` (up to ``t + max_staleness``), and (3) waits for batch
``t``, which was queued at an earlier step and generated while the learner was busy. The batch
order is ``StepSampler``'s pure function of (seed, step), installed as the trainer's sampler, so the
prompts of any future step are known now; the prompts TRL hands over at step ``t`` are checked
against the prefetched ones. Sampling seeds are ``sample_seed(seed, b, position, sample)`` exactly as
in sync mode, so results do not depend on how the pool shards.

All pool calls run on the single background thread, in submission order: a sync never overlaps a
generate and every generate names the adapter version it expects (workers refuse any other).

Exact resume: each checkpoint also holds the batches in flight at that moment (``async_rollouts.json``:
batch -> the adapter version that generates it) and those versions' LoRA tensors
(``async_adapters.safetensors``, small). ``restore`` re-submits exactly those batches with exactly those
adapters, so a resumed run trains on the batches the uninterrupted run would have (same tokens, same
staleness, same metrics); see docs/algorithms.md.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rl.adapter import lora_state_dict
from rl.algos.off_policy import prefetch_targets, step_prompt_indices
from rl.learner.grpo import record_rollouts, rollout_output
from rl.rollout.client import RolloutClient
from rl.rollout.types import Rollout

logger = logging.getLogger(__name__)


@dataclass
class Prefetched:
    """One generated batch and how it was made."""

    batch: int  # the learner step that trains on it
    version: int  # adapter version that generated it
    prompts: list[Any]  # [P] distinct prompts
    rollouts: list[Rollout]  # [P * G], prompt-major
    generate_seconds: float
    sync_seconds: float | None  # None: no sync was needed before this batch
    sync_bytes: int


class AsyncRollouts:
    """TRL ``rollout_func`` that keeps up to ``max_staleness`` batches generating ahead of the learner."""

    def __init__(self, client: RolloutClient, stats, max_staleness: int, dataset, prompts_per_step: int,
                 last_step: int):  # fmt: skip
        if max_staleness < 1:
            raise ValueError(f"max_staleness ({max_staleness}) must be >= 1 for asynchronous rollouts")
        self.client, self.g = client, client.g
        self.base_seed, self.stats, self.max_staleness = client.base_seed, stats, max_staleness
        self.dataset, self.per_step, self.last_step = dataset, prompts_per_step, last_step
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-rollout")
        self._futures: dict[int, Future] = {}
        self._submitted_upto = -1
        # batch -> (version, tensors, synced) for every batch submitted and not yet trained on: what a
        # checkpoint must hold to regenerate them exactly (``save``/``restore``)
        self._inflight: dict[int, tuple[int, dict, bool]] = {}
        self._last_version: int | None = None  # version of the latest submitted batch

    def prompts_of(self, batch: int) -> list[Any]:
        indices = step_prompt_indices(self.base_seed, batch, len(self.dataset), self.per_step)
        return [self.dataset[i]["prompt"] for i in indices]

    def _submit(self, batch: int, version: int, tensors, synced: bool | None = None) -> None:
        """Queue ``batch`` for ``version``; ``synced``: whether the uninterrupted run synced the adapter right
        before it (a restored batch reports the same, whatever this fresh pool needs)."""
        if synced is None:
            synced = version != self._last_version
        self._inflight[batch] = (version, tensors, synced)
        self._last_version = version
        self._futures[batch] = self._executor.submit(self._generate, batch, version, tensors, synced)

    def _generate(self, batch: int, version: int, tensors, synced: bool = True) -> Prefetched:
        moved = self.client.sync(version, tensors)  # {} when the pool already holds `version`
        if not synced:  # restored batch whose adapter the uninterrupted run already held: report no sync
            moved = {}
        prompts = self.prompts_of(batch)
        rollouts, seconds = self.client.generate(prompts, version, seed_step=batch)  # seeded by the batch
        return Prefetched(batch, version, prompts, rollouts, seconds, moved.get("rollout/sync_seconds"),
                          moved.get("rollout/sync_bytes", 0))  # fmt: skip

    def __call__(self, prompts: list[Any], trainer) -> dict[str, list]:
        g = self.g
        if len(prompts) % g:
            raise RuntimeError(f"rollout_func got {len(prompts)} prompts, not a multiple of num_generations={g}")
        step = trainer.state.global_step
        for stale in [b for b in self._futures if b < step]:  # cannot happen in one process; be safe
            self._futures.pop(stale).cancel()
        targets = prefetch_targets(step, self._submitted_upto, self.max_staleness, self.last_step)
        if targets:
            tensors = lora_state_dict(trainer.model)  # a copy: the optimizer may change the weights meanwhile
            for batch in targets:
                self._submit(batch, step, tensors)
            self._submitted_upto = targets[-1]
        if step not in self._futures:
            raise RuntimeError(f"async rollouts: no batch was prefetched for step {step} (last step {self.last_step})")
        t0 = time.perf_counter()
        done: Prefetched = self._futures.pop(step).result()
        self._inflight.pop(step, None)
        wait_seconds = time.perf_counter() - t0
        if done.prompts != list(prompts[::g]):
            raise RuntimeError(
                f"async rollouts: the prompts prefetched for step {step} differ from the ones the trainer drew; "
                "the trainer must use the StepSampler (RelayGRPOTrainer.step_sampler)"
            )
        self._record(step, done, wait_seconds, trainer)
        return rollout_output(done.rollouts)

    def _record(self, step: int, done: Prefetched, wait_seconds: float, trainer) -> None:
        record_rollouts(self.stats, done.rollouts, step, done.prompts, done.generate_seconds, trainer.processing_class)
        if done.sync_seconds is not None:
            self.stats.add("rollout/sync_seconds", done.sync_seconds)
            self.stats.add("rollout/sync_bytes", done.sync_bytes)
        self.stats.add("rollout/prompt_hash", zlib.crc32(json.dumps(done.prompts, sort_keys=True).encode()))
        self.stats.add("rollout/wait_seconds", wait_seconds)  # learner idle time waiting for this batch

    # ---- exact resume ----------------------------------------------------------------------------
    STATE, ADAPTERS = "async_rollouts.json", "async_adapters.safetensors"

    def save(self, ckpt_dir) -> None:
        """Write the in-flight batches and their adapters into ``ckpt_dir`` (before its marker is written)."""
        from pathlib import Path

        from safetensors.torch import save_file

        ckpt_dir = Path(ckpt_dir)
        batches = {str(b): {"version": v, "synced": synced} for b, (v, _, synced) in sorted(self._inflight.items())}
        tensors = {}
        for _, (v, ts, _) in sorted(self._inflight.items()):
            tensors.update({f"v{v}/{name}": t for name, t in ts.items()})
        save_file(tensors, str(ckpt_dir / self.ADAPTERS))
        state = {"submitted_upto": self._submitted_upto, "last_version": self._last_version, "batches": batches}
        (ckpt_dir / self.STATE).write_text(json.dumps(state, indent=1) + "\n")

    def restore(self, ckpt_dir) -> bool:
        """Re-submit the batches in flight when ``ckpt_dir`` was saved, with their own adapters; False when the
        checkpoint holds no such state (then the window restarts at its step with the restored adapter)."""
        from pathlib import Path

        from safetensors.torch import load_file

        ckpt_dir = Path(ckpt_dir)
        if not (ckpt_dir / self.STATE).is_file():
            return False
        state = json.loads((ckpt_dir / self.STATE).read_text())
        flat = load_file(str(ckpt_dir / self.ADAPTERS))
        by_version: dict[int, dict] = {}
        for key, t in flat.items():
            v, _, name = key.partition("/")
            by_version.setdefault(int(v[1:]), {})[name] = t
        for b, meta in sorted(((int(b), m) for b, m in state["batches"].items())):
            self._submit(b, meta["version"], by_version[meta["version"]], synced=meta["synced"])
        self._submitted_upto, self._last_version = state["submitted_upto"], state["last_version"]
        logger.info("async rollouts: restored %d in-flight batch(es) from %s", len(state["batches"]), ckpt_dir)
        return True

    def run_on_pool(self, job):
        """Run ``job()`` (e.g. a periodic eval) on the prefetch thread, after every batch already queued, so
        its pool calls never interleave with theirs; it must leave ``client.version`` alone (the next batch
        then re-syncs its adapter, exactly as without the job)."""
        return self._executor.submit(job).result()

    def close(self) -> None:
        """Drop prefetched batches nobody will train on (end of run, or a checkpoint-and-exit)."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)


def async_checkpoint_callback(async_rollouts: AsyncRollouts):
    """Saves ``async_rollouts``' in-flight batches and adapters into each checkpoint (``AsyncRollouts.save``);
    add it before ``FinalizeCheckpoints``, whose marker must cover these files."""
    from pathlib import Path

    from transformers import TrainerCallback

    class SaveAsyncRollouts(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():
                async_rollouts.save(ckpt)

    return SaveAsyncRollouts()
