"""The vLLM engine's glue on CPU: requests, output parsing, adapter packaging/eviction, merged fallback,
constraints. The merged-weight math is checked against peft's own merge_and_unload."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from rl.rollout import vllm_glue as glue
from rl.rollout.types import SamplingParams

LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")


@pytest.fixture(scope="module")
def peft_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(task_type="CAUSAL_LM", **LORA)
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # B = 0 at init would make every check trivial
    return model


@pytest.fixture(scope="module")
def tensors(peft_model):
    from peft import get_peft_model_state_dict

    return {k: v.clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def test_requests_prompt_major_with_own_seeds():
    reqs = glue.build_requests([[1, 2], [3]], 2, [10, 11, 12, 13])
    assert [(r.prompt_index, r.sample_index, r.seed) for r in reqs] == [(0, 0, 10), (0, 1, 11), (1, 0, 12), (1, 1, 13)]
    assert reqs[2].prompt_ids == [3]
    with pytest.raises(ValueError, match="need one per rollout"):
        glue.build_requests([[1]], 2, [1])
    with pytest.raises(ValueError, match="prompt 1 renders to no tokens"):
        glue.build_requests([[1], []], 1, [1, 2])


def test_sampling_kwargs_and_unsupported_truncation():
    kw = glue.sampling_kwargs(SamplingParams(max_new_tokens=7, temperature=0.7), 42, [5, 6])
    assert kw == {
        "n": 1, "max_tokens": 7, "temperature": 0.7, "top_p": 1.0, "top_k": 0, "seed": 42, "logprobs": 0,
        "stop_token_ids": [5, 6], "skip_special_tokens": True, "detokenize": True,
    }  # fmt: skip
    assert glue.sampling_kwargs(SamplingParams(max_new_tokens=1, temperature=0), 1, [5])["temperature"] == 0.0
    assert glue.check_sampling(SamplingParams(max_new_tokens=1)) == []
    assert "rollout.top_k=0" in glue.check_sampling(SamplingParams(max_new_tokens=1, top_k=5))[0]
    assert "rollout.engine=hf" in glue.check_sampling(SamplingParams(max_new_tokens=1, beam_search=True))[0]


def test_parse_completion():
    lp = SimpleNamespace
    ids, lps, finish = glue.parse_completion([4, 9], [{4: lp(logprob=-0.5), 7: lp(logprob=-2)}, {9: -0.1}], "stop", [9])
    assert (ids, lps, finish) == ([4, 9], [-0.5, -0.1], "stop")
    assert glue.parse_completion([4], [{4: -1.0}], "length", [9])[2] == "length"
    with pytest.raises(RuntimeError, match="other than an EOS"):
        glue.parse_completion([4], [{4: -1.0}], "stop", [9])
    with pytest.raises(RuntimeError, match="logprobs=0"):
        glue.parse_completion([4], None, "length", [9])
    with pytest.raises(RuntimeError, match="lack the sampled token"):
        glue.parse_completion([4], [{5: -1.0}], "length", [9])
    with pytest.raises(RuntimeError, match="abort"):
        glue.parse_completion([4], [{4: -1.0}], "abort", [9])


def test_render_matches_hf_engine(tiny_model_dir):
    from transformers import AutoTokenizer

    from rl.rollout.hf import HFEngine

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eng = HFEngine.__new__(HFEngine)
    eng.tokenizer = tok
    for p in (
        "plain text",
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    ):
        assert glue.render_prompt(tok, p) == HFEngine.render(eng, p)


def test_adapter_ids_and_eviction():
    assert glue.adapter_int_id(0) == 1 and glue.adapter_int_id(7) == 8
    with pytest.raises(ValueError):
        glue.adapter_int_id(-1)
    assert glue.versions_to_keep([1, 2, 3], 1) == [3]
    assert glue.versions_to_keep([0, 1, 1, 2], 2) == [1, 2]  # async: max_staleness + 1 versions stay loaded
    assert glue.versions_to_keep([4], 3) == [4]
    with pytest.raises(ValueError):
        glue.versions_to_keep([1], 0)


def test_max_lora_rank_is_the_smallest_vllm_size_that_fits():
    assert [glue.max_lora_rank({"r": r}) for r in (1, 8, 9, 16, 33, 512)] == [8, 8, 16, 16, 64, 512]
    with pytest.raises(ValueError, match="lora.r"):
        glue.max_lora_rank({"r": 1024})


def test_cpu_environment_keeps_what_the_user_set():
    env = glue.cpu_environment({}, 2, 3)
    assert env == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "3",
                   "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # fmt: skip
    kept = glue.cpu_environment({"VLLM_CPU_KVCACHE_SPACE": "8", "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, 1, None)
    assert kept == {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    with pytest.raises(ValueError, match="cpu_kv_cache_gib"):
        glue.cpu_environment({}, 0, None)


def test_cpu_head_size_check(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    problem = glue.cpu_head_size_problem(tmp_path)
    assert "head size is 16" in problem and "model.tiny.num_attention_heads" in problem
    with pytest.raises(ValueError, match="head size is 16"):
        glue.check_model_for_build(tmp_path, cpu=True)
    glue.check_model_for_build(tmp_path, cpu=False)  # GPU kernels take any head size
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 2}))
    assert glue.cpu_head_size_problem(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"head_dim": 64, "hidden_size": 8}}))
    assert glue.model_head_size(tmp_path) == 64


def test_wake_probe_check():
    glue.check_wake_probe([-1.0, -2.0], [-1.0, -2.00001], version=3)
    with pytest.raises(RuntimeError, match="no longer applies the adapter"):
        glue.check_wake_probe([-1.0, -2.0], [-1.0, -2.5], version=3)
    with pytest.raises(RuntimeError, match="version 3"):
        glue.check_wake_probe([-1.0, -2.0], [-1.0], version=3)


def test_adapter_dir_loads_back_into_peft(tensors, tiny_model_dir, tmp_path):
    """The versioned directory is a valid PEFT adapter: peft loads it and gets the same tensors."""
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    config = glue.adapter_config(LORA, tensors.keys(), str(tiny_model_dir))
    assert config["target_modules"] == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    d1 = glue.write_adapter_dir(tmp_path, 1, tensors, config)
    d2 = glue.write_adapter_dir(tmp_path, 2, tensors, config)
    assert d2.name == "v000002" and json.loads((d2 / "adapter_config.json").read_text())["r"] == 4
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(d2))
    got = get_peft_model_state_dict(loaded)
    assert set(got) == set(tensors) and all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert glue.prune_adapter_dirs(tmp_path, keep_versions=[2]) == [d1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v000002"]
    glue.remove_adapter_dir(tmp_path, 2)
    assert list(tmp_path.iterdir()) == []


def test_merged_weights_equal_peft_merge(peft_model, tensors, tiny_model_dir):
    import copy

    base = glue.read_base_weights(tiny_model_dir, glue.lora_pairs(tensors))
    merged = glue.merged_weights(base, tensors, LORA)
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert len(merged) == 7 * 2  # 7 linear modules x 2 layers
    for name, w in merged.items():
        torch.testing.assert_close(w, reference[name], rtol=1e-5, atol=1e-6)
    again = glue.merged_weights(base, tensors, LORA)  # from the originals: no accumulation
    assert all(torch.equal(again[k], merged[k]) for k in merged)
    assert glue.lora_scaling({"r": 4, "lora_alpha": 8, "use_rslora": True}) == 8 / math.sqrt(4)
    with pytest.raises(ValueError, match="unpaired"):
        glue.lora_pairs({k: v for k, v in tensors.items() if "lora_B" not in k or "layers.1.mlp" not in k})


def test_constraints():
    assert glue.constraint_kwargs(None) == {}
    assert glue.constraint_kwargs({"regex": "[a-z]+"}) == {"regex": "[a-z]+"}
    assert glue.constraint_kwargs({"json": '{"type": "object"}'}) == {"json": {"type": "object"}}
    assert glue.constraint_kwargs({"choice": ["yes", "no"]}) == {"choice": ["yes", "no"]}
    for bad, msg in [
        ({"regex": "("}, "does not compile"),
        ({"regex": "a", "choice": ["b"]}, "exactly one"),
        ({"json": "{"}, "not valid JSON"),
        ({"choice": []}, "non-empty list"),
        ({"grammer": "x"}, "unknown keys"),
    ]:
        with pytest.raises(ValueError, match=msg):
            glue.constraint_kwargs(bad)
