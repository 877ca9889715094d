"""A data-parallel GRPO learner: TRL's trainer in ``learner.num_workers`` Ray Train workers (DDP).

The driver creates the rollout and reward pools as for one learner and hands them (objects holding
Ray actor handles, pickled into every worker) to a ``ray.train.torch.TorchTrainer``. Ray Train starts
the workers and initialises torch.distributed (gloo on CPU, nccl on GPUs) and sets RANK/WORLD_SIZE/
LOCAL_RANK, so transformers/accelerate see an ordinary multi-process launch; each worker then runs
``rl.learner.grpo_train.train_grpo`` on the same ``Session``, unchanged except for the per-device batch (learner.batch_size / N):

- TRL's RepeatSampler draws the same global batch on every rank (same seed) and accelerate gives
  rank r the r-th contiguous slice, so rank r holds global prompts ``r * B/(N*G)`` onwards; the
  ``rollout_func`` offsets its sampling seeds by that position, so N workers generate exactly the
  completions one worker would.
- Rewards are gathered across ranks by TRL before advantages, so group statistics are global; the
  dapo/cispo losses divide by the global token count, and DDP averages the gradients: the update is
  the single-process one up to float reduction order.
- Rank 0 ships the adapter to the rollout pool after each step; the others wait at a barrier and
  record the version (``RolloutPool.adopt_adapter``), since DDP keeps the adapters identical.
- Checkpoints, metrics.jsonl, TensorBoard, the final adapter and summary.json are written by rank 0
  into the run directory the driver created (a path every worker can reach: one machine, or a shared
  filesystem on a cluster). Ray Train's own storage (``RUN_DIR/ray_train``) only holds its run state.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rl.learner.session import Session


def adapter_digest(model) -> str:
    """sha256 over the LoRA tensors' names, dtypes and bytes (bitwise identity of two adapters)."""
    import torch

    from rl.adapter import lora_state_dict

    h = hashlib.sha256()
    for name, tensor in sorted(lora_state_dict(model).items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def held_fraction(model) -> float:
    """The fraction of the model's parameter elements this rank holds: 1.0 replicated (DDP), about
    1/N when FSDP shards the model over N ranks."""
    from torch.distributed.tensor import DTensor

    local = total = 0
    for p in model.parameters():
        total += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return local / max(total, 1)


class AdapterDigest(TrainerCallback):
    """After every optimizer step, appends ``{"step", "rank", "sha256"}`` of this rank's adapter to
    ``DIR/adapter_digest.rank<R>.jsonl``: the evidence that data-parallel ranks hold identical weights."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        rank = int(os.environ.get("RANK", "0"))
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"step": state.global_step, "rank": rank, "sha256": adapter_digest(model),
                  "held_fraction": held_fraction(model)}  # fmt: skip
        with (self.directory / f"adapter_digest.rank{rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the GRPO learner on this rank's share of every batch."""
    session = config["session"]
    os.environ.update(session.actor_env)
    import ray.train

    from rl.learner.grpo_train import train_grpo
    from rl.process_setup import setup_learner_process

    setup_learner_process(session.cfg)
    train_grpo(session, world_size=ray.train.get_context().get_world_size())


class DataParallelLearner:
    """The ``Learner`` for a GRPO-family algorithm with ``learner.num_workers > 1``."""

    def train(self, session: Session) -> dict[str, Any] | None:
        train_data_parallel(session)
        path = Path(session.run_dir) / "summary.json"  # written by rank 0
        return json.loads(path.read_text()) if path.is_file() else None


def train_data_parallel(session: Session) -> None:
    """Run the GRPO learner in ``learner.num_workers`` Ray Train workers; returns when all finished."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = session.cfg
    run_dir = Path(session.run_dir).resolve()  # workers are other processes (possibly other nodes): absolute paths
    model_path, resume_from = session.model_path, session.resume_from
    use_gpu = session.learner_gpus > 0
    resources = {"CPU": 1.0, **({"GPU": 1.0} if use_gpu else {})}
    session = replace(
        session,
        run_dir=run_dir,
        model_path=str(Path(model_path).resolve()) if Path(model_path).exists() else model_path,
        resume_from=Path(resume_from).resolve() if resume_from else None,
    )
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"session": session},  # pickled into every worker, pool handles included
        # cluster.stall_timeout_s bounds every collective too: a hung rank fails the run (resumable)
        torch_config=TorchConfig(
            backend="nccl" if use_gpu else "gloo", timeout_s=int(cfg.cluster.stall_timeout_s or 1800)
        ),  # fmt: skip
        scaling_config=ScalingConfig(
            num_workers=cfg.learner.num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),  # fmt: skip
        # No retries: a failed rank fails the run, which `relay resume` continues from its last checkpoint.
        run_config=RunConfig(
            name="learner", storage_path=str(run_dir / "ray_train"), failure_config=FailureConfig(max_failures=0)
        ),  # fmt: skip
    )
    try:
        trainer.fit()
    except TrainingFailedError as exc:
        raise _learner_failure(exc) from exc


def _learner_failure(exc: Exception) -> Exception:
    """What a failed Ray Train run means for Relay: an exception raised by the learner code on some rank
    is re-raised as is (as the single-process learner would); a rank whose process died (killed, out of
    memory, node lost) stops the run at its latest checkpoint, resumable (``LearnerWorkerFailed``)."""
    from ray.exceptions import RayError
    from ray.train.v2.api.exceptions import RayTrainError  # failed health checks: the process is gone

    from rl.cluster import LearnerWorkerFailed

    failures = dict(sorted((getattr(exc, "worker_failures", None) or {}).items()))
    dead = {rank: error for rank, error in failures.items() if isinstance(error, RayError | RayTrainError)}
    if not dead:  # a rank's own error (the others then fail in a collective), or Ray Train's controller
        return next(iter(failures.values()), exc)
    # A dead rank makes the others fail in their next collective (gloo/nccl "connection closed"): not causes.
    detail = "; ".join(f"rank {rank}: {str(error).strip().splitlines()[0]}" for rank, error in dead.items())
    return LearnerWorkerFailed(f"learner worker(s) {', '.join(map(str, dead))} died ({detail})")
