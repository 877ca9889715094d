"""eval.every_steps: a held-out reward during training that changes nothing the run trains on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rl.config import ConfigError, load_config
from tests.helpers import read_metrics

REPO = Path(__file__).resolve().parents[3]
BASE = [
    "learner.max_steps=3",
    "learner.batch_size=8",
    "rollout.max_new_tokens=6",
    "checkpoint.every_steps=2",
    "checkpoint.keep=1",
    "logging.progress_bar=false",
    "logging.tensorboard=true",
]
EVAL = ["eval.every_steps=2", "checkpoint.keep_best=eval/reward", "env.args.num_eval_prompts=6"]
TRAINING = ("reward", "loss", "grad_norm", "rollout/token_hash", "rollout/adapter_version",
            "rewards/letter_fraction/mean", "rollout/sync_bytes")  # fmt: skip


def _train(run_dir: Path, overrides: list[str]) -> dict[int, dict]:
    from rl.driver import train

    train(load_config(REPO / "configs/letters.yaml", overrides), run_dir)
    return read_metrics(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [pytest.param("sync", marks=pytest.mark.long), "async"])  # sync: make test-long
def test_eval_during_training_reports_held_out_reward_and_leaves_training_unchanged(tmp_path, ray_cluster, mode):
    extra = ["rollout.mode=async", "rollout.max_staleness=1"] if mode == "async" else []
    plain = _train(tmp_path / "plain", [*BASE, *extra])
    run_dir = tmp_path / "eval"
    evaluated = _train(run_dir, [*BASE, *extra, *EVAL])

    assert sorted(plain) == sorted(evaluated) == [1, 2, 3]
    for step in plain:  # the same training, step by step and bit for bit
        for key in TRAINING:
            assert plain[step].get(key) == evaluated[step].get(key), f"step {step} {key}"  # async: no sync some steps
    # eval/<metric> in the records of the eval steps (and only those), with the step
    for step in (2,):
        row = evaluated[step]
        assert 0.0 <= row["eval/reward"] <= 1.0
        assert row["eval/rewards/letter_fraction"] == pytest.approx(row["eval/reward"])  # one component, weight 1
        assert row["eval/num_samples"] == 6  # the 6 held-out prompts, greedy n=1
        assert row["eval/rewards/letter_fraction/n_unscored"] == 0
    assert not any(k.startswith("eval/") for s in (1, 3) for k in evaluated[s])
    history = [json.loads(x) for x in (run_dir / "eval_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2]
    assert history[0]["eval/reward"] == evaluated[2]["eval/reward"]
    events = b"".join(f.read_bytes() for f in (run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert b"eval/reward" in events
    # keep_best: the best evaluated checkpoint (the only one: step 2) survives rotation, although
    # checkpoint.keep=1 keeps only the newest (the final checkpoint-3, not evaluated)
    best = json.loads((run_dir / "best_checkpoint.json").read_text())
    assert (best["metric"], best["step"], best["value"]) == ("eval/reward", 2, evaluated[2]["eval/reward"])
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert sorted(p.name for p in (tmp_path / "plain" / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3"]


def test_eval_every_steps_needs_a_held_out_split_and_consistent_steps(tmp_path):
    from rl.preflight import preflight

    cfg = load_config(REPO / "configs/letters.yaml", ["eval.every_steps=2", "env.args.num_eval_prompts=0"])
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    assert "eval.every_steps (2): env 'letters' has no held-out split" in str(err.value)
    assert "set eval.every_steps=0" in str(err.value)

    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs/letters.yaml", ["checkpoint.keep_best=eval/reward"])
    assert "checkpoint.keep_best ('eval/reward') ranks checkpoints by periodic eval; set eval.every_steps" in str(
        err.value
    )
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs/letters.yaml", ["eval.every_steps=2", "checkpoint.every_steps=3",
                                                    "checkpoint.keep_best=eval/reward"])  # fmt: skip
    assert "checkpoint.every_steps (3) must be a multiple of eval.every_steps (2)" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs/letters.yaml", ["eval.every_steps=3", "logging.log_every=2"])
    assert "eval.every_steps (3) must be a multiple of logging.log_every (2)" in str(err.value)
