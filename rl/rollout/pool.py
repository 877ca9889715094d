"""RolloutPool: RolloutWorker actors behind one ``generate`` / ``sync_adapter`` interface.

The only rollout module that touches Ray. Adapter tensors are ``ray.put`` once per version and every
worker loads that one object. A worker that dies mid-step is restarted by Ray (``max_restarts``);
the pool re-sends the current adapter to it and regenerates its shard with the same seeds, so the
step completes with the same results it would have had. When its node left the cluster, the restart
waits for capacity; a ``CapacityWatch`` turns a lasting shortfall into ``ClusterCapacityLost``.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import torch

from rl.actors import spawn
from rl.rollout.types import Rollout, SamplingParams, StaleAdapterError
from rl.rollout.worker import RolloutWorker
from rl.watchdog import tracked

logger = logging.getLogger(__name__)


@dataclass
class PoolStats:
    last_generate_seconds: float = 0.0
    last_completion_tokens: int = 0
    total_completion_tokens: int = 0
    shard_retries: int = 0  # shards regenerated after a worker died or fell behind

    @property
    def last_tokens_per_second(self) -> float:
        s = self.last_generate_seconds
        return self.last_completion_tokens / s if s > 0 else 0.0


def shard_bounds(num_items: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges, sizes differing by at most one; empty ranges dropped."""
    base, extra = divmod(num_items, num_shards)
    bounds, start = [], 0
    for i in range(num_shards):
        end = start + base + (1 if i < extra else 0)
        if end > start:
            bounds.append((start, end))
        start = end
    return bounds


