"""The ``relay`` entry point: dotted overrides anywhere on the command line; `relay config [SECTION]` prints
every field with its type, default and description."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from rl.cli import main
from rl.config import RelayConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "configs/letters.yaml", "learner.max_steps=3", "seed=7", "--check"],  # before the options
        ["train", "configs/letters.yaml", "--run-dir", "RUN", "learner.max_steps=3", "--check", "seed=7"],  # after
        ["train", "--check", "learner.max_steps=3", "--run-dir", "RUN", "seed=7"],  # no config file
    ],
    ids=["before", "after-and-between", "no-config"],
)
def test_train_overrides_anywhere(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["learner"]["max_steps"] == 3 and cfg["seed"] == 7
    assert not (tmp_path / "run").exists()  # --check starts nothing


def test_resume_and_submit_take_overrides_after_options(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    # resume: the override is parsed (no "unrecognized arguments"); the directory is not a run.
    assert main(["resume", str(tmp_path), "--force", "learner.max_steps=5"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err and "not a run directory" in err
    # submit validates the config with its overrides locally before contacting the cluster.
    argv = ["submit", "configs/letters.yaml", "--address", "http://127.0.0.1:9", "--no-wait", "learner.max_step=3"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err and "did you mean 'learner.max_steps'" in err


def test_reward_only_importable_in_its_runtime_env_is_left_to_its_actors(tmp_path, capsys, caplog, monkeypatch):
    """Preflight cannot import a module that exists only in the reward's py_modules: with a runtime_env that
    brings code, --check passes and says the actors will check it; without one it stays a config error."""
    monkeypatch.chdir(REPO)
    pkg = tmp_path / "relay_rtenv_check"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def score(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    reward = "{name: rt, source: 'relay_rtenv_check:score'"
    with_env = f"rewards.functions=[{reward}, runtime_env: {{py_modules: ['{pkg}']}}}}]"
    assert main(["train", "configs/letters.yaml", "--check", with_env]) == 0
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "rewards.functions.0 ('relay_rtenv_check:score'): not importable here" in logged
    assert "checked by its actors inside their runtime_env ['py_modules']" in logged
    capsys.readouterr()
    assert main(["train", "configs/letters.yaml", "--check", f"rewards.functions=[{reward}}}]"]) == 2
    assert "cannot import module 'relay_rtenv_check'" in capsys.readouterr().err


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """dotted name -> description of every non-section field (list-of-section items as NAME.<i>.FIELD)."""
    out = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_leaf_fields(ann, f"{prefix}{name}."))
            continue
        out[f"{prefix}{name}"] = field.description
        item = getattr(ann, "__args__", (None,))[0]
        if isinstance(item, type) and issubclass(item, BaseModel):
            out.update(_leaf_fields(item, f"{prefix}{name}.<i>."))
    return out


def _entries(text: str) -> dict[str, tuple[str, str]]:
    """dotted name -> (the 'name: type = default' line, the description joined from its indented lines)."""
    out: dict[str, tuple[str, str]] = {}
    head = None
    for line in text.splitlines():
        if line.startswith("    "):
            name, desc = out[head]
            out[head] = (name, f"{desc} {line.strip()}".strip())
        else:
            head = line.split(":", 1)[0]
            out[head] = (line, "")
    return out


def test_config_lists_every_field_with_type_default_and_description(capsys):
    assert main(["config"]) == 0
    entries = _entries(capsys.readouterr().out)
    fields = _leaf_fields(RelayConfig)
    assert set(entries) == set(fields)
    for name, description in fields.items():
        assert description, f"{name} has no description in rl/config.py"
        assert entries[name][1] == " ".join(description.split()), name
    assert entries["rollout.num_workers"][0] == "rollout.num_workers: int = 1 (>= 1)"
    assert entries["rollout.engine"][0] == "rollout.engine: 'hf' | 'vllm' = 'hf'"
    assert entries["cluster.address"][0] == "cluster.address: str | None = None"
    assert entries["rewards.functions.<i>.name"][0] == "rewards.functions.<i>.name: str = required"
    assert entries["algorithm.ppo.kl_coef"][0] == "algorithm.ppo.kl_coef: float = 0.001 (>= 0)"


def test_config_section_lists_only_that_section(capsys):
    assert main(["config", "rollout"]) == 0
    rollout = _entries(capsys.readouterr().out)
    assert set(rollout) == {n for n in _leaf_fields(RelayConfig) if n.startswith("rollout.")}
    assert main(["config", "algorithm.ppo"]) == 0
    assert set(_entries(capsys.readouterr().out)) == {
        n for n in _leaf_fields(RelayConfig) if n.startswith("algorithm.ppo.")
    }


def test_config_unknown_section_exits_2_naming_the_known_ones(capsys):
    assert main(["config", "rollot"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "relay config 'rollot': no such section; did you mean 'rollout'?" in captured.err
    assert (
        "known sections: model, model.tiny, lora, algorithm, algorithm.ppo, learner, rollout, rewards" in captured.err
    )
    assert "Traceback" not in captured.err


def test_an_eval_with_overrides_goes_beside_the_runs_own_eval(tmp_path):
    from rl.evaluate import eval_out_dir

    assert eval_out_dir(tmp_path, [], None) == tmp_path
    hidden = eval_out_dir(tmp_path, ["env.args.eval_metadata=a.jsonl"], None)
    assert hidden.parent == tmp_path and hidden.name.startswith("eval-")
    assert hidden == eval_out_dir(tmp_path, ["env.args.eval_metadata=a.jsonl"], None)
    assert hidden != eval_out_dir(tmp_path, ["env.args.eval_metadata=b.jsonl"], None)
    assert eval_out_dir(tmp_path, [], 24) not in (tmp_path, hidden)
