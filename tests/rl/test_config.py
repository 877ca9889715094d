"""Config loading, dotted overrides, and validation messages (each names the field, value and fix)."""

from __future__ import annotations

import pytest

from rl.config import ConfigError, apply_overrides, load_config, validate

BAD_CONFIGS = [
    # (config dict, substrings every one of which must appear in the message)
    ({"learner": {"batch_size": 10}, "algorithm": {"num_generations": 4}},
     ["learner.batch_size (10)", "multiple of algorithm.num_generations (4)", "set learner.batch_size to 8 or 12"]),
    ({"learner": {"max_step": 3}}, ["learner.max_step: unknown key", "did you mean 'learner.max_steps'"]),
    ({"rollout": {"num_workers": 0}}, ["rollout.num_workers (0)", "greater than or equal to 1"]),
    ({"rollout": {"engine": "sglang"}}, ["rollout.engine ('sglang')", "'hf' or 'vllm'", "pick one"]),
    ({"learner": {"learning_rate": "fast"}}, ["learner.learning_rate ('fast')", "valid number"]),
    ({"algorithm": {"num_generations": 1}}, ["algorithm.num_generations (1)", "greater than or equal to 2"]),
    ({"algorithm": {"loss_type": "ppo"}}, ["algorithm.loss_type ('ppo')", "'grpo'", "'dapo'"]),
    ({"rollout": {"top_p": 1.5}}, ["rollout.top_p (1.5)", "less than or equal to 1"]),
    ({"rollout": {"temperature": 0}}, ["rollout.temperature (0)", "greater than 0"]),
    ({"model": {"name": "./no/such/model"}}, ["model.name ('./no/such/model')", "no such directory"]),
    ({"modle": {"name": "tiny"}}, ["modle: unknown key", "did you mean 'model'"]),
    ({"rewards": {"functions": [{"name": "a"}, {"name": "a"}]}}, ["rewards.functions: name 'a' is used twice"]),
    ({"rewards": {"functions": [{"weight": 2.0}]}}, ["rewards.functions.0.name", "Field required", "add it"]),
    ({"rewards": {"on_failure": "ignore"}}, ["rewards.on_failure ('ignore')", "'none' or 'fail_fast'"]),
    ({"model": {"tiny": {"hidden_size": 30, "num_attention_heads": 4}}},
     ["model.tiny.hidden_size (30) must be divisible by model.tiny.num_attention_heads (4)"]),
    ({"checkpoint": {"every_steps": 100}, "learner": {"max_steps": 10}},
     ["checkpoint.every_steps (100) exceeds learner.max_steps (10)", "at most 10"]),
    ({"rollout": {"engine": "vllm"}}, ["rollout.engine ('vllm'): vLLM is not installed", "rollout.engine=hf"]),
    ({"rollout": {"engine": "vllm", "beam_search": True}},
     ["rollout.beam_search (True) needs rollout.engine=hf, not 'vllm'", "set rollout.engine=hf or rollout.beam_search=false"]),
    ({"rollout": {"beam_search": True, "temperature": 0.7}},
     ["rollout.beam_search (True) ranks beams", "rollout.temperature (0.7)", "set rollout.temperature=1.0"]),
    ({"rollout": {"beam_search": True, "top_k": 50}}, ["rollout.top_k (50)", "rollout.top_k=0, or rollout.beam_search=false"]),
    ({"rollout": {"mode": "off_policy"}}, ["rollout.mode ('off_policy')", "'sync' or 'async'", "pick one"]),
    ({"rollout": {"mode": "async", "max_staleness": 0}}, ["rollout.max_staleness (0)", "greater than or equal to 1"]),
    ({"rollout": {"mode": "async", "is_correction": "clip"}}, ["rollout.is_correction ('clip')", "'token_truncate'"]),
    ({"rollout": {"mode": "async"}, "algorithm": {"name": "ppo"}},
     ["rollout.mode ('async')", "not algorithm.name='ppo'", "set rollout.mode=sync"]),
    ({"rollout": {"mode": "async"}, "algorithm": {"num_iterations": 2}},
     ["algorithm.num_iterations (2) must be 1 with rollout.mode=async", "set algorithm.num_iterations=1"]),
    ({"rollout": {"mode": "async", "max_staleness": 5}, "learner": {"max_steps": 5}},
     ["rollout.max_staleness (5) must be below learner.max_steps (5)", "at most 4"]),
    ({"rollout": {"mode": "async", "colocate": True}}, ["rollout.colocate", "set rollout.mode=sync or rollout.colocate=false"]),
    ({"rollout": {"colocate": True}, "algorithm": {"name": "ppo"}}, ["rollout.colocate", "not algorithm.name='ppo'"]),
    ({"algorithm": {"name": "ppo", "beta": 0.04}},
     ["algorithm.beta (0.04) does not apply to algorithm.name=ppo; use algorithm.ppo.kl_coef or remove it"]),
    ({"algorithm": {"name": "ppo", "kl_coef": 0.05}},
     ["algorithm.kl_coef (0.05) does not apply to algorithm.name=ppo; use algorithm.ppo.kl_coef"]),
    ({"algorithm": {"name": "grpo", "kl_coef": 0.05}},
     ["algorithm.kl_coef (0.05) does not apply to algorithm.name=grpo", "use algorithm.beta"]),
    ({"algorithm": {"name": "rloo", "scale_rewards": "batch"}},
     ["algorithm.scale_rewards ('batch') does not apply to algorithm.name=rloo", "set algorithm.name=grpo"]),
    ({"algorithm": {"name": "grpo", "ppo": {"vf_coef": 0.5}}},
     ["algorithm.ppo.vf_coef (0.5) does not apply to algorithm.name=grpo; set algorithm.name=ppo or remove it"]),
    ({"algorithm": {"name": "ppo", "distill_coef": 1.0}},
     ["algorithm.distill_coef (1.0) does not apply to algorithm.name=ppo", "GRPO-family learner"]),
    ({"algorithm": {"distill_lambda": 0.5}},
     ["algorithm.distill_lambda (0.5) does not apply to algorithm.name=grpo", "set algorithm.distill_coef"]),
    ({"algorithm": {"distill_coef": -1}}, ["algorithm.distill_coef (-1)", "greater than or equal to 0"]),
    ({"algorithm": {"distill_divergence": "forward"}},
     ["algorithm.distill_divergence ('forward') does not apply to algorithm.name=grpo", "set algorithm.distill_coef"]),
    ({"algorithm": {"distill_coef": 1.0, "distill_divergence": "forward", "distill_lambda": 2.0}},
     ["algorithm.distill_lambda (2.0)", "distils the teacher itself", "algorithm.distill_divergence=reverse"]),
    ({"algorithm": {"distill_coef": 1.0, "distill_divergence": "js"}}, ["algorithm.distill_divergence", "'reverse'"]),
    ({"lora": {"train_env_tokens": True}, "rollout": {"engine": "vllm"}},
     ["lora.train_env_tokens (True) needs rollout.engine=hf, not 'vllm'", "lora.train_env_tokens=false"]),
    ({"lora": {"train_env_tokens": True}, "algorithm": {"name": "ppo"}},
     ["lora.train_env_tokens is implemented for the GRPO-family learners", "lora.train_env_tokens=false"]),
]  # fmt: skip


