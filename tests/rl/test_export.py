"""relay export: a checkpoint as a plain PEFT adapter directory, or merged into the base model."""

from __future__ import annotations

import shutil

import pytest
import torch

from rl.checkpoint import finalize
from rl.cli import main


@pytest.fixture
def run_with_checkpoint(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "base_model")
    (run / "config.yaml").write_text("model:\n  name: tiny\n")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(run / "base_model"),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
    )
    ckpt = run / "checkpoints" / "checkpoint-3"
    model.save_pretrained(ckpt)
    finalize(ckpt, 3)
    return run, model


def test_export_adapter_loads_with_peft(run_with_checkpoint, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run, model = run_with_checkpoint
    assert main(["export", str(run), str(tmp_path / "adapter")]) == 0
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run / "base_model"), tmp_path / "adapter")
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)


def test_export_merged_matches_the_adapted_model(run_with_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    run, model = run_with_checkpoint
    assert main(["export", str(run), str(tmp_path / "merged"), "--merge"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, model(ids).logits, atol=1e-4)


def test_export_refuses_a_corrupt_or_missing_checkpoint(run_with_checkpoint, tmp_path, capsys):
    run, _ = run_with_checkpoint
    assert main(["export", str(run), str(tmp_path / "x"), "--checkpoint", "7"]) == 2
    assert "--checkpoint 7: not in" in capsys.readouterr().err
    (run / "checkpoints" / "checkpoint-3" / "adapter_model.safetensors").write_bytes(b"broken")
    assert main(["export", str(run), str(tmp_path / "x"), "--checkpoint", "3"]) == 2
    assert "expected" in capsys.readouterr().err  # the size check names both sizes
