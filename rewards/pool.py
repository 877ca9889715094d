"""Reward actor pool: one pool per reward function, scoring batches across Ray actors.

``RewardWorker`` is a plain class (loads the function, scores a chunk); ``RewardPool`` hosts
``num_workers`` of them through ``rl.actors.spawn`` and owns batching, timeouts, retries and the
bookkeeping: every sample ends up scored at most once, and every ``None`` it produced is counted
by cause (``n_failed``, ``n_timeout``, ``n_invalid``) in the ``ScoreResult``.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import numbers
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rewards.contract import TRAINER_ONLY_KWARGS, RewardOutput
from rewards.registry import load_reward
from rewards.spec import RewardSpec
from rl.watchdog import tracked

logger = logging.getLogger(__name__)

OnFailure = Literal["none", "fail_fast"]
_MAX_ERRORS = 20  # keep ScoreResult.errors short: one bad batch can fail thousands of samples


class RewardError(RuntimeError):
    """A reward function failed and the pool was told to fail fast (or could not start at all)."""


class RewardLoadError(RewardError):
    """A reward's actors could not load it (import error inside its runtime env, a raising ``__init__``):
    a user error found at startup; the message names the reward, its source and the runtime env."""


class RewardOutputError(RewardError, ValueError):
    """A reward function returned something other than one float-or-None per completion."""


def _absolute_source(source: str) -> str:
    """Actors may run in another working directory: pin 'file.py:fn' to an absolute path."""
    module_part, sep, attr = source.rpartition(":")
    if sep and module_part.endswith(".py"):
        return f"{Path(module_part).expanduser().resolve()}:{attr}"
    return source


class RewardWorker:
    """Loads one reward function and scores chunks with it. Plain class; Ray wraps it in ``RewardPool``."""

    def __init__(self, spec: RewardSpec):
        self.spec = spec
        self.fn = load_reward(spec.source, spec.kwargs)

    def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None,
        columns: dict[str, Any],
    ) -> Any:
        """Raw output of the function (validated by the caller); async functions run to completion here."""
        # Keywords, as TRL calls them: functions written as ``f(completions, **kwargs)`` work too.
        out = self.fn(prompts=list(prompts), completions=list(completions), completion_ids=completion_ids, **columns)
        if inspect.isawaitable(out):
            out = asyncio.run(_await(out))
        if hasattr(out, "tolist"):  # numpy arrays / tensors: plain floats travel and validate cheaply
            out = out.tolist()
        return list(out) if isinstance(out, tuple) else out

    def pid(self) -> int:
        return os.getpid()


async def _await(awaitable: Any) -> Any:
    return await awaitable


def validate_outputs(name: str, values: Any, n: int) -> tuple[list[float | None], int]:
    """Check one float-or-None per completion; NaN, inf and non-numbers become None, counted as invalid.

    A wrong count or a non-list raises ``RewardOutputError``: the values cannot be matched to samples.
    """
    if not isinstance(values, (list, tuple)):
        raise RewardOutputError(
            f"reward {name!r} returned a {type(values).__name__}, not a list; return one float (or None) per completion"
        )
    if len(values) != n:
        raise RewardOutputError(
            f"reward {name!r} returned {len(values)} values for {n} completions; "
            "return exactly one float (or None) per completion"
        )
    clean: list[float | None] = []
    n_invalid = 0
    for v in values:
        if v is None:
            clean.append(None)
        elif isinstance(v, numbers.Real) and math.isfinite(float(v)):
            clean.append(float(v))
        else:
            clean.append(None)
            n_invalid += 1
    return clean, n_invalid


@dataclass
class ScoreResult:
    """Scores of one batch, in sample order, and why any are missing.

    ``n_failed``/``n_timeout``/``n_invalid`` count samples that are None because the function raised
    (or its actor kept dying), timed out, or returned a non-number / wrong count. A None the function
    returned on purpose is in none of them. ``n_retried`` counts samples re-sent after an actor died.
    """

    values: RewardOutput
    n_failed: int = 0
    n_timeout: int = 0
    n_invalid: int = 0
    n_retried: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def n_scored(self) -> int:
        return sum(v is not None for v in self.values)

    def metrics(self, name: str) -> dict[str, float]:
        """This batch's pool metrics under ``rewards/<name>/``: samples lost and why, time and throughput
        (the learners write these; the scores' mean/std are the learner's own)."""
        out: dict[str, float] = {
            f"rewards/{name}/n_{c}": getattr(self, f"n_{c}") for c in ("failed", "timeout", "invalid", "retried")
        }
        out[f"rewards/{name}/seconds"] = self.seconds
        out[f"rewards/{name}/samples_per_second"] = len(self.values) / max(self.seconds, 1e-9)
        return out


def _cause(exc: BaseException) -> str:
    """One line for a Ray error: the user's exception, not Ray's wrapping traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    if getattr(exc, "actor_init_failed", False) and text:
        return text[-1]  # already 'module.SomeError: message' from the worker's __init__
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip().rstrip(":")


