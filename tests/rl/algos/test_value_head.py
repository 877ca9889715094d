"""Value head and logprob forwards on a tiny random Qwen2 + LoRA (non-zero adapter)."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from rl.algos.value_head import (
    ValueHead,
    policy_and_values,
    reference_logprobs,
    selective_log_softmax,
    token_logprobs,
)

B, T, L = 2, 8, 3


def _manual_logprobs(model, input_ids, attention_mask, temperature=1.0):
    """Full forward, every position, then pick the completion tokens: the slow, obvious way."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, T, V]
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [B, T, V]
    rows = []
    for b in range(input_ids.shape[0]):
        rows.append(torch.stack([logp[b, T - L - 1 + t, input_ids[b, T - L + t]] for t in range(L)]))
    return torch.stack(rows)  # [B, L]


@pytest.fixture(scope="module")
def tiny():
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.2,
    )
    base = Qwen2ForCausalLM(config).eval()
    input_ids = torch.randint(0, 128, (B, T))
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[0, :2] = 0  # left-padded prompt
    base_logp = _manual_logprobs(base, input_ids, attention_mask)  # before any adapter exists
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, lora_dropout=0.0)
    model = get_peft_model(base, lora).eval()
    return model, input_ids, attention_mask, base_logp


def _param_count() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is nn.Parameter)


def test_value_head_shapes_and_dropout():
    head = ValueHead(32, dropout=0.5)
    h = torch.randn(2, 5, 32)
    assert head(h).shape == (2, 5)
    head.eval()
    torch.testing.assert_close(head(h), head(h))
    assert (head.summary.bias == 0).all()
    with pytest.raises(ValueError, match="dropout"):
        ValueHead(32, dropout=1.0)


def test_selective_log_softmax_by_hand():
    # logits [0, log 3] -> probs 1/4, 3/4
    logits = torch.tensor([[[0.0, torch.log(torch.tensor(3.0)).item()]]])
    out = selective_log_softmax(logits, torch.tensor([[1]]))
    torch.testing.assert_close(out, torch.log(torch.tensor([[0.75]])))


def test_policy_and_values_one_forward_aligned(tiny):
    model, input_ids, attention_mask, _ = tiny
    head = ValueHead.for_model(model)
    assert head.hidden_size == 32
    calls = []
    inner = model.get_base_model().model  # the Qwen2Model body
    hook = inner.register_forward_hook(lambda mod, args, out: calls.append(1))
    try:
        logp, values = policy_and_values(model, head, input_ids, attention_mask, L)
    finally:
        hook.remove()
    assert len(calls) == 1  # ONE forward for logprobs and values
    assert logp.shape == (B, L) and values.shape == (B, L)
    torch.testing.assert_close(logp.detach(), _manual_logprobs(model, input_ids, attention_mask), atol=1e-5, rtol=0)
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[-1]
        expected_values = head(hidden)[:, T - L - 1 : T - 1]  # position predicting token t
    torch.testing.assert_close(values.detach(), expected_values, atol=1e-5, rtol=0)


def test_gradients_reach_adapter_and_head_only(tiny):
    model, input_ids, attention_mask, _ = tiny
    head = ValueHead.for_model(model)
    model.zero_grad(set_to_none=True)
    logp, values = policy_and_values(model, head, input_ids, attention_mask, L)
    (logp.sum() + values.sum()).backward()
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    frozen = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert lora and all(p.grad is not None for p in lora)
    assert any(p.grad.abs().sum() > 0 for p in lora)
    assert all(p.grad is None for p in frozen)
    assert head.summary.weight.grad is not None and head.summary.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_reference_logprobs_is_the_base_model_without_a_copy(tiny):
    model, input_ids, attention_mask, base_logp = tiny
    adapted_before = token_logprobs(model, input_ids, attention_mask, L).detach()
    # the adapter is non-zero (init_lora_weights=False), so the policies differ
    assert (adapted_before - base_logp).abs().max() > 1e-3

    gc.collect()
    before = _param_count()
    during = []
    inner = model.get_base_model().model
    hook = inner.register_forward_hook(lambda mod, args, out: during.append(_param_count()))
    try:
        ref = reference_logprobs(model, input_ids, attention_mask, L)
    finally:
        hook.remove()
    assert during == [before]  # no parameter tensors appeared while the reference ran (no deepcopy)
    assert _param_count() == before
    assert not ref.requires_grad
    torch.testing.assert_close(ref, base_logp, atol=1e-5, rtol=0)
    # the adapter is switched back on afterwards
    torch.testing.assert_close(token_logprobs(model, input_ids, attention_mask, L).detach(), adapted_before)


def test_temperature_scales_logits(tiny):
    model, input_ids, attention_mask, _ = tiny
    with torch.no_grad():
        out = token_logprobs(model, input_ids, attention_mask, L, temperature=2.0)
    torch.testing.assert_close(out, _manual_logprobs(model, input_ids, attention_mask, 2.0), atol=1e-5, rtol=0)


def test_layout_and_model_errors(tiny):
    model, input_ids, attention_mask, _ = tiny
    with pytest.raises(ValueError, match="logits_to_keep"):
        token_logprobs(model, input_ids, attention_mask, T)
    with pytest.raises(TypeError, match="disable_adapter"):
        reference_logprobs(model.get_base_model(), input_ids, attention_mask, L)
