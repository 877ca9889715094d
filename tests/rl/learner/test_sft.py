"""The SFT warm start's trainer arguments follow ``cfg.sft`` (schedule and warm-up included)."""

from __future__ import annotations

import pytest

from rl.config import load_config
from rl.learner.sft import sft_training_args, supervised_split


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


def test_progress_lines_give_step_loss_and_time_left(capsys, caplog):
    """At each of TRL's logging steps the warm start logs its step, loss and a linear estimate of the time
    left; with the progress bar off (echo) the same line goes to stderr, else only to the log."""
    import logging

    from transformers import TrainerControl, TrainerState, TrainingArguments

    from rl.learner.sft import sft_progress_callback, sft_progress_line

    assert sft_progress_line(250, 1000, 1.23456, 120.0) == (
        "SFT step 250/1000: loss 1.235, 2.0 min elapsed, ~6.0 min left"
    )
    args = TrainingArguments(output_dir="unused", report_to=[])
    for echo in (True, False):
        callback = sft_progress_callback(echo=echo)
        state = TrainerState(max_steps=10)
        callback.on_train_begin(args, state, TrainerControl())
        state.global_step = 5
        with caplog.at_level(logging.INFO, logger="rl.learner.sft"):
            callback.on_log(args, state, TrainerControl(), logs={"loss": 2.5, "learning_rate": 1e-3})
            callback.on_log(args, state, TrainerControl(), logs={"train_runtime": 3.0})  # the summary: no line
        logged = [r.getMessage() for r in caplog.records]
        caplog.clear()
        assert len(logged) == 1 and logged[0].startswith("SFT step 5/10: loss 2.500, 0.0 min elapsed"), logged
        err = capsys.readouterr().err
        assert (logged[0] in err) is echo, err


def test_supervised_split_moves_the_prompt_after_its_marker_into_the_loss():
    import pytest

    assert supervised_split("<u>bought: A, B. next?<a>", "C</s>", None) == ("<u>bought: A, B. next?<a>", "C</s>")
    assert supervised_split("<u>bought: A, B. next?<a>", "C</s>", "bought: ") == ("<u>bought: ", "A, B. next?<a>C</s>")
    p, c = supervised_split("x: 1 x: 2", "3", "x: ")  # the first occurrence
    assert (p, c) == ("x: ", "1 x: 23")
    with pytest.raises(ValueError, match="prompt_loss_from 'sold: ' is not in the rendered prompt"):
        supervised_split("<u>bought: A", "C", "sold: ")


def test_hidden_dropout_acts_only_while_training_and_leaves_no_trace(tiny_model_dir):
    """sft.hidden_dropout: inside the context two forwards in training mode differ (embedding and residual
    dropout on a model class that has none), eval mode is untouched, and on exit the hooks are gone; a
    PEFT-wrapped model gets the same hooks on its base model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rl.learner.sft import hidden_dropout

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])

    def twice(m, train: bool):
        m.train(train)
        with torch.no_grad():
            return m(input_ids=ids).logits, m(input_ids=ids).logits

    clean = twice(model, False)[0]
    a, b = twice(model, True)
    assert torch.equal(a, b) and torch.equal(a, clean)  # the tiny Qwen2 has no dropout of its own
    with hidden_dropout(model, 0.3):
        a, b = twice(model, True)
        assert not torch.equal(a, b)
        assert torch.equal(twice(model, False)[0], clean)
    assert torch.equal(twice(model, True)[0], clean)  # hooks removed
    with hidden_dropout(model, 0.0):
        assert torch.equal(twice(model, True)[0], clean)

    peft = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
    with hidden_dropout(peft, 0.3):
        a, b = twice(peft, True)
        assert not torch.equal(a, b)
    assert torch.equal(twice(peft, True)[0], clean)  # LoRA's B starts at 0, so the wrapped model is the same


def test_hidden_dropout_names_the_field_for_a_model_without_attention_and_mlp_modules():
    import pytest
    from transformers import GPT2Config, GPT2LMHeadModel

    from rl.config import ConfigError
    from rl.learner.sft import hidden_dropout

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(
        ConfigError, match=r"sft.hidden_dropout \(0.2\): GPT2LMHeadModel's decoder .*set sft.hidden_dropout=0"
    ):
        with hidden_dropout(gpt2, 0.2):
            pass


def test_teacher_forced_loss_is_the_nll_plus_the_dense_kl_over_the_labelled_targeted_positions():
    """TeacherForcedLoss computes the KL at the N positions that have a label and a teacher target only; it must
    equal the dense reference: the KL at every position, masked, averaged over those positions."""
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    from rl.algos.distill import forward_kl_per_token
    from rl.learner.sft import TeacherForcedLoss

    B, T, V = 3, 7, 11
    g = torch.Generator().manual_seed(0)
    teacher = torch.full((B, T, V), float("-inf"))
    teacher[0, 1, [2, 5]] = torch.tensor([0.3, 0.7]).log()  # labelled below
    teacher[1, 3, [1, 4, 9]] = torch.tensor([0.2, 0.5, 0.3]).log()  # labelled below
    teacher[2, 4, 6] = 0.0  # a target at a prompt position (label -100): not in the loss
    teacher[2, 6, 3] = 0.0  # the last position: no next token, dropped by the shift

    class Teacher:
        def forced_log_probs(self, input_ids, vocab_size):
            assert input_ids.shape == (B, T) and vocab_size == V
            return teacher

    labels = torch.full((B, T), -100)
    labels[0, 2], labels[1, 4], labels[1, 5], labels[2, 1] = 5, 4, 7, 2  # loss positions (shifted: t - 1)
    logits = torch.randn(B, T, V, generator=g, requires_grad=True)
    outputs = type("Out", (), {"logits": logits})()
    loss_fn = TeacherForcedLoss(Teacher(), coef=0.5)
    loss_fn.input_ids = torch.zeros(B, T, dtype=torch.long)
    loss = loss_fn(outputs, labels)

    kl, has = forward_kl_per_token(logits[:, :-1], teacher[:, :-1])  # the dense reference: [B, T-1]
    where = has & labels[:, 1:].ne(-100)
    assert int(where.sum()) == 2 and loss_fn.last["kd_positions"] == 2  # (0, 1) and (1, 3) only
    kd = (kl * where).sum() / where.sum()
    nll = ForCausalLMLoss(logits, labels, V)
    assert float(loss) == pytest.approx(float(nll + 0.5 * kd), rel=1e-6)
    assert loss_fn.last["kd"] == pytest.approx(float(kd), rel=1e-6) and float(kd) > 0
    (grad,) = torch.autograd.grad(loss, logits)
    (ref_grad,) = torch.autograd.grad(nll + 0.5 * kd, logits)
    assert torch.allclose(grad, ref_grad, atol=1e-7)
