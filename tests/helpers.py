"""Small builders shared by several test files (import as `from tests.helpers import ...`)."""

from __future__ import annotations

import numpy as np
import torch

LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")


def learner_model(model_dir, seed: int = 0, scale: float = 0.3):
    """A learner-side peft model with the tests' LoraConfig and perturbed (non-identity) LoRA weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(task_type="CAUSAL_LM", **LORA))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def random_index(n_items: int = 60, sizes=(6, 5, 4), seed: int = 0):
    """A SemanticIndex of ``n_items`` distinct random codes."""
    from rewards.rec.semantic_ids import SemanticIndex

    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < n_items:
        seen.add(tuple(int(rng.integers(k)) for k in sizes))
    codes = sorted(seen)
    order = rng.permutation(len(codes))
    return SemanticIndex([f"i{j}" for j in range(n_items)], np.array([codes[o] for o in order]), list(sizes))
