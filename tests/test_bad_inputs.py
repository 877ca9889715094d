"""The bad-input corpus: each case gives one clear message naming the field/file/row and the fix,
exits with code 2 without a traceback, and leaves no run directory behind.

Runs the real CLI entry point (``rl.cli.main``) in-process: every case is caught before Ray starts.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rl.cli import main

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _no_template_model(tmp_path: Path, tiny_model_dir: Path) -> str:
    target = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, target)
    (target / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = target / "tokenizer_config.json"
    data = json.loads(cfg_path.read_text())
    data.pop("chat_template", None)
    cfg_path.write_text(json.dumps(data))
    return str(target)


def _p5_with_bad_item_line(tmp_path: Path) -> list[str]:
    """genrec on P5 files whose item-text file has an id and no text on line 2 (reached through the env's
    reward list, which builds the semantic index from the data)."""
    (tmp_path / "user_sequence.txt").write_text("u1 i1 i2 i3\nu2 i2 i3 i1\n")
    (tmp_path / "items.txt").write_text("i1 a red pen\ni2\ni3 a blue cup\n")
    return [
        "configs/genrec.yaml",
        "env.args.data.format=p5",
        f"env.args.data.path={tmp_path / 'user_sequence.txt'}",
        f"env.args.data.item_path={tmp_path / 'items.txt'}",
    ]


# (id, argv builder (tmp_path, tiny_model_dir) -> list[str], substrings of the message)
CASES = [
    ("yaml-syntax", lambda t, m: ["train", _write(t, "a.yaml", "learner:\n  max_steps: [3\n")],
     ["not valid YAML at line", "fix the syntax"]),
    ("yaml-not-mapping", lambda t, m: ["train", _write(t, "a.yaml", "- 1\n")], ["top level must be a mapping"]),
    ("config-missing", lambda t, m: ["train", str(t / "nope.yaml")], ["does not exist"]),
    ("unknown-section", lambda t, m: ["train", "lerner.max_steps=3"], ["lerner: unknown key", "did you mean 'learner'"]),
    ("unknown-field", lambda t, m: ["train", "learner.max_step=3"], ["did you mean 'learner.max_steps'"]),
    ("wrong-type", lambda t, m: ["train", "learner.learning_rate=fast"], ["learner.learning_rate ('fast')", "valid number"]),
    ("out-of-range", lambda t, m: ["train", "rollout.num_workers=0"], ["rollout.num_workers (0)", ">= 1" if False else "greater than or equal to 1"]),
    ("bad-choice", lambda t, m: ["train", "rollout.engine=sglang"], ["rollout.engine ('sglang')", "pick one"]),
    ("batch-vs-group", lambda t, m: ["train", "learner.batch_size=10"], ["learner.batch_size (10)", "set learner.batch_size to 8 or 12"]),
    ("ckpt-beyond-steps", lambda t, m: ["train", "learner.max_steps=5", "checkpoint.every_steps=9"], ["checkpoint.every_steps (9)", "at most 5"]),
    ("override-no-equals", lambda t, m: ["train", "configs/letters.yaml", "learner.max_steps"], ["expected dotted.key=value"]),
    ("override-bad-yaml", lambda t, m: ["train", "learner.max_steps=[1"], ["not valid YAML"]),
    ("model-dir-missing", lambda t, m: ["train", "model.name=./no/such/model"], ["model.name ('./no/such/model')", "no such directory"]),
    ("no-chat-template", lambda t, m: ["train", f"model.name={_no_template_model(t, m)}"], ["has no chat template", "chat_template"]),
    ("env-unknown", lambda t, m: ["train", "env.name=leters"], ["env.name ('leters')", "did you mean 'letters'"]),
    ("env-arg-unknown", lambda t, m: ["train", "env.args.num_prompt=3"], ["env.args.num_prompt", "known: letters, num_prompts"]),
    ("env-arg-type", lambda t, m: ["train", "env.args.num_prompts=many"], ["env.args.num_prompts ('many')"]),
    ("env-empty-dataset", lambda t, m: ["train", "env.args.num_prompts=0"], ["env.args.num_prompts (0)"]),
    ("reward-unknown-name", lambda t, m: ["train", "rewards.functions=[{name: leter_fraction}]"],
     ["rewards.functions.0", "did you mean 'letter_fraction'"]),
    ("reward-no-module", lambda t, m: ["train", "rewards.functions=[{name: r, source: 'no_such_pkg.mod:fn'}]"],
     ["rewards.functions.0", "cannot import module 'no_such_pkg.mod'"]),
    ("reward-no-attr", lambda t, m: ["train", "rewards.functions=[{name: r, source: 'rewards.builtin:nope'}]"],
     ["rewards.functions.0", "has no attribute 'nope'"]),
    ("reward-no-file", lambda t, m: ["train", f"rewards.functions=[{{name: r, source: '{t}/missing.py:fn'}}]"],
     ["rewards.functions.0", "does not exist"]),
    ("reward-not-callable", lambda t, m: ["train", "rewards.functions=[{name: r, source: 'rewards.contract:TRAINER_ONLY_KWARGS'}]"],
     ["rewards.functions.0", "not a callable"]),
    ("reward-bad-kwargs", lambda t, m: ["train", f"rewards.functions=[{{name: r, source: '{_write(t, 'r.py', 'def fn(prompts, completions):' + chr(10) + '    return [0.0] * len(prompts)' + chr(10))}:fn', kwargs: {{scale: 2}}}}]"],
     ["rewards.functions.0", "scale"]),
    ("reward-duplicate", lambda t, m: ["train", "rewards.functions=[{name: letter_fraction}, {name: letter_fraction}]"],
     ["name 'letter_fraction' is used twice"]),
    ("reward-timeout", lambda t, m: ["train", "rewards.functions=[{name: letter_fraction, timeout_s: -1}]"],
     ["rewards.functions.0.timeout_s (-1)", "greater than 0"]),
    ("reward-runtime-env-key", lambda t, m: ["train", "rewards.functions=[{name: letter_fraction, runtime_env: {pipp: [x]}}]"],
     ["rewards.functions.0.runtime_env.pipp: unknown key", "did you mean 'rewards.functions.0.runtime_env.pip'"]),
    ("reward-runtime-env-path", lambda t, m: ["train", f"rewards.functions=[{{name: letter_fraction, runtime_env: {{py_modules: ['{t}/nope']}}}}]"],
     ["rewards.functions.0.runtime_env.py_modules.0", "no such file or directory"]),
    ("sft-without-data", lambda t, m: ["train", "sft.steps=5"], ["sft.steps (5)", "has no SFT data"]),
    ("distill-without-teacher", lambda t, m: ["train", "algorithm.distill_coef=1"],
     ["algorithm.distill_coef (1.0): env 'letters' has no token teacher", "set algorithm.distill_coef=0"]),
    ("env-tokens-without-tokens", lambda t, m: ["train", "lora.train_env_tokens=true"],
     ["lora.train_env_tokens (True): env 'letters' adds no tokens", "set lora.train_env_tokens=false"]),
    ("reprompt-prompts-missing", lambda t, m: ["train", "configs/quickstart.yaml", f"env.args.train_prompts={t}/none.jsonl"],
     ["none.jsonl"]),
    ("reprompt-prompts-txt", lambda t, m: ["train", "configs/quickstart.yaml", f"env.args.train_prompts={_write(t, 'p.txt', 'a cat' + chr(10))}"],
     ["env.args.train_prompts", "GenEval-style .jsonl"]),
    ("reprompt-bad-row", lambda t, m: ["train", "configs/quickstart.yaml", f"env.args.train_prompts={_write(t, 'g.jsonl', json.dumps({'tag': 'single_object', 'include': [{'class': 'cat', 'count': 1}], 'exclude': [], 'prompt': 'a cat'}) + chr(10) + '{oops' + chr(10))}"],
     ["g.jsonl:2"]),
    ("rec-data-bad-line", lambda t, m: ["train", *_p5_with_bad_item_line(t)],
     ["items.txt:2: item 'i2' has no text", "set env.args.data.on_error=skip"]),
    ("rec-data-missing", lambda t, m: ["train", "configs/genrec.yaml", f"env.args.data.path={t}/none.json"],
     ["env.args.data.path", "no such file"]),
    ("vllm-missing", lambda t, m: ["train", "rollout.engine=vllm"], ["vLLM is not installed", "rollout.engine=hf"]),
    ("vllm-cpu-head-size", lambda t, m: ["train", "rollout.engine=vllm"],
     ["head size is 16, but vLLM's CPU build supports", "model.tiny.num_attention_heads"]),  # fmt: skip
]  # fmt: skip


@pytest.mark.parametrize("case_id,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, argv, expected, tmp_path, tiny_model_dir, capsys, monkeypatch):
    if case_id == "vllm-missing":  # a machine without either vLLM build (the package metadata is what is read)
        from rl.rollout import vllm_glue

        monkeypatch.setattr(vllm_glue, "installed_build", lambda: None)
    if case_id == "vllm-cpu-head-size":  # vLLM's CPU build (what `make install` installs here)
        from rl.rollout import vllm_glue

        monkeypatch.setattr(vllm_glue, "installed_build", lambda: ("cpu", "0.32.0"))
    monkeypatch.chdir(REPO)
    run_dir = tmp_path / "run"
    args = argv(tmp_path, tiny_model_dir)
    if not any(a.endswith(".yaml") for a in args):  # the field cases are written against the letters recipe
        args.insert(1, "configs/letters.yaml")
    code = main([*args, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for part in expected:
        assert part in err, f"{part!r} not in:\n{err}"
    assert not run_dir.exists(), "a rejected run must leave no run directory"


def test_unwritable_run_dir(tmp_path, capsys, monkeypatch):
    if os.geteuid() == 0:
        target = Path("/proc/relay-cannot-write-here")  # not writable even for root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "run"
    monkeypatch.chdir(REPO)
    code = main(["train", "configs/letters.yaml", "--run-dir", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "is not writable" in err and "choose a writable path" in err


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 1\n")
    monkeypatch.chdir(REPO)
    code = main(["train", "configs/letters.yaml", "--run-dir", str(run_dir)])
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == "seed: 1\n"


def test_corpus_is_large_enough():
    assert len(CASES) + 2 >= 25
