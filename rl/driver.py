"""The run (``relay train`` / ``relay resume``): preflight, run directory, model, optional SFT, cluster,
pools, the learner, optional eval, cleanup.

Everything that can be checked without side effects (``rl.preflight``) is checked before the run
directory is created, so bad input leaves nothing behind. The pieces live by concern: ``rl.wiring``
(config → resources, placement, pools), ``rl.base_model`` (which model the processes load),
``rl.process_setup`` (per-process setup), ``rl.learner.*`` (the learners).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from rl.base_model import resolve_model
from rl.cluster import CapacityError, RunStopped
from rl.config import ConfigError, RelayConfig
from rl.learner.session import Session, build_learner
from rl.preflight import Plan, preflight
from rl.process_setup import setup_learner_process
from rl.run_dir import (
    SAFE_TO_CHANGE,
    config_changes,
    create_run_dir,
    default_run_dir,
    package_versions,
    setup_file_logging,
    write_data_report,
    write_yaml,
)
from rl.wiring import (
    actor_env,
    build_reward_pools,
    build_rollout_pool,
    cluster_gpus,
    create_placement,
    learner_gpus_per_worker,
    resource_request,
)

logger = logging.getLogger("relay")


def train(cfg: RelayConfig, run_dir: str | Path | None = None, callbacks: list | None = None) -> Path:
    """Run ``cfg`` end to end; returns the run directory. ``callbacks``: extra TrainerCallbacks."""
    plan = preflight(cfg)
    run_path = create_run_dir(Path(run_dir) if run_dir else default_run_dir(cfg))
    write_yaml(run_path / "config.yaml", cfg.to_dict())
    (run_path / "versions.json").write_text(json.dumps(package_versions(), indent=2) + "\n")
    from rewards.pool import RewardLoadError

    try:
        return _execute(plan, run_path, callbacks or [], resume_from=None)
    except (CapacityError, RewardLoadError):
        shutil.rmtree(run_path, ignore_errors=True)  # nothing ran: leave no run directory behind
        raise


def resume(
    run_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    new_cfg: RelayConfig | None = None,
    force: bool = False,
    callbacks: list | None = None,
) -> Path:
    """Continue ``run_dir`` from its latest valid checkpoint (``relay resume``)."""
    from rl.checkpoint import latest_valid, truncate_metrics
    from rl.config import apply_overrides, validate

    run_path = Path(run_dir)
    config_path = run_path / "config.yaml"
    if not config_path.is_file():
        raise ConfigError([f"{run_path}: not a run directory (no config.yaml); start it with relay train"])
    old = validate(yaml.safe_load(config_path.read_text()), source=str(config_path)).to_dict()
    cfg = new_cfg or validate(apply_overrides(yaml.safe_load(config_path.read_text()), list(overrides or [])))
    cfg.run_dir = old.get("run_dir")
    unsafe = [c for c in config_changes(old, cfg.to_dict()) if not c[0].startswith(SAFE_TO_CHANGE)]
    if unsafe and not force:
        raise ConfigError(
            [f"{key}: {a!r} in the run, {b!r} now" for key, a, b in unsafe]
            + [
                "these changes would alter what the resumed run computes; resume with the run's values, "
                "or pass --force to resume anyway"
            ]
        )
    ckpt = latest_valid(run_path / "checkpoints", quarantine=run_path / "invalid_checkpoints")
    if ckpt is None:
        raise ConfigError([f"{run_path}: no valid checkpoint to resume from; start a new run with relay train"])
    plan = preflight(cfg)
    step = int(ckpt.name.split("-")[-1])
    truncate_metrics(run_path / "metrics.jsonl", step)
    truncate_metrics(run_path / "eval_history.jsonl", step)  # evals past the checkpoint run again
    write_yaml(config_path, cfg.to_dict())
    print(f"relay: resuming {run_path} from {ckpt.name} (step {step})")
    return _execute(plan, run_path, callbacks or [], resume_from=ckpt)


def _execute(plan: Plan, run_path: Path, callbacks: list, resume_from: Path | None) -> Path:
    cfg = plan.cfg
    handler = setup_file_logging(run_path, cfg.logging.level)
    logger.info("run dir %s%s", run_path, f", resuming from {resume_from}" if resume_from else "")
    from rl.metrics import run_identity

    logger.info("run id %s", run_identity(run_path, create=True))  # made with the run dir, reused on resume
    write_data_report(plan.env, run_path)
    try:
        try:
            _run(plan, run_path, callbacks, resume_from)
        except RunStopped as exc:
            from rl.checkpoint import latest_valid

            ckpt = latest_valid(run_path / "checkpoints")
            todo = f"{exc.remedy} " if exc.remedy else ""
            if ckpt:
                where = f"its latest checkpoint is {ckpt.name}; {todo}run `relay resume {run_path}`"
            else:
                where = f"it has no checkpoint yet; {todo}start it again with relay train"
            exc.args = (f"{exc}\nthe run stopped; {where}",)
            logger.error("%s", exc)
            raise
        if cfg.eval.after_train:
            from rl.evaluate import run_eval

            run_eval(run_path)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return run_path


def _run(plan: Plan, run_dir: Path, callbacks: list, resume_from: Path | None = None) -> None:
    from rl import cluster

    cfg = plan.cfg
    setup_learner_process(cfg)
    model_path = plan.env.prepare_model(resolve_model(cfg, run_dir), run_dir)
    if cfg.sft.steps:
        from rl.learner.sft import warm_start

        sft_dir = run_dir / "sft_model"
        if resume_from is not None and (sft_dir / "config.json").exists():
            model_path = str(sft_dir)  # a resumed run keeps the warm start it already made
        else:
            model_path = warm_start(cfg, plan.env, model_path, sft_dir)
    from rl.adapter import policy_lora_kwargs
    from rl.placement import CapacityWatch, check_fits, node_resources, plan_placement

    request = resource_request(cfg, plan.rewards, learner_gpus_per_worker(cfg, cfg.cluster.num_gpus))
    needed = sum(bundle.get("CPU", 0.0) for bundle in plan_placement(request).bundles)
    num_cpus = cfg.cluster.num_cpus
    if cfg.cluster.address is None and num_cpus is None:
        # A local cluster's CPUs are logical slots: rollout and reward phases alternate in on-policy
        # mode, so reserving more slots than cores is fine and keeps small machines from deadlocking.
        num_cpus = max(os.cpu_count() or 1, int(needed + 0.999))
    handle = cluster.start_or_join(
        cfg.cluster.address,
        num_cpus=num_cpus,
        num_gpus=cfg.cluster.num_gpus,
        temp_dir=cfg.cluster.temp_dir,
        dashboard=cfg.cluster.dashboard,
    )
    pools: list[Any] = []
    placement_group = None
    watchdog = None
    try:
        learner_gpus = 0.0
        if cfg.learner.num_workers > 1:  # the cluster is known now: do its nodes have GPUs for the workers?
            learner_gpus = learner_gpus_per_worker(cfg, cluster_gpus())
            request = resource_request(cfg, plan.rewards, learner_gpus)
        if problems := check_fits(request, node_resources()):
            raise CapacityError("the cluster cannot hold the run's actors:\n" + "\n".join(f"  - {p}" for p in problems))
        watch = CapacityWatch(request, cfg.cluster.node_loss_wait_s)
        if cfg.cluster.stall_timeout_s and cfg.learner.num_workers == 1:  # DDP: TorchConfig's collective timeout
            from rl.watchdog import Watchdog, watchdog_callback

            watch = watchdog = Watchdog(run_dir, cfg.cluster.stall_timeout_s, capacity=watch)  # pools poll it
            callbacks = [*callbacks, watchdog_callback(watchdog)]
            if cfg.algorithm.name == "ppo":  # no TrainerCallback there: watch from now on
                watchdog.start()
        placement_group, scheduling = create_placement(cfg, request)
        lora = policy_lora_kwargs(cfg, plan.env, model_path)  # learner and rollout actors: one layout
        rollout_pool = build_rollout_pool(
            cfg,
            model_path,
            watch,
            scheduling.get("rollout"),
            logits_processors=plan.env.logits_processors(run_dir),
            lora=lora,
        )
        pools.append(rollout_pool)
        reward_pools = build_reward_pools(cfg, plan, pools, watch, scheduling)
        session = Session(plan, run_dir, model_path, rollout_pool, tuple(reward_pools), resume_from,
                          tuple(callbacks), learner_gpus=learner_gpus, actor_env=actor_env(), lora=lora)  # fmt: skip
        build_learner(cfg).train(session)  # rl.learner.session.LEARNERS: grpo | grpo-data-parallel | ppo
    except KeyboardInterrupt:
        if watchdog is not None and watchdog.interrupted:  # stuck outside a polled call: the watchdog's stop
            raise watchdog.stalled from None
        raise
    finally:
        if watchdog is not None:
            watchdog.stop()
        for pool in pools:
            try:
                pool.close()
            except Exception:  # noqa: BLE001 - cleanup must not mask the original error
                logger.exception("closing a pool failed")
        if placement_group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(placement_group)
        cluster.shutdown(handle)
