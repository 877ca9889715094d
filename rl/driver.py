"""``relay train``: preflight, run directory, Ray pools, the learner loop, cleanup.

Everything that can be checked without side effects (config, env arguments, reward references,
the dataset) is checked before the run directory is created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from rl.atomic import atomic_write_text
from rl.cluster import CapacityError, RunStopped
from rl.config import ConfigError, DataError, RelayConfig
from rl.env_api import ENVS, Env, RewardComponent, build_env, env_arg_problems
from rl.registry import RegistryError

logger = logging.getLogger("relay")

# Environment variables every actor inherits (offline hubs, quiet tokenizers).
_PROPAGATED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "PYTHONPATH")


@dataclass
class Plan:
    """What preflight established: the env, its dataset and the resolved reward components."""

    cfg: RelayConfig
    env: Env
    train_dataset: Any
    rewards: list[RewardComponent]
    eval_dataset: Any = None  # the held-out split eval.every_steps generates on (None: off)


def reward_components(cfg: RelayConfig, env: Env) -> list[RewardComponent]:
    """The config's reward list, or the env's. A config entry named like an env component and
    without a `source` keeps the env's function and kwargs (its own kwargs are merged on top), so
    pool settings such as timeout_s can be changed without restating the env's arguments."""
    if not cfg.rewards.functions:
        return env.rewards()
    env_rewards = {c.name: c for c in env.rewards()}
    out = []
    for f in cfg.rewards.functions:
        base = env_rewards.get(f.name) if f.source is None else None
        if base is not None:
            out.append(RewardComponent(f.name, f.weight, base.source, {**base.kwargs, **f.kwargs}))
        else:
            out.append(RewardComponent(f.name, f.weight, f.source, dict(f.kwargs)))
    return out


def tokenizer_problems(cfg: RelayConfig) -> list[str]:
    """The policy's tokenizer must load and carry a chat template (prompts are chat messages)."""
    if cfg.model.name == "tiny":
        return []  # built by Relay, with a template
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model.name)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [
            f"model.name ({cfg.model.name!r}): the tokenizer does not load ({first}); "
            "give a local model directory or a reachable hub id"
        ]
    if not getattr(tokenizer, "chat_template", None):
        return [
            f"model.name ({cfg.model.name!r}): the tokenizer has no chat template; use an instruct/chat model "
            "or add a chat_template to its tokenizer_config.json"
        ]
    return []


def preflight(cfg: RelayConfig) -> Plan:
    """Resolve the env, its dataset and every reward function; collect all problems."""
    from rewards.registry import check_reward

    problems: list[str] = []
    try:
        env_cls = ENVS.resolve(cfg.env.name)
    except RegistryError as exc:
        raise ConfigError([f"env.name ({cfg.env.name!r}): {exc}"]) from None
    problems += env_arg_problems(env_cls, cfg.env.args)
    if problems:
        raise ConfigError(problems)
    env = build_env(cfg.env.name, cfg.env.args, cfg.seed)
    components = reward_components(cfg, env)  # may read the env's data (genrec: its index): DataError, exit 2
    runtime_envs = {f.name: f.runtime_env for f in cfg.rewards.functions}
    for i, comp in enumerate(components):
        field = f"rewards.functions.{i}" if cfg.rewards.functions else f"env {cfg.env.name!r} reward {comp.name!r}"
        try:
            check_reward(comp.source or comp.name, comp.kwargs)
        except (RegistryError, TypeError, ValueError) as exc:
            renv = runtime_envs.get(comp.name)
            if renv is not None and renv.declares_code() and isinstance(exc.__cause__, ImportError):
                # Importable only inside the reward's runtime env: its actors check it when the pools start.
                logger.warning(
                    "%s (%r): not importable here (%s); it will be checked by its actors inside their "
                    "runtime_env %s", field, comp.source or comp.name, exc.__cause__, sorted(renv.to_ray()))  # fmt: skip
            else:
                problems.append(f"{field} ({comp.source or comp.name!r}): {exc}")
    try:
        dataset = env.train_dataset()
    except DataError as exc:  # a malformed data file: its own file:line problems and fix
        problems += exc.problems
        dataset = None
    except (OSError, ValueError) as exc:
        problems.append(f"env.args: building the {cfg.env.name!r} dataset failed: {exc}")
        dataset = None
    if dataset is not None:
        if "prompt" not in dataset.column_names:
            problems.append(
                f"env {cfg.env.name!r}: its dataset has no 'prompt' column (columns: {dataset.column_names})"
            )
        if len(dataset) == 0:
            problems.append(f"env {cfg.env.name!r}: the training dataset is empty; check env.args")
    problems += tokenizer_problems(cfg)
    if cfg.sft.steps:
        try:
            env.sft_dataset(2)
        except NotImplementedError as exc:
            problems.append(f"sft.steps ({cfg.sft.steps}): {exc}")
    from rl.learner.periodic_eval import eval_problems

    eval_issues, eval_dataset = eval_problems(cfg, env)  # eval.every_steps needs a held-out split
    problems += eval_issues
    if problems:
        raise ConfigError(problems)
    return Plan(cfg=cfg, env=env, train_dataset=dataset, rewards=components, eval_dataset=eval_dataset)


