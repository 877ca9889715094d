"""RolloutPool on a real local Ray cluster: sharding determinism, adapter sync, staleness, worker death."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from rl.adapter import assert_same_adapter, lora_state_dict
from rl.rollout.hf import HFEngine
from rl.rollout.pool import RolloutPool, shard_bounds
from rl.rollout.types import SamplingParams, StaleAdapterError
from rl.rollout.worker import RolloutWorker
from tests.helpers import LORA, learner_model

PROMPTS = [
    [{"role": "user", "content": "draw a red cat"}],
    [{"role": "user", "content": "two dogs"}, {"role": "assistant", "content": "<think>"}],
    "a blue car on the left",
    [{"role": "user", "content": "count the apples"}],
    "three birds",
]
SAMPLING = SamplingParams(max_new_tokens=12, temperature=0.9)
N = 2
SEEDS = list(range(1000, 1000 + len(PROMPTS) * N))


class MarkerEngine(HFEngine):
    """HFEngine that, while ``<marker_dir>/armed-<its pid>`` exists, announces it is inside generate and
    then stalls, so a test can kill that worker mid-task deterministically."""

    def __init__(self, marker_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.marker_dir = Path(marker_dir)

    def generate(self, *args, **kwargs):
        if (self.marker_dir / f"armed-{os.getpid()}").exists():
            (self.marker_dir / f"busy-{os.getpid()}").touch()
            time.sleep(3.0)
        return super().generate(*args, **kwargs)


@pytest.fixture(scope="module")
def marker_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def pool(ray_cluster, tiny_model_dir, marker_dir):
    kwargs = {"model_path": str(tiny_model_dir), "lora": LORA, "marker_dir": str(marker_dir)}
    engine = f"{Path(__file__).resolve()}:MarkerEngine"  # an import-string engine, resolved in the worker
    with RolloutPool(2, engine, kwargs, num_cpus_per_worker=1) as p:
        yield p


@pytest.fixture(scope="module")
def local_worker(tiny_model_dir) -> RolloutWorker:
    """The same worker class in-process: a one-worker, no-Ray reference."""
    return RolloutWorker("hf", {"model_path": str(tiny_model_dir), "lora": LORA, "torch_threads": 1})


def _ids(rollouts) -> list[tuple]:
    return [(r.prompt_index, r.sample_index, tuple(r.prompt_ids), tuple(r.completion_ids)) for r in rollouts]


def test_shard_bounds_are_contiguous_and_balanced():
    assert shard_bounds(5, 2) == [(0, 3), (3, 5)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2)]
    assert shard_bounds(0, 3) == []


def test_two_workers_match_one(pool, local_worker):
    sharded = pool.generate(PROMPTS, N, SAMPLING, SEEDS)
    single = local_worker.generate(PROMPTS, N, SAMPLING, SEEDS)
    assert _ids(sharded) == _ids(single)
    assert [(r.prompt_index, r.sample_index) for r in sharded] == [
        (p, s) for p in range(len(PROMPTS)) for s in range(N)
    ]
    assert pool.stats.last_completion_tokens == sum(len(r.completion_ids) for r in sharded) > 0
    assert pool.worker_versions() == [-1, -1]


def test_adapter_sync_reaches_every_worker(pool, tiny_model_dir):
    base = pool.generate(PROMPTS, N, SAMPLING, SEEDS)
    learner = learner_model(tiny_model_dir)
    tensors = lora_state_dict(learner)
    pool.sync_adapter(1, tensors)
    assert pool.worker_versions() == [1, 1]
    for i in range(2):
        assert_same_adapter(pool.adapter_tensors(i), tensors)
    tuned = pool.generate(PROMPTS, N, SAMPLING, SEEDS, expected_version=1)
    assert {r.version for r in tuned} == {1}
    assert _ids(tuned) != _ids(base)
    # The workers sample from exactly the learner's policy: its recomputed logprobs match.
    for r in tuned[:4]:
        ids = torch.tensor([r.prompt_ids + r.completion_ids])
        with torch.no_grad():
            logits = learner(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1]  # [C, V]
        want = torch.log_softmax(logits / SAMPLING.temperature, -1).gather(-1, torch.tensor(r.completion_ids)[:, None])
        torch.testing.assert_close(torch.tensor(r.logprobs), want[:, 0], atol=1e-4, rtol=1e-4)


def test_stale_and_non_monotonic_versions_are_refused(pool):
    import ray

    with pytest.raises(StaleAdapterError, match="expects 0"):
        pool.generate(PROMPTS, N, SAMPLING, SEEDS, expected_version=0)
    # The worker's own check survives Ray's exception wrapping (the pool relies on that type).
    with pytest.raises(StaleAdapterError):
        ray.get(pool.workers[0].generate.remote(PROMPTS[:1], 1, SAMPLING, [1], 7))
    with pytest.raises(ValueError, match="older"):
        pool.sync_adapter(0, pool.adapter_tensors(0))


def test_worker_killed_mid_generation_is_restarted_and_resynced(pool, marker_dir):
    version = pool.version
    assert version == 1, "runs after the adapter-sync test"
    expected = pool.generate(PROMPTS, N, SAMPLING, SEEDS, expected_version=version)
    victim = pool.worker_pids()[1]
    retries_before = pool.stats.shard_retries
    results: dict = {}
    (marker_dir / f"armed-{victim}").touch()
    thread = threading.Thread(
        target=lambda: results.update(out=pool.generate(PROMPTS, N, SAMPLING, SEEDS, expected_version=version))
    )
    thread.start()
    busy = marker_dir / f"busy-{victim}"
    deadline = time.monotonic() + 30
    while not busy.exists():
        assert time.monotonic() < deadline, "worker never started generating"
        time.sleep(0.05)

    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert _ids(results["out"]) == _ids(expected)  # complete, in order, same samples
    assert pool.stats.shard_retries > retries_before
    assert pool.worker_versions() == [version, version]
    assert pool.worker_pids()[1] != victim
    # A worker that died between steps comes back at version -1; the pool re-syncs it before sampling,
    # even when the caller does not pass expected_version.
    os.kill(pool.worker_pids()[0], signal.SIGKILL)
    again = pool.generate(PROMPTS, N, SAMPLING, SEEDS)
    assert _ids(again) == _ids(expected) and {r.version for r in again} == {version}
