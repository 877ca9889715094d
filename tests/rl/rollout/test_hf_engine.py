"""HFEngine on the tiny Qwen2 model: shapes, logprobs, EOS handling, chat prefill, batching invariance."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from rl.rollout.hf import HFEngine
from rl.rollout.types import Rollout, SamplingParams

LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
PROMPTS = [
    [{"role": "user", "content": "draw a red cat"}],
    [{"role": "user", "content": "two dogs on the left of a bench"}, {"role": "assistant", "content": "<think> the"}],
    "a plain text prompt about a blue car",
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"}],
]


@pytest.fixture(scope="module")
def eos_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a scaled-up EOS embedding, so some samples stop and some hit the length cap."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-eos")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    eos = AutoTokenizer.from_pretrained(tiny_model_dir).eos_token_id
    with torch.no_grad():
        model.get_input_embeddings().weight[eos] *= 3.0  # tied with the LM head
    model.save_pretrained(out)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def engine(eos_model_dir) -> HFEngine:
    return HFEngine(str(eos_model_dir), LORA, torch_threads=1)


def _key(r: Rollout) -> tuple:
    return (r.prompt_index, r.sample_index, tuple(r.completion_ids))


def test_shapes_order_and_logprobs(engine):
    sampling = SamplingParams(max_new_tokens=24)
    rollouts = engine.generate(PROMPTS, 3, sampling, seeds=list(range(12)))
    assert [(r.prompt_index, r.sample_index) for r in rollouts] == [(p, s) for p in range(4) for s in range(3)]
    for r in rollouts:
        assert 1 <= len(r.completion_ids) <= 24
        assert len(r.logprobs) == len(r.completion_ids)
        assert all(math.isfinite(x) and x <= 0 for x in r.logprobs)
        assert r.version == -1 and engine.version == -1
        assert r.prompt_ids == engine.render(PROMPTS[r.prompt_index])
    assert engine.last_stats.completion_tokens == sum(len(r.completion_ids) for r in rollouts)


def test_eos_kept_and_padding_dropped(engine):
    eos = set(engine.eos_ids)
    rollouts = engine.generate(PROMPTS, 4, SamplingParams(max_new_tokens=16), seeds=list(range(100, 116)))
    reasons = {r.finish_reason for r in rollouts}
    assert reasons == {"stop", "length"}, "fixture should give both outcomes"
    for r in rollouts:
        if r.finish_reason == "stop":
            assert r.completion_ids[-1] in eos and not eos & set(r.completion_ids[:-1])
        else:
            assert len(r.completion_ids) == 16 and not eos & set(r.completion_ids)
        assert engine.pad_id not in r.completion_ids[:-1] or engine.pad_id in eos


def test_logprobs_match_teacher_forcing(engine):
    """What the learner recomputes (log_softmax(logits / T) at the sampled ids) is what the engine reported."""
    sampling = SamplingParams(max_new_tokens=12, temperature=0.7, top_k=50, top_p=0.9)
    for r in engine.generate(PROMPTS, 2, sampling, seeds=list(range(8))):
        ids = torch.tensor([r.prompt_ids + r.completion_ids])  # [1, P+C]
        with torch.no_grad():
            logits = engine.model(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1]  # [C, V]
        expected = torch.log_softmax(logits.float() / 0.7, -1).gather(-1, torch.tensor(r.completion_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(r.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_continue_final_message_prefills_the_assistant_turn(engine):
    prefill = engine.tokenizer.decode(engine.render(PROMPTS[1]))
    assert prefill.endswith("<|im_start|>assistant\n<think> the")  # not closed, no new generation prompt
    fresh = engine.tokenizer.decode(engine.render(PROMPTS[0]))
    assert fresh.endswith("<|im_start|>assistant\n")


def test_same_seed_same_completion_regardless_of_batching(engine):
    sampling = SamplingParams(max_new_tokens=16, temperature=0.9, top_p=0.95)
    seeds = [7, 8, 9, 10, 11, 12, 13, 14]
    batched = engine.generate(PROMPTS, 2, sampling, seeds=seeds)
    engine.batch_size = 1
    try:
        one_by_one = engine.generate(PROMPTS, 2, sampling, seeds=seeds)
    finally:
        engine.batch_size = None
    assert [_key(r) for r in batched] == [_key(r) for r in one_by_one]
    # Alone, and next to a much longer prompt (more left padding, different batch mates).
    alone = engine.generate([PROMPTS[3]], 1, sampling, seeds=[seeds[6]])[0]
    long_prompt = "one two three four five six seven eight nine ten " * 4
    mixed = engine.generate([long_prompt, PROMPTS[3]], 1, sampling, seeds=[99, seeds[6]])[1]
    assert alone.completion_ids == mixed.completion_ids == batched[6].completion_ids
    torch.testing.assert_close(torch.tensor(alone.logprobs), torch.tensor(mixed.logprobs), atol=1e-5, rtol=1e-5)
    # Different seeds do differ.
    assert len({tuple(r.completion_ids) for r in batched}) > 4


def test_greedy_ignores_seeds(engine):
    sampling = SamplingParams(max_new_tokens=10, temperature=0.0)
    a, b = engine.generate([PROMPTS[0]], 2, sampling, seeds=[1, 2])
    assert a.completion_ids == b.completion_ids


def test_bad_arguments_fail_clearly(engine):
    with pytest.raises(ValueError, match="one per rollout"):
        engine.generate(PROMPTS, 2, SamplingParams(max_new_tokens=4), seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(max_new_tokens=4, top_p=0.0)
    with pytest.raises(ValueError, match="renders to no tokens"):
        engine.generate([""], 1, SamplingParams(max_new_tokens=4))


def test_throughput_is_reported(engine, capsys):
    engine.generate(["a red cat"] * 8, 2, SamplingParams(max_new_tokens=32), seeds=list(range(16)))
    stats = engine.last_stats
    assert stats.rollouts == 16 and stats.tokens_per_second > 0
    with capsys.disabled():
        print(
            f"\n[hf engine] {stats.completion_tokens} tokens in {stats.seconds:.3f}s = {stats.tokens_per_second:.0f} tok/s"
        )
