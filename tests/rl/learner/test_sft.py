"""The SFT warm start's trainer arguments follow ``cfg.sft`` (schedule and warm-up included)."""

from __future__ import annotations

from rl.config import load_config
from rl.learner.sft import sft_training_args


def test_schedule_and_warmup_reach_the_trainer(tmp_path):
    cfg = load_config(
        None,
        [
            "sft.steps=200",
            "sft.batch_size=8",
            "sft.learning_rate=0.003",
            "sft.lr_scheduler=cosine",
            "sft.warmup_ratio=0.05",
        ],
    )
    args = sft_training_args(cfg, tmp_path)
    assert (args.max_steps, args.per_device_train_batch_size, args.learning_rate) == (200, 8, 0.003)
    assert args.lr_scheduler_type.value == "cosine"
    assert args.warmup_steps == 10
    assert args.completion_only_loss is True


def test_default_schedule_is_constant_without_warmup(tmp_path):
    args = sft_training_args(load_config(None, ["sft.steps=50"]), tmp_path)
    assert args.lr_scheduler_type.value == "constant"
    assert args.warmup_steps == 0


def test_bad_schedule_names_the_field():
    import pytest

    from rl.config import ConfigError

    with pytest.raises(ConfigError, match="sft.lr_scheduler"):
        load_config(None, ["sft.lr_scheduler=exponential"])
    with pytest.raises(ConfigError, match="sft.warmup_ratio"):
        load_config(None, ["sft.warmup_ratio=1.5"])
