"""RolloutWorker as a plain class: on-policy version checks and monotonic adapter versions."""

from __future__ import annotations

import pytest

from rl.registry import RegistryError
from rl.rollout.types import SamplingParams, StaleAdapterError
from rl.rollout.worker import ENGINES, RolloutWorker

LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")


@pytest.fixture(scope="module")
def worker(tiny_model_dir) -> RolloutWorker:
    return RolloutWorker("hf", {"model_path": str(tiny_model_dir), "lora": LORA, "torch_threads": 1})


def test_version_checks(worker):
    tensors = worker.adapter_tensors()
    sampling = SamplingParams(max_new_tokens=4)
    assert worker.version() == -1
    with pytest.raises(StaleAdapterError, match="holds adapter version -1 but the request expects version 0"):
        worker.generate(["a cat"], 1, sampling, [1], expected_version=0)
    assert worker.load_adapter(2, tensors) == 2
    assert worker.load_adapter(2, tensors) == 2  # same version again: a restarted worker catching up
    [r] = worker.generate(["a cat"], 1, sampling, [1], expected_version=2)
    assert r.version == 2
    with pytest.raises(ValueError, match="older than the loaded version 2"):
        worker.load_adapter(1, tensors)
    assert worker.version() == 2


def test_wrong_adapter_layout_is_refused(worker):
    tensors = worker.adapter_tensors()
    tensors.pop(next(iter(tensors)))
    with pytest.raises(ValueError, match="same base model and LoraConfig"):
        worker.load_adapter(10, tensors)


def test_unknown_engine_lists_known_ones():
    assert "hf" in ENGINES
    with pytest.raises(RegistryError, match="known: hf"):
        RolloutWorker("hff", {})