class RewardPool:
    """``spec.num_workers`` actors running one reward function."""

    def __init__(
        self,
        spec: RewardSpec,
        on_failure: OnFailure = "none",
        *,
        startup_timeout_s: float = 300.0,
        capacity_watch: Any = None,
        poll_s: float = 2.0,
        scheduling: list[Any] | None = None,
        env_vars: dict[str, str] | None = None,
    ):
        """``env_vars``: set in the actors (under ``spec.runtime_env``'s own env_vars, which win)."""
        import ray

        from rl.actors import spawn, upload_runtime_env

        problems = spec.problems()
        if on_failure not in ("none", "fail_fast"):
            problems.append(f"on_failure ({on_failure!r}) must be 'none' or 'fail_fast'")
        if scheduling is not None and len(scheduling) != spec.num_workers:
            problems.append(f"scheduling has {len(scheduling)} entries; need one per worker ({spec.num_workers})")
        if problems:
            raise ValueError("; ".join(problems))
        self.spec = replace(spec, source=_absolute_source(spec.source))
        user_runtime_env = dict(spec.runtime_env)  # as given (local paths), for messages
        self.spec.runtime_env = upload_runtime_env(spec.runtime_env)  # local py_modules/working_dir -> gcs://
        self._runtime_env_keys = sorted(user_runtime_env)
        self.name = spec.name
        self.on_failure = on_failure
        self.last_result: ScoreResult | None = None
        self._dropped_columns: set[str] = set()
        self._startup_timeout_s = startup_timeout_s
        self.capacity_watch = capacity_watch  # rl.placement.CapacityWatch: stop when lost nodes do not come back
        self.poll_s = poll_s
        self._restarting: set[int] = set()  # actors killed or died: wait until they answer again
        self._actors = [
            spawn(
                RewardWorker,
                self.spec,
                num_cpus=spec.num_cpus,
                num_gpus=spec.num_gpus,
                max_restarts=-1,  # Ray restarts a dead actor; retries per chunk stay bounded by max_retries
                max_task_retries=0,  # the pool retries, so it can count retries and never double-score
                resources=spec.resources,
                scheduling_strategy=scheduling[i] if scheduling else None,  # a placement-group bundle
                env_vars=env_vars,
                runtime_env=self.spec.runtime_env or None,
            )
            for i in range(spec.num_workers)
        ]
        self._wait_ready(ray, startup_timeout_s)

    def _wait_ready(self, ray: Any, timeout_s: float) -> None:
        """Surface load errors (unknown name, bad file) and unschedulable actors now, not mid-training."""
        refs = [a.pid.remote() for a in self._actors]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        try:
            if pending:
                raise RewardError(
                    f"reward {self.name!r}: {len(pending)} of {len(refs)} workers did not start within {timeout_s:.0f}s; "
                    f"the cluster may lack num_cpus={self.spec.num_cpus}/num_gpus={self.spec.num_gpus} per worker; "
                    "lower them or num_workers"
                )
            try:
                ray.get(ready)
            except ray.exceptions.RayError as exc:
                where = f" (runtime_env {sorted(self._runtime_env_keys)})" if self._runtime_env_keys else ""
                raise RewardLoadError(
                    f"reward {self.name!r} ({self.spec.source}) failed to load in its worker{where}: {_cause(exc)}; "
                    "check the reward's source and its runtime_env"
                ) from exc
        except RewardError:
            self.close()
            raise

    @property
    def actors(self) -> list[Any]:
        return list(self._actors)

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self._actors])

    # ---- scoring ---------------------------------------------------------------------------------

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        if n == 0:
            return []
        if self.spec.batch_size:
            size = self.spec.batch_size
            return [(s, min(s + size, n)) for s in range(0, n, size)]
        k = min(len(self._actors), n)
        base, extra = divmod(n, k)  # sizes differ by at most one
        bounds, start = [], 0
        for i in range(k):
            end = start + base + (1 if i < extra else 0)
            bounds.append((start, end))
            start = end
        return bounds

    def _shippable(self, columns: dict[str, Any]) -> dict[str, Any]:
        """Drop trainer-only kwargs and anything that cannot travel to an actor (logged once per column)."""
        from ray import cloudpickle

        out = {}
        for key, value in columns.items():
            if key in TRAINER_ONLY_KWARGS:
                continue
            try:
                cloudpickle.dumps(value)
            except Exception as exc:
                if key not in self._dropped_columns:
                    self._dropped_columns.add(key)
                    logger.warning(
                        "reward %r: column %r is not picklable (%s); not sent to workers", self.name, key, exc
                    )
                continue
            out[key] = value
        return out

    @staticmethod
    def _slice(value: Any, n: int, start: int, end: int) -> Any:
        # Per-sample columns are cut with the batch; anything else (a scalar, a config dict) goes whole.
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__getitem__") or not hasattr(value, "__len__"):
            return value
        return value[start:end] if len(value) == n else value

    async def ascore(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> ScoreResult:
        """Score a batch across the actors without blocking the event loop.

        Chunks go to whichever actor is free. Per chunk: past ``timeout_s`` -> None (timeout), the
        function raised -> None (failed), its actor died -> re-sent up to ``max_retries`` then None,
        bad output -> None (invalid). With ``on_failure='fail_fast'`` the first failure raises ``RewardError``.
        """
        start_time = time.perf_counter()
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"reward {self.name!r}: {len(prompts)} prompts for {n} completions")
        if completion_ids is not None and len(completion_ids) != n:
            raise ValueError(f"reward {self.name!r}: {len(completion_ids)} completion_ids for {n} completions")
        if not self._actors:
            raise RewardError(f"reward {self.name!r}: the pool is closed")
        cols = self._shippable(columns)
        result = ScoreResult(values=[None] * n)
        queue = collections.deque(self._chunks(n))

        async def drain(actor_index: int) -> None:
            while queue:
                start, end = queue.popleft()
                chunk_ids = None if completion_ids is None else list(completion_ids[start:end])
                chunk_cols = {k: self._slice(v, n, start, end) for k, v in cols.items()}
                await self._score_chunk(
                    actor_index,
                    start,
                    end,
                    list(prompts[start:end]),
                    list(completions[start:end]),
                    chunk_ids,
                    chunk_cols,
                    result,
                )

        tasks = [asyncio.ensure_future(drain(i)) for i in range(min(len(self._actors), len(queue)))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()  # each task cancels its in-flight Ray call on the way out
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        result.seconds = time.perf_counter() - start_time
        self.last_result = result
        return result

    async def _score_chunk(
        self,
        actor_index: int,
        start: int,
        end: int,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[Any] | None,
        columns: dict[str, Any],
        result: ScoreResult,
    ) -> None:
        import ray
        from ray.exceptions import RayActorError, RayError

        size = end - start
        timeout = self.spec.timeout_s or None
        attempt = 0
        while True:
            if actor_index in self._restarting:
                # A restart takes seconds; it must not eat into the next chunk's timeout.
                await self._await_restart(actor_index)
            actor = self._actors[actor_index]
            ref = actor.score.remote(prompts, completions, completion_ids, columns)
            what = f"reward {self.name!r} score (samples {start}-{end - 1}, actor {actor_index})"
            try:
                with tracked(self.capacity_watch, what):  # the stall watchdog's view (rl.watchdog)
                    raw = await self._result(ref, timeout)
            except asyncio.TimeoutError:
                _cancel(ray, ref)
                if self.spec.restart_on_timeout:
                    ray.kill(actor, no_restart=False)
                    self._restarting.add(actor_index)
                result.n_timeout += size
                self._fail(result, f"timed out after {self.spec.timeout_s}s on samples {start}-{end - 1}", "timeout")
                return
            except asyncio.CancelledError:
                _cancel(ray, ref)
                raise
            except RayActorError as exc:
                self._restarting.add(actor_index)
                if attempt < self.spec.max_retries:
                    attempt += 1
                    result.n_retried += size
                    logger.warning(
                        "reward %r: worker died scoring samples %d-%d (%s); retry %d/%d on the restarted worker",
                        self.name,
                        start,
                        end - 1,
                        _cause(exc),
                        attempt,
                        self.spec.max_retries,
                    )
                    continue
                result.n_failed += size
                self._fail(
                    result,
                    f"worker died {attempt + 1} times on samples {start}-{end - 1}: {_cause(exc)}",
                    "worker died",
                )
                return
            except RayError as exc:  # RayTaskError: the function raised (also TaskCancelledError etc.)
                result.n_failed += size
                self._fail(result, f"raised on samples {start}-{end - 1}: {_cause(exc)}", "raised")
                return
            try:
                clean, n_invalid = validate_outputs(self.name, raw, size)
            except RewardOutputError as exc:
                result.n_invalid += size
                self._fail(result, str(exc), "invalid output", prefixed=True)
                return
            result.values[start:end] = clean
            if n_invalid:
                result.n_invalid += n_invalid
                self._fail(
                    result,
                    f"returned {n_invalid} NaN/inf/non-numeric value(s) on samples {start}-{end - 1}",
                    "invalid output",
                )
            return

    async def _result(self, ref: Any, timeout: float | None) -> Any:
        """``ref``'s value; ``asyncio.TimeoutError`` past ``timeout``. Polled, so that a call queued on an
        actor whose node left the cluster notices when the capacity is gone for good."""
        fut = asyncio.wrap_future(ref.future())
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.poll_s if deadline is None else max(0.0, min(self.poll_s, deadline - time.monotonic()))
            done, _ = await asyncio.wait({fut}, timeout=wait)
            if done:
                return fut.result()
            if deadline is not None and time.monotonic() >= deadline:
                fut.cancel()
                raise asyncio.TimeoutError
            self._check_capacity()

    def _check_capacity(self) -> None:
        if self.capacity_watch is not None:
            self.capacity_watch.check()  # raises ClusterCapacityLost after a lasting shortfall

    async def _await_restart(self, actor_index: int) -> None:
        """Poll the actor until its restarted process answers (or it is dead for good / the deadline passes)."""
        from ray.exceptions import ActorUnavailableError, RayError

        deadline = time.monotonic() + self._startup_timeout_s
        try:
            while True:
                try:
                    call = self._actors[actor_index].pid.remote()
                    await asyncio.wait_for(asyncio.wrap_future(call.future()), self.poll_s)
                    break
                except (ActorUnavailableError, asyncio.TimeoutError):
                    # Restarting, or waiting for a node that can hold it.
                    self._check_capacity()
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                except RayError:  # dead for good: the chunk call reports it
                    break
        finally:
            self._restarting.discard(actor_index)

    def _fail(self, result: ScoreResult, message: str, cause: str, *, prefixed: bool = False) -> None:
        message = message if prefixed else f"reward {self.name!r} {message}"
        logger.warning("%s", message)
        if len(result.errors) < _MAX_ERRORS:
            result.errors.append(message)
        if self.on_failure == "fail_fast":
            raise RewardError(f"{message} ({cause}; on_failure='fail_fast')")

    def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> ScoreResult:
        """Blocking ``ascore`` for scripts and the CLI; inside an event loop await ``ascore`` instead."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.ascore(prompts, completions, completion_ids, **columns))
        raise RuntimeError(
            f"reward {self.name!r}: score() called inside a running event loop; use 'await pool.ascore(...)'"
        )

    def as_reward_func(self):
        """A TRL reward function (async, named after the component) backed by this pool.

        The full ``ScoreResult`` of the latest call stays in ``pool.last_result`` for metrics.
        """

        async def reward(prompts, completions, completion_ids=None, **columns):
            return (await self.ascore(prompts, completions, completion_ids, **columns)).values

        reward.__name__ = reward.__qualname__ = self.name
        return reward

    def close(self) -> None:
        """Kill the actors (for good: no restart). Safe to call twice."""
        import ray

        actors, self._actors = self._actors, []
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as exc:  # already gone, or Ray shut down first
                logger.debug("reward %r: kill failed: %s", self.name, exc)

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _cancel(ray: Any, ref: Any) -> None:
    try:
        ray.cancel(ref)
    except Exception as exc:  # finished meanwhile, or the actor is gone
        logger.debug("cancel failed: %s", exc)