class RolloutPool:
    def __init__(
        self,
        num_workers: int,
        engine: str,
        engine_kwargs: dict[str, Any],
        num_cpus_per_worker: float = 1,
        num_gpus_per_worker: float = 0,
        env_vars: dict[str, str] | None = None,
        max_restarts: int = 3,
        max_shard_retries: int = 2,
        restart_timeout_s: float = 300.0,
        resources: dict[str, float] | None = None,
        capacity_watch: Any = None,
        poll_s: float = 2.0,
        scheduling: list[Any] | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers ({num_workers}) must be >= 1")
        if scheduling is not None and len(scheduling) != num_workers:
            raise ValueError(f"scheduling has {len(scheduling)} entries; need one per worker ({num_workers})")
        import ray

        kwargs = dict(engine_kwargs)
        if engine == "hf":  # one torch thread per reserved CPU, not one per machine core
            kwargs.setdefault("torch_threads", max(1, int(num_cpus_per_worker)))
        self.max_shard_retries = max_shard_retries
        self.restart_timeout_s = restart_timeout_s
        self.capacity_watch = capacity_watch  # rl.placement.CapacityWatch, or None: wait restart_timeout_s
        self.poll_s = poll_s
        self.workers = [
            spawn(
                RolloutWorker,
                engine,
                kwargs,
                num_cpus=num_cpus_per_worker,
                num_gpus=num_gpus_per_worker,
                max_restarts=max_restarts,
                max_task_retries=0,  # the pool retries a shard itself, after re-syncing the adapter
                env_vars=env_vars,
                resources=resources,
                scheduling_strategy=scheduling[i] if scheduling else None,  # a placement-group bundle
            )
            for i in range(num_workers)
        ]
        self._version = -1
        self._adapter_ref: Any = None  # ObjectRef of the current adapter tensors (kept alive for restarts)
        self.stats = PoolStats()
        ray.get([w.version.remote() for w in self.workers])  # surface constructor errors now

    @property
    def version(self) -> int:
        return self._version

    # ---- adapter ---------------------------------------------------------------------------------
    def sync_adapter(self, version: int, tensors: dict[str, torch.Tensor]) -> None:
        """Every worker loads ``version``; returns when all have it."""
        import ray

        if version < self._version:
            raise ValueError(f"adapter version {version} is older than the pool's version {self._version}")
        ref = ray.put(tensors)  # once; each worker fetches the same object
        self._adapter_ref, self._version = ref, version
        pending = {w.load_adapter.remote(version, ref): i for i, w in enumerate(self.workers)}
        self._wait_all(pending, lambda i: None, f"rollout load_adapter v{version}")

    def _wait_all(self, pending: dict, redo, what: str) -> None:
        """Wait for every call in ``pending`` (ref -> worker index), polled so that the capacity watch and the
        stall watchdog get their say; a worker that died is recovered, then ``redo(i)`` (a ref or None)."""
        import ray

        pending = dict(pending)
        with tracked(self.capacity_watch, f"{what}: waiting on workers {sorted(pending.values())}") as call:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_s)
                if not ready:
                    self._check_capacity()
                    continue
                i = pending.pop(ready[0])
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayActorError:
                    self._recover(i)
                    if (again := redo(i)) is not None:
                        pending[again] = i
                call.update(f"{what}: waiting on workers {sorted(pending.values())}")

    def adopt_adapter(self, version: int, tensors: dict[str, torch.Tensor]) -> None:
        """Record that the workers already hold ``version`` (another copy of this pool, e.g. learner rank 0,
        synced them with identical tensors); keeps ``tensors`` to re-sync a worker that restarts later."""
        import ray

        if version < self._version:
            raise ValueError(f"adapter version {version} is older than the pool's version {self._version}")
        self._adapter_ref, self._version = ray.put(tensors), version

    def _recover(self, i: int) -> None:
        """Wait for Ray to restart worker ``i`` and bring it to the pool's adapter version."""
        import ray

        deadline = time.monotonic() + self.restart_timeout_s
        died_errors = 0
        call = None
        while True:
            worker = self.workers[i]
            if call is None:
                call = (
                    worker.version.remote()
                    if self._adapter_ref is None
                    else worker.load_adapter.remote(self._version, self._adapter_ref)
                )
            try:
                ray.get(call, timeout=self.poll_s)
                return
            except ray.exceptions.GetTimeoutError as exc:
                last: Exception = exc  # still restarting (or waiting for a node to hold it): keep the call
            except ray.exceptions.RayActorError as exc:
                # ActorUnavailableError: restarting, ask again. ActorDiedError: may still be the old
                # incarnation's death being reported; a few in a row mean the restarts are used up.
                last, call = exc, None
                died_errors += isinstance(exc, ray.exceptions.ActorDiedError)
                time.sleep(min(1.0, self.poll_s))
            self._check_capacity()
            if time.monotonic() > deadline or died_errors > 5:
                raise RuntimeError(
                    f"rollout worker {i} did not come back within {self.restart_timeout_s:.0f}s ({last!r}); "
                    "raise max_restarts or check the worker logs (out of memory?)"
                ) from last

    def _check_capacity(self) -> None:
        if self.capacity_watch is not None:
            self.capacity_watch.check()  # raises ClusterCapacityLost after a lasting shortfall

    # ---- colocation (rollout.colocate) -------------------------------------------------------------
    def sleep(self) -> None:
        """Every engine frees its device for the learner; returns when all have."""
        self._broadcast("sleep")

    def wake_up(self) -> None:
        """Every engine back on its device; a worker restarted meanwhile starts awake."""
        self._broadcast("wake_up")

    def _broadcast(self, method: str) -> None:

        pending = {getattr(w, method).remote(): i for i, w in enumerate(self.workers)}
        self._wait_all(pending, lambda i: getattr(self.workers[i], method).remote(), f"rollout {method}")

    def worker_asleep(self) -> list[bool]:
        import ray

        return ray.get([w.asleep.remote() for w in self.workers])

    # ---- generation ------------------------------------------------------------------------------
    def generate(
        self,
        prompts: list,
        n: int,
        sampling: SamplingParams,
        seeds: list[int] | None = None,
        expected_version: int | None = None,
    ) -> list[Rollout]:
        """``len(prompts) * n`` rollouts, prompt-major, as if one engine had produced them all."""
        import ray

        if not self.workers:
            raise RuntimeError("the rollout pool is closed; create a new RolloutPool")
        if expected_version is not None and expected_version != self._version:
            raise StaleAdapterError(
                f"the pool holds adapter version {self._version} but the request expects {expected_version}; "
                "call sync_adapter first"
            )
        if seeds is None:  # drawn here so that a regenerated shard reuses them
            seeds = [secrets.randbits(63) for _ in range(len(prompts) * n)]
        if len(seeds) != len(prompts) * n:
            raise ValueError(f"seeds has {len(seeds)} entries; need len(prompts) * n = {len(prompts) * n}")
        start_time = time.perf_counter()
        shards = shard_bounds(len(prompts), len(self.workers))  # shard k runs on worker k

        def submit(k: int):
            s, e = shards[k]
            # Always the pool's version, even when the caller gave none: a worker restarted since the
            # last sync (back at -1) then raises StaleAdapterError and is re-synced, never mixing policies.
            return self.workers[k].generate.remote(prompts[s:e], n, sampling, seeds[s * n : e * n], self._version)

        pending = {submit(k): (k, 0) for k in range(len(shards))}
        results: dict[int, list[Rollout]] = {}

        def waiting_on() -> str:
            return (f"rollout generate ({len(prompts)} prompts x {n}, adapter v{self._version}): waiting on "
                    f"workers {sorted(k for k, _ in pending.values())}")  # fmt: skip

        with tracked(self.capacity_watch, waiting_on()) as call:
            while pending:
                # Polled: a worker whose node left may wait for capacity forever without failing its call.
                ready_refs, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_s)
                if not ready_refs:
                    self._check_capacity()
                    continue
                ready = ready_refs[0]
                k, attempt = pending.pop(ready)
                try:
                    results[k] = ray.get(ready)
                except (ray.exceptions.RayActorError, StaleAdapterError) as exc:
                    if attempt >= self.max_shard_retries:
                        raise RuntimeError(f"shard {k} failed {attempt + 1} times; last error: {exc!r}") from exc
                    logger.warning(
                        "rollout worker %d failed (%s); re-syncing adapter and regenerating its shard", k, exc
                    )
                    self.stats.shard_retries += 1
                    self._recover(k)
                    pending[submit(k)] = (k, attempt + 1)
                call.update(waiting_on())
        rollouts = []
        for k, (s, _) in enumerate(shards):
            for r in results[k]:
                r.prompt_index += s  # worker-local -> global prompt index
                rollouts.append(r)
        self._record(time.perf_counter() - start_time, rollouts)
        return rollouts

    def _record(self, seconds: float, rollouts: list[Rollout]) -> None:
        tokens = sum(len(r.completion_ids) for r in rollouts)
        self.stats.last_generate_seconds = seconds
        self.stats.last_completion_tokens = tokens
        self.stats.total_completion_tokens += tokens

    # ---- inspection / lifecycle ------------------------------------------------------------------
    def worker_versions(self) -> list[int]:
        import ray

        return ray.get([w.version.remote() for w in self.workers])

    def worker_pids(self) -> list[int]:
        import ray

        return ray.get([w.pid.remote() for w in self.workers])

    def adapter_tensors(self, i: int) -> dict[str, torch.Tensor]:
        import ray

        return ray.get(self.workers[i].adapter_tensors.remote())

    def close(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []
        self._adapter_ref = None

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
