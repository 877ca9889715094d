"""One engine-contract suite, run for every rollout engine.

hf runs everywhere; vllm runs where vLLM and a CUDA GPU are present and is skipped with the reason
elsewhere (vLLM has no CPU build). Engines are built through the same ENGINES registry the workers use.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from rl.rollout.types import SamplingParams
from rl.rollout.worker import ENGINES

LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
PROMPTS = ["a plain text prompt", [{"role": "user", "content": "draw a red cat"}]]
ENGINE_IMPORTS = {"hf": "rl.rollout.hf:HFEngine", "vllm": "rl.rollout.vllm:VLLMEngine"}


def _skip_reason(name: str) -> str | None:
    if name == "vllm":
        if importlib.util.find_spec("vllm") is None:
            return "vllm engine: vLLM is not installed (GPU-only extra: pip install 'relay-rl[vllm]')"
        if not torch.cuda.is_available():
            return "vllm engine: no CUDA GPU on this machine (vLLM has no CPU build)"
    return None


def _engine_cls(name: str):
    try:
        return ENGINES.resolve(name)
    except Exception:  # not registered yet: the import string the registry would hold
        return ENGINES.resolve(ENGINE_IMPORTS[name])


def _kwargs(name: str) -> dict:
    if name == "hf":
        return {"torch_threads": 1}
    return {"dtype": "float32", "gpu_memory_utilization": 0.3, "enforce_eager": True, "max_model_len": 256,
            "sleep_mode": True}  # fmt: skip


@pytest.fixture(scope="module", params=["hf", pytest.param("vllm", marks=pytest.mark.gpu)])
def engine(request, tiny_model_dir):
    reason = _skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return _engine_cls(request.param)(str(tiny_model_dir), LORA, **_kwargs(request.param))


@pytest.fixture(scope="module")
def adapter(tiny_model_dir):
    """LoRA tensors the learner would send: peft's state dict with B moved off zero."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(task_type="CAUSAL_LM", **LORA)
    )
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}


SAMPLING = SamplingParams(max_new_tokens=12, temperature=1.0)
SEEDS = list(range(100, 106))


def test_shapes_order_logprobs_and_base_version(engine):
    rollouts = engine.generate(PROMPTS, 3, SAMPLING, seeds=SEEDS)
    assert [(r.prompt_index, r.sample_index) for r in rollouts] == [(p, s) for p in range(2) for s in range(3)]
    for r in rollouts:
        assert r.version == -1
        assert 1 <= len(r.completion_ids) <= 12 and len(r.logprobs) == len(r.completion_ids)
        assert all(math.isfinite(x) and x <= 0 for x in r.logprobs)
        assert r.prompt_ids == engine.render(PROMPTS[r.prompt_index])
        if r.finish_reason == "length":
            assert len(r.completion_ids) == 12
        else:
            assert r.finish_reason == "stop" and r.completion_ids[-1] in engine.eos_ids
    assert engine.last_stats.rollouts == 6


def test_same_seeds_same_rollouts_regardless_of_batch(engine):
    a = engine.generate(PROMPTS, 3, SAMPLING, seeds=SEEDS)
    b = engine.generate(PROMPTS[1:], 3, SAMPLING, seeds=SEEDS[3:])
    assert [r.completion_ids for r in a[3:]] == [r.completion_ids for r in b]


def test_greedy_is_deterministic(engine):
    g = SamplingParams(max_new_tokens=8, temperature=0)
    a, b = engine.generate(PROMPTS, 1, g, seeds=[1, 2]), engine.generate(PROMPTS, 1, g, seeds=[3, 4])
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]


def test_load_adapter_changes_policy_and_stamps_version(engine, adapter):
    before = engine.generate(PROMPTS, 3, SAMPLING, seeds=SEEDS)
    engine.load_adapter(0, adapter)
    after = engine.generate(PROMPTS, 3, SAMPLING, seeds=SEEDS)
    assert engine.version == 0 and all(r.version == 0 for r in after)
    assert [(r.completion_ids, r.logprobs) for r in before] != [(r.completion_ids, r.logprobs) for r in after]
    engine.load_adapter(1, adapter)  # same tensors, new version: same policy, new stamp
    again = engine.generate(PROMPTS, 3, SAMPLING, seeds=SEEDS)
    assert [r.completion_ids for r in again] == [r.completion_ids for r in after]
    assert all(r.version == 1 for r in again)


def test_bad_seed_count_is_refused(engine):
    with pytest.raises(ValueError, match="one per rollout"):
        engine.generate(PROMPTS, 2, SAMPLING, seeds=[1, 2, 3])


def test_sleep_refuses_generation_and_wake_restores_the_same_policy(engine, adapter):
    """rollout.colocate: an engine asleep (device memory handed to the learner) never samples; awake
    again, with an adapter loaded while it slept, it samples exactly as before."""
    g = SamplingParams(max_new_tokens=8, temperature=0)
    engine.load_adapter(7, adapter)
    before = engine.generate(PROMPTS, 1, g, seeds=[1, 2])
    engine.sleep()
    assert engine.asleep
    with pytest.raises(RuntimeError, match="asleep"):
        engine.generate(PROMPTS, 1, g, seeds=[1, 2])
    engine.load_adapter(8, adapter)  # the learner's next version arrives while asleep
    engine.wake_up()
    assert not engine.asleep
    after = engine.generate(PROMPTS, 1, g, seeds=[1, 2])
    assert [r.completion_ids for r in after] == [r.completion_ids for r in before]
    assert all(r.version == 8 for r in after)
