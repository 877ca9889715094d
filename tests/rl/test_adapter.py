"""Adapter tensors: learner-side state dict is CPU/contiguous/detached and loads into a rollout engine."""

from __future__ import annotations

import pytest
import torch

from rl.adapter import AdapterUpdate, assert_same_adapter, lora_state_dict, tensors_nbytes
from rl.rollout.hf import HFEngine
from rl.rollout.types import SamplingParams
from tests.helpers import LORA, learner_model


@pytest.fixture(scope="module")
def learner(tiny_model_dir):
    return learner_model(tiny_model_dir)


def test_state_dict_is_portable(learner):
    tensors = lora_state_dict(learner)
    assert tensors and all(".lora_A." in k or ".lora_B." in k for k in tensors)
    for t in tensors.values():
        assert t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad
    # A copy: later optimizer steps on the learner must not change what was published.
    key = next(iter(tensors))
    before = tensors[key].clone()
    with torch.no_grad():
        dict(learner.named_parameters())[key.replace(".weight", ".default.weight")].add_(1.0)
    torch.testing.assert_close(tensors[key], before)
    with torch.no_grad():
        dict(learner.named_parameters())[key.replace(".weight", ".default.weight")].sub_(1.0)
    update = AdapterUpdate(version=1, tensors=tensors)
    assert update.nbytes == tensors_nbytes(tensors) == sum(t.numel() * 4 for t in tensors.values())


def test_engine_loads_learner_adapter(tiny_model_dir, learner):
    engine = HFEngine(str(tiny_model_dir), LORA, torch_threads=1)
    sampling = SamplingParams(max_new_tokens=12)
    base = engine.generate(["a red cat", "two dogs"], 2, sampling, seeds=[1, 2, 3, 4])
    with pytest.raises(AssertionError, match="max abs difference"):
        assert_same_adapter(engine.adapter_tensors(), lora_state_dict(learner))
    engine.load_adapter(1, lora_state_dict(learner))
    assert engine.version == 1
    assert_same_adapter(engine.adapter_tensors(), lora_state_dict(learner))
    tuned = engine.generate(["a red cat", "two dogs"], 2, sampling, seeds=[1, 2, 3, 4])
    assert [r.completion_ids for r in tuned] != [r.completion_ids for r in base]
    assert {r.version for r in tuned} == {1}


def test_assert_same_adapter_names_the_difference():
    a = {"x.lora_A.weight": torch.zeros(2, 3)}
    with pytest.raises(AssertionError, match="keys differ"):
        assert_same_adapter(a, {"y.lora_A.weight": torch.zeros(2, 3)})
    with pytest.raises(AssertionError, match="shape"):
        assert_same_adapter(a, {"x.lora_A.weight": torch.zeros(3, 2)})
    assert_same_adapter(a, {"x.lora_A.weight": torch.full((2, 3), 1e-7)}, atol=1e-6)


def test_fsdp_sharded_adapter_is_published_whole_on_every_rank(tiny_model_dir, tmp_path):
    """learner.strategy=fsdp: each rank holds a shard; the adapter shipped to the rollout workers is whole.

    Real FSDP2 (``fully_shard``) over 2 torchrun processes with gloo on CPU (accelerate applies the same
    sharding on GPUs; it does not shard on CPU, so the end-to-end run is a gpu test)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    script = repo / "tests" / "rl" / "fixtures" / "fsdp_adapter_gather.py"
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(tiny_model_dir), str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # a hung rendezvous: stop torchrun and both ranks
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["held_fraction"] < 0.6  # sharded: each rank holds about half the parameters
        assert r["same_keys"] and r["equal"] and r["plain_tensors"]
    assert ranks[0]["digest"] == ranks[1]["digest"]
