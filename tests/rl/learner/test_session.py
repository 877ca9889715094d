"""The learner table (rl.learner.session): which learner a config selects, that each entry is a Learner,
and that a Session cannot be changed by the learner it is handed to."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rl.config import load_config
from rl.learner.session import LEARNERS, Learner, Session, build_learner, learner_key

LETTERS = Path(__file__).resolve().parents[3] / "configs" / "letters.yaml"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ([], "grpo"),
        (["algorithm.name=rloo"], "grpo"),
        (["learner.num_workers=2", "learner.batch_size=16"], "grpo-data-parallel"),
        (["algorithm.name=ppo"], "ppo"),
    ],
)
def test_one_table_picks_the_learner(overrides, key):
    cfg = load_config(LETTERS, overrides)
    assert learner_key(cfg) == key
    learner = build_learner(cfg)
    assert isinstance(learner, Learner)
    assert f"{type(learner).__module__}:{type(learner).__name__}" == LEARNERS[key]


def test_every_table_entry_is_a_learner():
    import importlib

    for key, target in LEARNERS.items():
        module, _, name = target.partition(":")
        assert isinstance(getattr(importlib.import_module(module), name)(), Learner), key


def test_a_session_is_frozen():
    session = Session(plan=None, run_dir=Path("run"), model_path="m", rollout_pool=None, reward_pools=(), lora={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.model_path = "other"  # type: ignore[misc]


def test_a_session_needs_the_policys_lora_kwargs_by_name():
    # No fallback to cfg.lora's: it would drop what the run added (lora.train_env_tokens' embedding rows), and a
    # learner's adapter would no longer match the rollout actors'.
    with pytest.raises(TypeError, match="lora"):
        Session(None, Path("run"), "m", None, ())
    with pytest.raises(TypeError):
        Session(None, Path("run"), "m", None, (), None, (), 0.0, {}, {"r": 8})  # type: ignore[misc]
