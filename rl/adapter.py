"""LoRA adapter tensors: what moves from the learner to the rollout workers after each update.

Keys are peft's ``get_peft_model_state_dict`` keys (adapter name stripped), so a learner and a
worker that wrap the same base model with the same ``LoraConfig`` produce identical key sets and
the worker loads the learner's dict with ``set_peft_model_state_dict``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def policy_lora_kwargs(cfg, env, model_path: str) -> dict[str, Any]:
    """The ``peft.LoraConfig`` kwargs every copy of the policy wraps ``model_path`` with (learner and rollout
    actors, so their state-dict keys match): ``cfg.lora``'s, and with ``lora.train_env_tokens`` the embedding
    rows of the env's own tokens (``Env.trainable_token_ids``) as PEFT ``trainable_token_indices``; PEFT ties
    the output layer's rows to them when the model ties its embeddings."""
    kwargs = cfg.lora.peft_kwargs()
    if cfg.lora.train_env_tokens:
        kwargs["trainable_token_indices"] = {"embed_tokens": [int(i) for i in env.trainable_token_ids(model_path)]}
    return kwargs


def saved_lora_kwargs(cfg, adapter_dir) -> dict[str, Any]:
    """``cfg.lora``'s kwargs plus what a saved adapter trained beyond them (its ``trainable_token_indices``), so
    an engine built from them loads the adapter's tensors."""
    kwargs = cfg.lora.peft_kwargs()
    path = Path(adapter_dir) / "adapter_config.json"
    indices = json.loads(path.read_text()).get("trainable_token_indices") if path.is_file() else None
    if indices:
        kwargs["trainable_token_indices"] = indices
    return kwargs


def lora_state_dict(peft_model, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's tensors, detached, on CPU and contiguous (ready for ``ray.put``)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    return {k: _full(v).detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP2 DTensor) parameter gathered whole; every rank must call this (a collective)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def tensors_nbytes(tensors: dict[str, torch.Tensor]) -> int:
    """Total payload size in bytes."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


@dataclass
class AdapterUpdate:
    """One adapter version as the learner publishes it."""

    version: int
    tensors: dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        return tensors_nbytes(self.tensors)


def assert_same_adapter(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    """Raise AssertionError naming the first difference (keys, shape, dtype-cast values)."""
    missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if missing or extra:
        raise AssertionError(f"adapter keys differ: only in first {missing[:5]}, only in second {extra[:5]}")
    for key in sorted(a):
        x, y = a[key], b[key]
        if x.shape != y.shape:
            raise AssertionError(f"adapter tensor {key!r}: shape {tuple(x.shape)} != {tuple(y.shape)}")
        diff = (x.float() - y.float()).abs().max().item() if x.numel() else 0.0
        if diff > atol:
            raise AssertionError(f"adapter tensor {key!r}: max abs difference {diff:g} > atol {atol:g}")
