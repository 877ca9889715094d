"""Config → Ray actors: the resources a run reserves, its placement group, the rollout pool and one
reward pool per component, and the environment variables every actor inherits."""

from __future__ import annotations

import os
from typing import Any

from rewards.spec import RewardSpec
from rl.cluster import CapacityError
from rl.config import RelayConfig
from rl.preflight import Plan

# Environment variables every actor inherits (offline hubs, quiet tokenizers).
_PROPAGATED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "PYTHONPATH")


def actor_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _PROPAGATED_ENV if k in os.environ}
    env.update(
        TOKENIZERS_PARALLELISM="false",
        PYTHONWARNINGS="ignore::FutureWarning,ignore::DeprecationWarning",
        TRANSFORMERS_VERBOSITY="error",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    return env


def resource_request(cfg: RelayConfig, rewards: list[RewardSpec], learner_gpus: float = 0.0):
    """What the run's actors reserve: one role for the rollout engines, one per reward component, and
    with learner.num_workers > 1 one for the Ray Train learner workers (1 CPU each, ``learner_gpus`` each).
    A single learner runs in the driver process and reserves nothing here."""
    from rl.placement import ResourceRequest, learner_role, reward_role, rollout_role

    r = cfg.rollout
    roles = [
        rollout_role(
            r.num_workers,
            gpus_per_engine=r.num_gpus_per_worker,
            tensor_parallel_size=r.tensor_parallel_size if r.engine == "vllm" else 1,
            cpus_per_engine=r.num_cpus_per_worker,
            resources=r.resources,
        )
    ]
    for spec in rewards:
        roles.append(reward_role(spec.name, spec.num_workers, gpus=spec.num_gpus, cpus=spec.num_cpus,
                                 resources=spec.resources))  # fmt: skip
    if cfg.learner.num_workers > 1:
        roles.append(learner_role(gpus=learner_gpus, cpus=1, count=cfg.learner.num_workers))
    strategy = cfg.cluster.placement_strategy
    return ResourceRequest(tuple(roles), "PACK" if strategy == "none" else strategy)


def create_placement(cfg: RelayConfig, request) -> tuple[Any, dict[str, list[Any]]]:
    """With ``cluster.placement_strategy`` set: one placement group holding a bundle per rollout and
    reward actor, and each role's per-actor scheduling strategies. Otherwise (None, {}): actors ask for
    resources one by one. Ray Train learner workers are left out: Ray Train reserves its own group."""
    if cfg.cluster.placement_strategy == "none":
        return None, {}
    from rl.placement import ResourceRequest, bundle_strategy, create_placement_group, plan_placement

    actors = ResourceRequest(tuple(r for r in request.roles if r.role != "learner"), request.strategy)
    plan = plan_placement(actors)
    try:
        pg = create_placement_group(plan, timeout_s=60.0)
    except RuntimeError as exc:
        raise CapacityError(f"cluster.placement_strategy={plan.strategy}: {exc}") from None
    return pg, {role: [bundle_strategy(pg, i) for i in idx] for role, idx in plan.role_bundles.items()}


def learner_gpus_per_worker(cfg: RelayConfig, cluster_gpus: float | None) -> float:
    """GPUs per Ray Train learner worker: one with learner.device=auto on a cluster that has GPUs; FSDP
    always asks for one (it shards across GPUs only), so a cluster without them is refused before start."""
    if cfg.learner.strategy == "fsdp":
        return 1.0
    return 1.0 if cfg.learner.device == "auto" and (cluster_gpus or 0) > 0 else 0.0


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def build_rollout_pool(
    cfg: RelayConfig,
    model_path: str,
    capacity_watch: Any = None,
    scheduling: list | None = None,
    logits_processors: list | None = None,
    *,
    lora: dict[str, Any],
):
    """The rollout actors, each holding ``model_path`` plus a LoRA adapter shaped like the learner's;
    ``logits_processors``: the env's extra processor specs (``Env.logits_processors``); ``lora``: the
    LoraConfig kwargs the learner gets too (``rl.adapter.policy_lora_kwargs``, ``Session.lora``)."""
    from rl.rollout.pool import RolloutPool

    threads = cfg.rollout.torch_threads or max(1, (os.cpu_count() or 1) // cfg.rollout.num_workers)
    engine_kwargs: dict[str, Any] = {
        "model_path": model_path,
        "lora": lora,
        "dtype": cfg.model.dtype,
        "torch_threads": threads,
    }
    if logits_processors:
        engine_kwargs["logits_processors"] = [list(spec) for spec in logits_processors]
    if cfg.rollout.engine == "vllm":
        engine_kwargs.update(
            tensor_parallel_size=cfg.rollout.tensor_parallel_size,
            gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
            sync=cfg.rollout.vllm_sync,
            seed=cfg.seed,
            sleep_mode=cfg.rollout.colocate,
            # async: a batch may finish under any of the max_staleness + 1 newest adapters
            keep_adapters=cfg.rollout.max_staleness + 1 if cfg.rollout.mode == "async" else 1,
            cpu_kv_cache_gib=cfg.rollout.vllm_cpu_kv_cache_gib,
        )
    return RolloutPool(
        num_workers=cfg.rollout.num_workers,
        engine=cfg.rollout.engine,
        engine_kwargs=engine_kwargs,
        num_cpus_per_worker=cfg.rollout.num_cpus_per_worker,
        num_gpus_per_worker=cfg.rollout.num_gpus_per_worker,
        env_vars=actor_env(),
        resources=cfg.rollout.resources,
        capacity_watch=capacity_watch,
        scheduling=scheduling,
    )


def build_reward_pools(
    cfg: RelayConfig, plan: Plan, started: list, capacity_watch: Any = None, scheduling: dict | None = None
) -> list[Any]:
    """One ``rewards.pool.RewardPool`` per ``plan.rewards`` spec (its name and weight: ``pool.spec``); each
    is appended to ``started`` at once."""
    from rewards.pool import RewardPool

    out = []
    for spec in plan.rewards:
        pool = RewardPool(
            spec,
            on_failure=cfg.rewards.on_failure,
            capacity_watch=capacity_watch,
            scheduling=(scheduling or {}).get(f"reward:{spec.name}"),
            env_vars=actor_env()
            if spec.runtime_env
            else None,  # its own Ray runtime env: Relay's env vars merged under
        )
        started.append(pool)
        out.append(pool)
    return out
