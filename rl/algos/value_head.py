"""Value head for PPO and the logprob forwards the learners need.

Sequence layout (as TRL): ``input_ids`` [B, T] is prompt + completion, the completion being the
last ``logits_to_keep`` = L positions (left-padded prompts, right-padded completions). Position
``T - L - 1 + t`` predicts completion token ``t``, so its logits give ``logp_t`` and its last
hidden state gives ``V_t``, the value of the state *before* token ``t`` is generated. Both come
out [B, L], aligned with the completion mask.

The reference policy is the base model with the LoRA adapter switched off
(``peft_model.disable_adapter()``), so no second copy of the weights is held.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ValueHead",
    "policy_and_values",
    "reference_logprobs",
    "selective_log_softmax",
    "token_logprobs",
]


class ValueHead(nn.Module):
    """Linear value head on the policy's last hidden states: [B, T, H] -> [B, T].

    ``dropout`` applies to the hidden states before the projection. The bias starts at 0 and the
    weight ~ N(0, init_std^2), init_std = 1/sqrt(H + 1) by default (OpenAI lm-human-preferences).
    """

    def __init__(self, hidden_size: int, dropout: float = 0.0, init_std: float | None = None):
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size ({hidden_size}) must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout ({dropout}) must be in [0, 1)")
        self.hidden_size = hidden_size
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.summary = nn.Linear(hidden_size, 1)
        std = init_std if init_std is not None else (hidden_size + 1) ** -0.5
        nn.init.normal_(self.summary.weight, std=std)
        nn.init.zeros_(self.summary.bias)

    @classmethod
    def for_model(cls, model: nn.Module, dropout: float = 0.0) -> ValueHead:
        """A head sized from ``model.config.hidden_size`` (works through a PeftModel)."""
        config = getattr(model, "config", None)
        hidden = getattr(config, "hidden_size", None)
        if hidden is None:
            raise ValueError(f"{type(model).__name__} has no config.hidden_size; build ValueHead(hidden_size) directly")
        return cls(int(hidden), dropout=dropout)

    def forward(self, hidden_states: Tensor) -> Tensor:
        # hidden_states: [B, T, H] -> values [B, T], in the head's dtype
        h = self.dropout(hidden_states.to(self.summary.weight.dtype))
        return self.summary(h).squeeze(-1)


def selective_log_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """log softmax(logits)[index] without materialising the full log-prob tensor twice.

    logits: [B, L, V]; index: [B, L] -> [B, L] (float32 for stability under bf16).
    """
    logits = logits.float()
    picked = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)  # [B, L]
    return picked - torch.logsumexp(logits, dim=-1)  # [B, L]


def _check_layout(input_ids: Tensor, attention_mask: Tensor, logits_to_keep: int) -> None:
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(
            f"input_ids and attention_mask must both be [B, T]; got {tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    T = input_ids.shape[1]
    if not 1 <= logits_to_keep < T:
        raise ValueError(
            f"logits_to_keep ({logits_to_keep}) must be the completion length, between 1 and T - 1 = {T - 1}"
        )


def _forward(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    logits_to_keep: int,
    temperature: float,
    output_hidden_states: bool,
) -> tuple[Tensor, Any]:
    """One forward; returns completion-token logprobs [B, L] and the model output."""
    _check_layout(input_ids, attention_mask, logits_to_keep)
    if temperature <= 0:
        raise ValueError(f"temperature ({temperature}) must be > 0 (use the sampling temperature)")
    L = logits_to_keep
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        logits_to_keep=L + 1,  # the last position predicts nothing in the completion
        output_hidden_states=output_hidden_states,
        use_cache=False,
    )
    logits = out.logits[:, -L - 1 : -1, :]  # [B, L, V]
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, -L:]  # [B, L]
    return selective_log_softmax(logits, targets), out


def token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    logits_to_keep: int,
    temperature: float = 1.0,
) -> Tensor:
    """Logprobs of the completion tokens under ``model`` (adapter as it is). [B, T] -> [B, L]."""
    logp, _ = _forward(model, input_ids, attention_mask, logits_to_keep, temperature, output_hidden_states=False)
    return logp


def policy_and_values(
    peft_model: nn.Module,
    value_head: ValueHead,
    input_ids: Tensor,
    attention_mask: Tensor,
    logits_to_keep: int,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """ONE forward of the (adapted) policy giving completion logprobs and values.

    input_ids, attention_mask: [B, T]; returns ``(logprobs [B, L], values [B, L])`` with
    L = ``logits_to_keep``; ``values[:, t]`` comes from the last hidden state at the position
    that predicts completion token ``t``. Gradients flow to the adapter and the value head.
    """
    logp, out = _forward(peft_model, input_ids, attention_mask, logits_to_keep, temperature, output_hidden_states=True)
    L = logits_to_keep
    hidden = out.hidden_states[-1][:, -L - 1 : -1, :]  # [B, L, H] (after the final norm)
    values = value_head(hidden)  # [B, L]
    return logp, values


@torch.no_grad()
def reference_logprobs(
    peft_model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    logits_to_keep: int,
    temperature: float = 1.0,
) -> Tensor:
    """Completion logprobs under the reference policy = the base model with the adapter disabled.

    [B, T] -> [B, L]. Uses ``peft_model.disable_adapter()`` (re-enabled on exit, even on error),
    so the reference costs a forward, not a second copy of the weights.
    """
    disable = getattr(peft_model, "disable_adapter", None)
    if disable is None:
        raise TypeError(
            f"reference_logprobs needs a peft model with disable_adapter(); got {type(peft_model).__name__}. "
            "Wrap the policy with peft.get_peft_model, or compute reference logprobs from a separate model"
        )
    with disable():
        return token_logprobs(peft_model, input_ids, attention_mask, logits_to_keep, temperature)
