"""``RewardSpec``: the one reward type, from config to pool (plain data, no Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RewardSpec:
    """One weighted reward component and how to run it: what an env's ``rewards()`` returns, what
    ``rewards.functions[i]`` becomes (``rl.preflight.reward_specs``) and what a ``RewardPool`` is built from."""

    name: str  # component name in metrics (e.g. "rewards/<name>/mean")
    source: str  # registry name, 'package.module:function' or 'path/to/file.py:function'
    weight: float = 1.0  # weight of this component in the total reward (used by the learner)
    kwargs: dict[str, Any] = field(default_factory=dict)  # bound to the function with functools.partial
    num_workers: int = 1  # Ray actors hosting the function
    timeout_s: float | None = 60.0  # per-chunk limit; a chunk past it scores None (None/0: no limit)
    max_retries: int = 2  # re-sends of a chunk whose actor died (Ray restarts the actor)
    num_cpus: float = 1.0  # per actor
    num_gpus: float = 0.0  # per actor
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor (node pinning)
    batch_size: int | None = None  # samples per actor call; None splits each batch evenly over the workers
    # A hung sync function cannot be interrupted inside its thread; restarting the actor frees it.
    restart_on_timeout: bool = True
    # The actors' Ray runtime env (env_vars, pip, working_dir, py_modules); {}: the job's own.
    runtime_env: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Every invalid field at once, each naming the field, its value and the fix."""
        out = []
        if not self.name:
            out.append("name is empty; give the reward a component name")
        if not self.source:
            out.append(f"reward {self.name!r}: source is empty; give a registry name or import string")
        if self.num_workers < 1:
            out.append(f"reward {self.name!r}: num_workers ({self.num_workers}) must be >= 1")
        if self.timeout_s is not None and self.timeout_s < 0:
            out.append(f"reward {self.name!r}: timeout_s ({self.timeout_s}) must be >= 0 (0 or None: no limit)")
        if self.max_retries < 0:
            out.append(f"reward {self.name!r}: max_retries ({self.max_retries}) must be >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            out.append(f"reward {self.name!r}: batch_size ({self.batch_size}) must be >= 1, or None to split evenly")
        if self.num_cpus < 0 or self.num_gpus < 0:
            out.append(f"reward {self.name!r}: num_cpus/num_gpus ({self.num_cpus}/{self.num_gpus}) must be >= 0")
        if not isinstance(self.kwargs, dict):
            out.append(f"reward {self.name!r}: kwargs must be a mapping, got {type(self.kwargs).__name__}")
        return out
