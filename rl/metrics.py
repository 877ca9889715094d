"""Run observability: ``metrics.jsonl`` (one object per logged step) and the progress bar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback


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
        record = {"step": state.global_step, **{k: _clean(v) for k, v in logs.items()}}
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
