"""A latency-bound reward for bench/reward_scaling.py: each call waits a fixed time, like a remote
T2I GPU or an LLM judge serving one batch, then scores by length. Kept import-light so actors start fast."""

from __future__ import annotations

import time


def fixed_latency(prompts, completions, completion_ids=None, *, latency_s: float = 0.1, **columns):
    time.sleep(latency_s)  # one remote call, whatever its (bounded) batch size
    return [float(len(c)) for c in completions]
