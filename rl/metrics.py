"""Run observability: ``metrics.jsonl`` (one object per logged step) and the progress bar."""

from __future__ import annotations

import json
import math
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback

from rl.atomic import atomic_write_text

RUN_FILE = "run.json"  # {"run_id", "created"}: written once with the run directory, kept across resumes


def run_identity(run_dir: str | Path, *, create: bool = False) -> str:
    """The run's id, from RUN_DIR/run.json; ``create``: make it first if the directory has none (a new run,
    or one started before run ids existed). ``relay resume`` reuses it, so TensorBoard and W&B see one run."""
    path = Path(run_dir) / RUN_FILE
    if path.is_file():
        return str(json.loads(path.read_text())["run_id"])
    if not create:
        raise FileNotFoundError(f"{path}: no run id; the run directory was not made by relay train")
    run_id = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"  # W&B-safe: [0-9a-z-]
    record = {"run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return run_id


def wandb_init_kwargs(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """``wandb.init`` arguments: the run id as the W&B id with ``resume="allow"``, so a resumed run appends
    to the same W&B run (from its checkpoint's step: rows are logged with train/global_step)."""
    run_dir = Path(run_dir)
    return {
        "project": cfg.logging.wandb_project,
        "id": run_identity(run_dir),
        "resume": "allow",
        "name": run_dir.name,
        "dir": str(run_dir),
        "config": cfg.to_dict(),
    }


def start_wandb(cfg: Any, run_dir: str | Path) -> None:
    """Open the W&B run before the trainer does: transformers' WandbCallback then logs into it."""
    import wandb

    if wandb.run is None:
        wandb.init(**wandb_init_kwargs(cfg, run_dir))


class RunIdToTensorBoard(TrainerCallback):
    """Writes the run id as TensorBoard text (``relay/run_id``) at the step each (re)start begins from."""

    def __init__(self, logdir: str | Path, run_id: str):
        self.logdir, self.run_id = str(logdir), run_id

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(self.logdir) as writer:
                writer.add_text("relay/run_id", self.run_id, state.global_step)


def _clean(value):
    # JSON has no NaN/inf; a missing value is null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsFile(TrainerCallback):
    """Appends ``{"step": ..., "reward": ..., ...}`` to RUN_DIR/metrics.jsonl at every training log."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._last_tokens: float | None = None
        self._last_time: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "reward" not in logs:
            return  # end-of-training summaries (train_runtime, ...) are not step records
        now = time.perf_counter()
        tokens = logs.get("num_tokens")
        if tokens is not None and self._last_tokens is not None and now > self._last_time:
            logs["tokens_per_second"] = (tokens - self._last_tokens) / (now - self._last_time)
        self._last_tokens, self._last_time = tokens, now
        # The global step, explicitly and always: a resumed run's rows continue the same numbering.
        record = {"step": state.global_step, **{k: _clean(v) for k, v in logs.items() if k != "step"}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class RelayProgress(TrainerCallback):
    """A tqdm bar over optimizer steps showing reward, KL and tokens/s."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="relay train", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs or "reward" not in logs:
            return
        shown = {"reward": logs.get("reward"), "kl": logs.get("kl"), "tok/s": logs.get("tokens_per_second")}
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if isinstance(v, (int, float))})

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
