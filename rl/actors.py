"""The one place that turns Relay's plain worker classes into Ray actors.

Workers (``RolloutWorker``, ``RewardWorker``, ...) are ordinary classes, unit-testable without Ray;
pools call ``spawn`` to host them in actors with the resources the config asks for.
"""

from __future__ import annotations

from typing import Any


def spawn(
    cls: type,
    *args: Any,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_restarts: int = 0,
    max_task_retries: int = 0,
    max_concurrency: int | None = None,
    env_vars: dict[str, str] | None = None,
    scheduling_strategy: Any = None,
    resources: dict[str, float] | None = None,
    **kwargs: Any,
):
    """Start ``cls(*args, **kwargs)`` in a Ray actor and return its handle."""
    import ray

    options: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_restarts": max_restarts,
        "max_task_retries": max_task_retries,
    }
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    if env_vars:
        options["runtime_env"] = {"env_vars": dict(env_vars)}
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    if resources:
        options["resources"] = dict(resources)
    return ray.remote(cls).options(**options).remote(*args, **kwargs)
