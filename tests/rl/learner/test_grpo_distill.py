"""RelayGRPOTrainer's on-policy distillation term (``_distill_loss``) on a real tiny model with a LoRA adapter
and a rollout constraint: both divergences read the teacher at the completion positions and move the
constrained policy towards it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from rl.learner.grpo import RelayGRPOTrainer, StepStats

TEACHER_TOKENS = (5, 6, 7)  # the teacher's support at the first completion position
TEACHER_PROBS = (0.7, 0.2, 0.1)


class FirstTokenTeacher:
    """A TokenTeacher (rl.algos.distill) with a target at the first completion position only."""

    def log_probs(self, input_ids, logits_to_keep, vocab_size):
        out = torch.full((input_ids.size(0), logits_to_keep, vocab_size), float("-inf"))
        for tok, p in zip(TEACHER_TOKENS, TEACHER_PROBS, strict=True):
            out[:, 0, tok] = math.log(p)
        return out


class FirstTokenConstraint:
    """A logits-processor factory (rl.rollout.processors) allowing only the teacher's tokens at the first
    completion position, as genrec's trie allows only the codes SASRec's items reach."""

    def for_batch(self, prompt_len):
        def proc(input_ids, scores):  # [B, t], [B, V]
            if input_ids.size(1) == prompt_len:
                keep = torch.zeros(scores.size(-1), dtype=torch.bool)
                keep[list(TEACHER_TOKENS)] = True
                scores = scores.masked_fill(~keep, float("-inf"))
            return scores

        return proc


def _trainer(divergence: str) -> SimpleNamespace:
    """The attributes ``_distill_loss`` reads, as RelayGRPOTrainer.__init__ sets them."""
    return SimpleNamespace(
        temperature=1.0,
        logit_constraints=[FirstTokenConstraint()],
        token_teacher=FirstTokenTeacher(),
        distill_lambda=1.0,
        distill_divergence=divergence,
        relay_stats=StepStats(),
        accelerator=SimpleNamespace(unwrap_model=lambda m: m),
    )


@pytest.mark.parametrize("divergence", ["forward", "reverse"])
def test_distill_term_moves_the_policy_towards_the_teacher(tiny_model_dir, divergence):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    inputs = {  # 2 rows: a 3-token prompt (the first left-padded) and a 2-token completion (the second padded)
        "prompt_ids": torch.tensor([[0, 11, 12], [13, 14, 15]]),
        "prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
        "completion_ids": torch.tensor([[5, 9], [6, 0]]),
        "completion_mask": torch.tensor([[1, 1], [1, 0]]),
    }
    trainer = _trainer(divergence)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)

    def first_position_probs():  # [2, 3]: the constrained policy at completion position 0
        with torch.no_grad():
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, 2]  # predicts completion token 0
            return torch.softmax(logits.float()[:, list(TEACHER_TOKENS)], -1)

    teacher = torch.tensor(TEACHER_PROBS)
    before = first_position_probs()  # π_ref too: the LoRA adapter starts at zero
    # what each divergence pulls towards: the teacher itself, or its product with the reference
    target = (
        teacher.expand_as(before)
        if divergence == "forward"
        else before * teacher / (before * teacher).sum(-1, keepdim=True)
    )

    def kl_from_target(p):  # [2] KL(target || p)
        return (target * (target.log() - p.log())).sum(-1)

    losses = []
    for _ in range(20):
        loss = RelayGRPOTrainer._distill_loss(trainer, model, inputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    stats = trainer.relay_stats.flush()
    after = first_position_probs()
    if divergence == "forward":
        # step 1's loss is KL(m_T || π) at position 0 only (the teacher is silent at position 1), by hand
        assert losses[0] == pytest.approx(float(kl_from_target(before).mean()), rel=1e-4)
        assert set(stats) == {"distill/kl_teacher", "distill/target_frac"}
        assert stats["distill/target_frac"] == pytest.approx(2 / 3)  # 2 of the 3 completion tokens have a target
    else:
        assert set(stats) == {"distill/kl_target", "distill/kl_ref"}
    assert losses[-1] < 0.5 * losses[0]
    assert (kl_from_target(after) < 0.25 * kl_from_target(before)).all()
    assert (after.argmax(-1) == target.argmax(-1)).all()
