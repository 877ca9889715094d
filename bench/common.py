"""Shared bench helpers: a local Ray cluster, step timing, metric means and the docs/benchmarks.md writer."""

from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from transformers import TrainerCallback

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (generation + rewards + update), measured the same way for every runner."""

    def __init__(self):
        self.times: list[float] = []
        self._t = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)

    def median(self, skip: int = 2) -> float:
        return statistics.median(self.times[skip:] if len(self.times) > skip + 2 else self.times)


@contextlib.contextmanager
def local_cluster(num_cpus: int = 4) -> Iterator[None]:
    """A local Ray cluster (Relay's own start: token auth, loopback, its own temp dir) for the block."""
    from rl.cluster import shutdown, start_or_join

    temp_dir = tempfile.mkdtemp(prefix="relay-bench-ray-", dir="/tmp")
    handle = start_or_join(None, num_cpus=num_cpus, temp_dir=temp_dir)
    try:
        yield
    finally:
        shutdown(handle)
        shutil.rmtree(temp_dir, ignore_errors=True)


def mean_after_warmup(records: list[dict], key: str, skip: int = 2) -> float:
    """Mean of ``key`` over metrics.jsonl records after the first ``skip`` (warm-up) steps."""
    vals = [r[key] for r in records[skip:] if r.get(key) is not None]
    return statistics.mean(vals) if vals else float("nan")


def write_section(title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the ``## title`` section of docs/benchmarks.md, keeping the others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by the bench script it names.\n"
    )
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")
