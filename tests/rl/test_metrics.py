"""Run identity (RUN_DIR/run.json), the W&B init arguments built from it, and metrics.jsonl rows."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from rl.config import load_config
from rl.metrics import RUN_FILE, MetricsFile, run_identity, wandb_init_kwargs


def test_run_id_is_made_once_and_reused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run id"):
        run_identity(tmp_path)
    first = run_identity(tmp_path, create=True)
    assert first == run_identity(tmp_path, create=True) == run_identity(tmp_path)  # a resume reads it back
    assert json.loads((tmp_path / RUN_FILE).read_text())["run_id"] == first
    (tmp_path / "other").mkdir()
    assert run_identity(tmp_path / "other", create=True) != first  # another run, another id


def test_wandb_resumes_the_same_run(tmp_path):
    """Built without wandb installed: the W&B run id is the run id, resume='allow', the configured project."""
    cfg = load_config(None, ["logging.wandb=true", "logging.wandb_project=letters-exp"])
    run_dir = tmp_path / "relay-run"
    run_dir.mkdir()
    run_id = run_identity(run_dir, create=True)
    kwargs = wandb_init_kwargs(cfg, run_dir)
    assert kwargs["id"] == run_id and kwargs["resume"] == "allow" and kwargs["project"] == "letters-exp"
    assert kwargs["name"] == "relay-run" and kwargs["dir"] == str(run_dir) and kwargs["config"]["seed"] == cfg.seed
    assert wandb_init_kwargs(cfg, run_dir)["id"] == run_id  # the same after a resume


def test_every_metrics_row_carries_the_global_step(tmp_path):
    cb = MetricsFile(tmp_path / "metrics.jsonl")
    for step, logs in [(1, {"reward": 0.5}), (2, {"reward": 0.7, "step": 99})]:  # a stray 'step' cannot win
        cb.on_log(None, SimpleNamespace(global_step=step), None, logs=dict(logs))
    cb.on_log(None, SimpleNamespace(global_step=2), None, logs={"train_runtime": 3.0})  # not a step record
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
