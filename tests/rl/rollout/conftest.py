"""Rollout-engine fixtures: one small model both engines can run (vLLM's CPU kernels need head size >= 32)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def coded_model(tmp_path_factory) -> dict:
    """The tiny Qwen2 model with head size 32 (hidden 64, 2 heads) plus the code tokens of a random
    60-item semantic index (as the genrec env adds them), saved as a plain checkpoint, and that index."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.rec.semantic_ids import add_code_tokens
    from rl.tiny_model import TinyModelSpec, build_tiny_model
    from tests.helpers import random_index

    root = tmp_path_factory.mktemp("coded-model")
    base = build_tiny_model(root / "base", TinyModelSpec(num_attention_heads=2, num_key_value_heads=1))
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    index = random_index()
    add_code_tokens(tok, model, index)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return {"dir": root / "model", "index": index.save(root / "index.json")}
