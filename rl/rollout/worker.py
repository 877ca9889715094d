"""RolloutWorker: one engine plus the on-policy bookkeeping. A plain class; pools host it in a Ray actor."""

from __future__ import annotations

import os
from typing import Any

import torch

from rl.registry import Registry
from rl.rollout.types import Rollout, RolloutEngine, SamplingParams, StaleAdapterError

# Engines by name; values are lazy import strings so "vllm" costs nothing until used.
ENGINES: Registry = Registry("rollout engine")
ENGINES.register("hf", "rl.rollout.hf:HFEngine")
ENGINES.register("vllm", "rl.rollout.vllm:VLLMEngine")


class RolloutWorker:
    """Holds one engine (``ENGINES`` name or ``module:Class`` import string; a ``RolloutEngine``) and its
    adapter version."""

    def __init__(self, engine: str, engine_kwargs: dict[str, Any]):
        self.engine_name = engine
        self.engine: RolloutEngine = ENGINES.resolve(engine)(**engine_kwargs)

    @classmethod
    def around(cls, engine: Any, name: str = "custom") -> RolloutWorker:
        """A worker for an engine built elsewhere (tests share one expensive engine this way)."""
        worker = cls.__new__(cls)
        worker.engine_name, worker.engine = name, engine
        return worker

    def generate(
        self,
        prompts: list,
        n: int,
        sampling: SamplingParams,
        seeds: list[int] | None = None,
        expected_version: int | None = None,
    ) -> list[Rollout]:
        """Sample; with ``expected_version`` refuse to sample from any other adapter version."""
        if expected_version is not None and expected_version != self.engine.version:
            raise StaleAdapterError(
                f"worker pid {os.getpid()} holds adapter version {self.engine.version} but the request expects "
                f"version {expected_version}; sync the adapter (RolloutPool.sync_adapter) before generating"
            )
        return self.engine.generate(prompts, n, sampling, seeds)

    def load_adapter(self, version: int, tensors: dict[str, torch.Tensor]) -> int:
        """Load ``version``; reloading the current version is allowed (a restarted worker catching up)."""
        if version < self.engine.version:
            raise ValueError(
                f"adapter version {version} is older than the loaded version {self.engine.version}; versions must "
                "not decrease (send the learner's latest adapter)"
            )
        self.engine.load_adapter(version, tensors)
        return version

    def version(self) -> int:
        return self.engine.version

    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self) -> None:
        self.engine.wake_up()

    def asleep(self) -> bool:
        return self.engine.asleep

    def pid(self) -> int:
        return os.getpid()

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        return self.engine.adapter_tensors()

    def last_stats(self) -> Any:
        return self.engine.last_stats
