"""The ``relay`` entry point: dotted overrides are accepted anywhere on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rl.cli import main

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