def default_run_dir(cfg: RelayConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.name}-{stamp}"


def create_run_dir(path: Path) -> Path:
    """A fresh run directory; refuses one that already holds a run."""
    if (path / "config.yaml").exists():
        raise ConfigError([f"--run-dir {str(path)!r} already holds a run; pick a new directory"])
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            [f"--run-dir {str(path)!r} is not writable ({exc.strerror}); choose a writable path"]
        ) from None
    return path


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("relay-rl", "torch", "transformers", "trl", "peft", "ray", "datasets", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _write_yaml(path: Path, data: dict) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def _setup_file_logging(run_dir: Path, level: str) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "relay.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, logging.getLevelName(level)))
    return handler


def resolve_model(cfg: RelayConfig, run_dir: Path) -> str:
    """The model path every process loads: a tiny model built into the run dir, or the user's."""
    if cfg.model.name != "tiny":
        return cfg.model.name
    from rl.tiny_model import TinyModelSpec, build_tiny_model

    target = run_dir / "base_model"
    if not (target / "config.json").exists():
        build_tiny_model(target, TinyModelSpec(**cfg.model.tiny.model_dump()))
    return str(target)


def _quiet_libraries() -> None:
    """Keep the console to Relay's progress bar: no per-file loading bars or deprecation chatter."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def run_base_model(cfg: RelayConfig, run_dir: Path, env: Env | None = None) -> str:
    """The model a run's adapter sits on: its SFT warm start if it made one, else the base model as
    the env prepared it (``Env.prepare_model``, idempotent)."""
    sft = run_dir / "sft_model"
    if (sft / "config.json").exists():
        return str(sft)
    env = env or build_env(cfg.env.name, cfg.env.args, cfg.seed)
    return env.prepare_model(resolve_model(cfg, run_dir), run_dir)


def _actor_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _PROPAGATED_ENV if k in os.environ}
    env.update(
        TOKENIZERS_PARALLELISM="false",
        PYTHONWARNINGS="ignore::FutureWarning,ignore::DeprecationWarning",
        TRANSFORMERS_VERBOSITY="error",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    return env


def resource_request(cfg: RelayConfig, rewards: list[RewardComponent], learner_gpus: float = 0.0):
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
    by_name = {f.name: f for f in cfg.rewards.functions}
    for comp in rewards:
        f = by_name.get(comp.name)
        roles.append(
            reward_role(comp.name, f.num_workers, gpus=f.num_gpus, cpus=f.num_cpus, resources=f.resources)
            if f is not None
            else reward_role(comp.name, 1)  # an env's own reward: one 1-CPU actor
        )
    if cfg.learner.num_workers > 1:
        roles.append(learner_role(gpus=learner_gpus, cpus=1, count=cfg.learner.num_workers))
    strategy = cfg.cluster.placement_strategy
    return ResourceRequest(tuple(roles), "PACK" if strategy == "none" else strategy)


def _placement(cfg: RelayConfig, request) -> tuple[Any, dict[str, list[Any]]]:
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


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def train(cfg: RelayConfig, run_dir: str | Path | None = None, callbacks: list | None = None) -> Path:
    """Run ``cfg`` end to end; returns the run directory. ``callbacks``: extra TrainerCallbacks."""
    plan = preflight(cfg)
    run_path = create_run_dir(Path(run_dir) if run_dir else default_run_dir(cfg))
    _write_yaml(run_path / "config.yaml", cfg.to_dict())
    (run_path / "versions.json").write_text(json.dumps(package_versions(), indent=2) + "\n")
    from rewards.pool import RewardLoadError

    try:
        return _execute(plan, run_path, callbacks or [], resume_from=None)
    except (CapacityError, RewardLoadError):
        shutil.rmtree(run_path, ignore_errors=True)  # nothing ran: leave no run directory behind
        raise


# Fields that may differ between a run and its resumption without changing what it computes.
SAFE_TO_CHANGE = ("learner.max_steps", "logging.", "checkpoint.", "eval.", "cluster.", "run_dir", "name")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def config_changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every field that differs."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


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
    _write_yaml(config_path, cfg.to_dict())
    print(f"relay: resuming {run_path} from {ckpt.name} (step {step})")
    return _execute(plan, run_path, callbacks or [], resume_from=ckpt)


def write_data_report(env: Env, run_path: Path) -> dict | None:
    """``RUN_DIR/data_report.json``: what the env's loaders skipped (``env.args.data.on_error: skip``)."""
    report = env.data_report()
    if report is None:
        return None
    atomic_write_text(run_path / "data_report.json", json.dumps(report, indent=2) + "\n")
    if report.get("skipped_lines"):
        msg = f"data: skipped {report['skipped_lines']} malformed line(s) {report.get('skipped_per_file', {})}"
        logger.warning("%s; see %s", msg, run_path / "data_report.json")
        print(f"relay: {msg}; see {run_path / 'data_report.json'}")
    return report


def _execute(plan: Plan, run_path: Path, callbacks: list, resume_from: Path | None) -> Path:
    cfg = plan.cfg
    handler = _setup_file_logging(run_path, cfg.logging.level)
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


def _rollout_pool(
    cfg: RelayConfig,
    model_path: str,
    capacity_watch: Any = None,
    scheduling: list | None = None,
    logits_processors: list | None = None,
):
    """The rollout actors, each holding ``model_path`` plus a LoRA adapter shaped like the learner's;
    ``logits_processors``: the env's extra processor specs (``Env.logits_processors``)."""
    from rl.rollout.pool import RolloutPool

    threads = cfg.rollout.torch_threads or max(1, (os.cpu_count() or 1) // cfg.rollout.num_workers)
    engine_kwargs: dict[str, Any] = {
        "model_path": model_path,
        "lora": cfg.lora.peft_kwargs(),
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
        env_vars=_actor_env(),
        resources=cfg.rollout.resources,
        capacity_watch=capacity_watch,
        scheduling=scheduling,
    )


def _reward_pools(
    cfg: RelayConfig, plan: Plan, started: list, capacity_watch: Any = None, scheduling: dict | None = None
) -> list[tuple[str, float, Any]]:
    """One reward pool per component, as (name, weight, pool); each is appended to ``started`` at once."""
    from rewards.pool import RewardPool, RewardSpec

    pool_settings = {f.name: f for f in cfg.rewards.functions}
    out = []
    for comp in plan.rewards:
        spec = RewardSpec(name=comp.name, source=comp.source or comp.name, weight=comp.weight, kwargs=dict(comp.kwargs))
        if (fc := pool_settings.get(comp.name)) is not None:
            spec.num_workers, spec.timeout_s, spec.max_retries = fc.num_workers, fc.timeout_s, fc.max_retries
            spec.num_cpus, spec.num_gpus, spec.resources = fc.num_cpus, fc.num_gpus, dict(fc.resources)
            spec.runtime_env = fc.runtime_env.to_ray()  # its own Ray runtime env; Relay's env vars merged under
        pool = RewardPool(
            spec,
            on_failure=cfg.rewards.on_failure,
            capacity_watch=capacity_watch,
            scheduling=(scheduling or {}).get(f"reward:{comp.name}"),
            env_vars=_actor_env() if spec.runtime_env else None,
        )
        started.append(pool)
        out.append((comp.name, comp.weight, pool))
    return out


def _train_grpo(
    plan: Plan,
    run_dir: Path,
    model_path: str,
    rollout_pool,
    reward_pools: list,
    callbacks: list,
    resume_from: Path | None,
    world_size: int = 1,
) -> None:
    """TRL's GRPOTrainer with generation and rewards delegated to the pools.

    ``world_size`` > 1: this is one rank of a data-parallel learner (``rl.learner.ddp``; torch.distributed
    already initialised): each rank trains on learner.batch_size / world_size completions, TRL gathers the
    rewards so advantages are computed over the global batch, and files are written by rank 0 only."""
    from peft import LoraConfig as PeftLoraConfig
    from transformers import AutoTokenizer, PrinterCallback

    from rl.checkpoint import FinalizeCheckpoints
    from rl.learner.grpo import (
        RelayGRPOTrainer,
        SamplesToTensorBoard,
        StepStats,
        grpo_args,
        make_reward_func,
        make_rollout_func,
    )
    from rl.metrics import MetricsFile, RelayProgress, RunIdToTensorBoard, run_identity, start_wandb
    from rl.rollout.types import SamplingParams

    cfg = plan.cfg
    stats = StepStats()
    tb_dir = str(run_dir / "tensorboard")
    os.environ["TENSORBOARD_LOGGING_DIR"] = tb_dir  # read by transformers' TensorBoardCallback
    args = grpo_args(cfg, output_dir=str(run_dir / "checkpoints"), reward_weights=[w for _, w, _ in reward_pools])
    args.model_init_kwargs = {"dtype": cfg.model.dtype}
    if world_size > 1:
        args.per_device_train_batch_size = cfg.learner.batch_size // world_size  # the global batch is unchanged
        args.ddp_find_unused_parameters = False  # every LoRA parameter takes part in every step
    sampling = SamplingParams(
        max_new_tokens=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k,
    )
    g = cfg.algorithm.num_generations
    prompts_per_step = cfg.learner.batch_size // g
    async_rollouts = None
    if cfg.rollout.mode == "async":  # prefetch up to max_staleness batches with earlier adapters
        from rl.algos.off_policy import StepSampler
        from rl.learner.async_rollout import AsyncRollouts

        async_rollouts = AsyncRollouts(rollout_pool, sampling, g, cfg.seed, stats, cfg.rollout.max_staleness,
                                       plan.train_dataset, prompts_per_step, cfg.learner.max_steps - 1)  # fmt: skip
        rollout_func = async_rollouts
    else:
        rollout_func = make_rollout_func(rollout_pool, sampling, g, cfg.seed, stats, colocate=cfg.rollout.colocate)
    trainer = RelayGRPOTrainer(
        model=model_path,
        reward_funcs=[make_reward_func(pool, name, stats) for name, _, pool in reward_pools],
        args=args,
        train_dataset=plan.train_dataset,
        processing_class=AutoTokenizer.from_pretrained(model_path),
        peft_config=PeftLoraConfig(**cfg.lora.peft_kwargs()),
        rollout_func=rollout_func,
    )
    trainer.relay_stats = stats
    if async_rollouts is not None:
        async_rollouts.dataset = trainer.train_dataset  # the rows TRL draws its batches from
        n_rows = len(trainer.train_dataset)
        trainer.step_sampler = StepSampler(cfg.seed, n_rows, prompts_per_step, g, cfg.learner.max_steps)
        if cfg.rollout.is_correction != "none":
            trainer.is_correction, trainer.is_cap = cfg.rollout.is_correction, cfg.rollout.is_cap
        if resume_from is not None:  # the batches in flight at the checkpoint, with their own adapters
            async_rollouts.restore(resume_from)
    if cfg.algorithm.name != "grpo":  # TRL's own advantages are GRPO's
        trainer.advantage_estimator = cfg.algorithm.name
        trainer.kl_coef = cfg.algorithm.kl_coef
    trainer.remove_callback(PrinterCallback)  # the progress bar and metrics.jsonl replace raw dict prints
    if async_rollouts is not None:  # in-flight batches + adapters into each checkpoint, before its marker
        from rl.learner.async_rollout import async_checkpoint_callback

        trainer.add_callback(async_checkpoint_callback(async_rollouts))
    keep_best = (cfg.checkpoint.keep_best, cfg.checkpoint.keep_best_mode) if cfg.checkpoint.keep_best else None
    trainer.add_callback(FinalizeCheckpoints(run_dir, cfg.checkpoint.keep, keep_best))  # all ranks; rank 0 writes
    if plan.eval_dataset is not None:  # eval.every_steps: held-out reward on the rollout actors
        from rl.learner.periodic_eval import periodic_eval_callback

        trainer.add_callback(periodic_eval_callback(cfg, plan.eval_dataset, run_dir, rollout_pool, reward_pools,
                                                    stats, trainer.processing_class, async_rollouts))  # fmt: skip
    main = trainer.is_world_process_zero()
    if main:
        trainer.add_callback(MetricsFile(run_dir / "metrics.jsonl"))  # before RelayProgress: it adds tokens/s
    if main and cfg.logging.progress_bar:
        trainer.add_callback(RelayProgress())
    if main and cfg.logging.tensorboard:
        trainer.add_callback(SamplesToTensorBoard(tb_dir, stats))
        trainer.add_callback(RunIdToTensorBoard(tb_dir, run_identity(run_dir)))
    if main and cfg.logging.wandb:
        start_wandb(cfg, run_dir)  # W&B id = the run id, resume="allow": a resumed run continues the same W&B run
    for callback in callbacks:
        trainer.add_callback(callback)
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        if async_rollouts is not None:
            async_rollouts.close()
    trainer.save_model(str(run_dir / "adapter"))  # every rank calls it; transformers writes on rank 0
    if not main:
        return
    summary = {"steps": trainer.state.global_step, "seconds": round(time.perf_counter() - t0, 2)}
    if world_size > 1:
        summary["learner_workers"] = world_size
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("finished: %s", summary)


def setup_learner_process(cfg: RelayConfig) -> None:
    """Quiet libraries and learner.torch_threads, in every process that trains (driver or Ray Train rank)."""
    import torch

    _quiet_libraries()
    if cfg.learner.torch_threads:
        torch.set_num_threads(cfg.learner.torch_threads)


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
            learner_gpus = learner_gpus_per_worker(cfg, _cluster_gpus())
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
        placement_group, scheduling = _placement(cfg, request)
        rollout_pool = _rollout_pool(
            cfg, model_path, watch, scheduling.get("rollout"), logits_processors=plan.env.logits_processors(run_dir)
        )
        pools.append(rollout_pool)
        reward_pools = _reward_pools(cfg, plan, pools, watch, scheduling)
        if cfg.algorithm.name == "ppo":  # Relay's own loop: value head, GAE, clipped losses
            from rl.learner.ppo import run_ppo

            run_ppo(cfg, plan, run_dir, rollout_pool, reward_pools, resume_from, model_path=model_path)
        elif cfg.learner.num_workers > 1:  # Ray Train workers run _train_grpo data-parallel
            from rl.learner.ddp import train_data_parallel

            train_data_parallel(plan, run_dir, model_path, rollout_pool, reward_pools, callbacks, resume_from,
                                use_gpu=learner_gpus > 0, env_vars=_actor_env())  # fmt: skip
        else:
            _train_grpo(plan, run_dir, model_path, rollout_pool, reward_pools, callbacks, resume_from)
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
