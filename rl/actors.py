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
    runtime_env: dict[str, Any] | None = None,
    **kwargs: Any,
):
    """Start ``cls(*args, **kwargs)`` in a Ray actor and return its handle.

    ``runtime_env``: the actor's own Ray runtime env (pip, working_dir, py_modules, env_vars); ``env_vars``
    are merged underneath its env_vars (the actor's own values win)."""
    import ray

    options: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_restarts": max_restarts,
        "max_task_retries": max_task_retries,
    }
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    if env_vars or runtime_env:
        options["runtime_env"] = merge_runtime_env(env_vars, runtime_env)
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    if resources:
        options["resources"] = dict(resources)
    return ray.remote(cls).options(**options).remote(*args, **kwargs)


def merge_runtime_env(env_vars: dict[str, str] | None, runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    """``runtime_env`` with ``env_vars`` (the variables Relay propagates to every actor) underneath its own."""
    out = dict(runtime_env or {})
    merged = {**(env_vars or {}), **(out.get("env_vars") or {})}
    if merged:
        out["env_vars"] = merged
    return out


def upload_runtime_env(runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    """``runtime_env`` with local ``py_modules`` / ``working_dir`` paths uploaded to the cluster (gcs:// URIs).

    Ray uploads local paths itself only for a job's runtime env (``ray.init``); an actor's must already be
    URIs. This does what ``ray.init`` does (content-hashed: an unchanged directory is not sent twice), so a
    reward can name a local package directory. Call it on the driver, connected to the cluster.
    """
    env = dict(runtime_env or {})
    if not (env.get("py_modules") or env.get("working_dir")):
        return env
    import logging
    import tempfile

    import ray
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    node = getattr(ray._private.worker.global_worker, "node", None)
    scratch = node.get_runtime_env_dir_path() if node is not None else tempfile.mkdtemp(prefix="relay-runtime-env-")
    log = logging.getLogger(__name__)
    env = upload_py_modules_if_needed(env, include_gitignore=True, scratch_dir=scratch, logger=log)
    env = upload_working_dir_if_needed(env, include_gitignore=True, scratch_dir=scratch, logger=log)
    env.pop("excludes", None)  # only meaningful for the upload
    return env