@pytest.mark.parametrize("data,expected", BAD_CONFIGS, ids=[str(i) for i in range(len(BAD_CONFIGS))])
def test_bad_config_messages(data, expected, monkeypatch):
    if data.get("rollout", {}).get("engine") == "vllm":  # a machine without either vLLM build
        from rl.rollout import vllm_glue

        monkeypatch.setattr(vllm_glue, "installed_build", lambda: None)
    with pytest.raises(ConfigError) as info:
        validate(data)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        validate({"learner": {"max_step": 3, "learning_rate": "x"}, "rollout": {"num_workers": 0}})
    assert len(info.value.problems) == 3


def test_fields_the_algorithm_does_not_read_are_all_reported():
    with pytest.raises(ConfigError) as info:
        validate({"algorithm": {"name": "ppo", "beta": 0.1, "loss_type": "grpo", "scale_rewards": "none",
                                "num_iterations": 2, "kl_coef": 0.1}})  # fmt: skip
    assert [p.split(" (")[0] for p in info.value.problems] == [
        "algorithm.beta", "algorithm.kl_coef", "algorithm.loss_type", "algorithm.scale_rewards", "algorithm.num_iterations"
    ]  # fmt: skip
    # What a field reads is what it applies to: each is accepted where it is read, and a value equal to the
    # default (as the shipped configs spell out, or a run's config.yaml) is accepted everywhere.
    assert validate({"algorithm": {"name": "reinforce_pp", "kl_coef": 0.1}}).algorithm.kl_coef == 0.1
    assert validate({"algorithm": {"name": "ppo", "ppo": {"kl_coef": 0.1}, "epsilon": 0.3}}).algorithm.epsilon == 0.3
    assert validate({"algorithm": {"name": "ppo", "beta": 0.0, "loss_type": "dapo"}}).algorithm.name == "ppo"
    assert validate(validate({"algorithm": {"name": "ppo"}}).to_dict()).algorithm.name == "ppo"


def test_overrides_parse_yaml_values_and_list_indices():
    data = {"rewards": {"functions": [{"name": "a", "weight": 1.0}]}}
    apply_overrides(data, ["learner.max_steps=7", "rollout.top_p=0.5", "rewards.functions.0.weight=2",
                           "lora.target_modules=[q_proj, v_proj]", "cluster.address=auto"])  # fmt: skip
    cfg = validate(data)
    assert cfg.learner.max_steps == 7 and cfg.rollout.top_p == 0.5
    assert cfg.rewards.functions[0].weight == 2.0
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.cluster.address == "auto"


@pytest.mark.parametrize(
    "override,expected",
    [
        ("learner.max_steps", "expected dotted.key=value"),
        ("rewards.functions.3.weight=1", "not an index of a 0-item list"),
        ("seed.x=1", "seed is a value, not a section"),
    ],
)
def test_bad_overrides(override, expected):
    with pytest.raises(ConfigError, match=expected):
        apply_overrides({"seed": 0, "rewards": {"functions": []}}, [override])


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learner:\n  max_steps: 3\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_async_rollout_fields_load_with_their_defaults():
    cfg = validate({"rollout": {"mode": "async", "max_staleness": 2}})
    assert (cfg.rollout.mode, cfg.rollout.max_staleness) == ("async", 2)
    assert (cfg.rollout.is_correction, cfg.rollout.is_cap) == ("token_truncate", 3.0)
    assert validate({}).rollout.mode == "sync"
