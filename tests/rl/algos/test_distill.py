"""On-policy distillation math (rl.algos.distill) on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos.distill import MASKED, distill_loss, reverse_kl_per_token, tilted_target

NEG = float("-inf")


def test_tilted_target_is_the_renormalised_product_over_allowed_tokens():
    ref = torch.tensor([0.0, math.log(2.0), 5.0])  # the forbidden third token must not count
    teacher = torch.tensor([math.log(0.5), math.log(0.5), 0.0])
    allowed = torch.tensor([True, True, False])
    q = tilted_target(ref, teacher, allowed, lam=1.0).exp()
    assert q.tolist() == pytest.approx([1 / 3, 2 / 3, 0.0], abs=1e-6)  # ∝ ref (1, 2) · teacher (.5, .5)
    # lam = 0: the reference renormalised over the allowed tokens
    assert tilted_target(ref, teacher, allowed, lam=0.0).exp().tolist() == pytest.approx([1 / 3, 2 / 3, 0.0], abs=1e-6)
    # the teacher decides when lam is large: teacher (.9, .1) at lam 2 -> ∝ (1 · .81, 2 · .01)
    sharp = tilted_target(ref, torch.tensor([math.log(0.9), math.log(0.1), NEG]), allowed, lam=2.0).exp()
    assert sharp.tolist() == pytest.approx([0.81 / 0.83, 0.02 / 0.83, 0.0], abs=1e-6)


def test_positions_without_teacher_mass_fall_back_to_the_reference():
    ref = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # [2 positions, V=2]
    teacher = torch.tensor([[NEG, NEG], [math.log(0.2), math.log(0.8)]])  # position 0: the teacher is silent
    allowed = torch.ones(2, 2, dtype=torch.bool)
    q = tilted_target(ref, teacher, allowed, lam=1.0).exp()
    assert q[0].tolist() == pytest.approx([0.25, 0.75], abs=1e-6)
    assert q[1].tolist() == pytest.approx([0.2, 0.8], abs=1e-6)


def test_reverse_kl_matches_the_formula_and_vanishes_at_the_target():
    allowed = torch.tensor([True, True, True, False])
    logq = tilted_target(torch.zeros(4), torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0])), allowed, lam=1.0)
    policy = torch.log(torch.tensor([0.2, 0.2, 0.6, 0.3]))  # the 4th (forbidden) logit is ignored
    p = torch.tensor([0.2, 0.2, 0.6]) / 1.0
    want = float((p * (p.log() - torch.tensor([0.5, 0.3, 0.2]).log())).sum())
    assert float(reverse_kl_per_token(policy, logq, allowed)) == pytest.approx(want, abs=1e-5)
    assert float(reverse_kl_per_token(logq.clone(), logq, allowed)) == pytest.approx(0.0, abs=1e-6)


def test_distill_loss_masks_padding_has_finite_gradients_and_moves_towards_the_target():
    torch.manual_seed(0)
    B, L, V = 2, 3, 5
    allowed = torch.ones(B, L, V, dtype=torch.bool)
    allowed[:, :, 3:] = False  # two forbidden tokens everywhere
    ref = torch.randn(B, L, V)
    teacher = torch.log_softmax(torch.randn(B, L, V).masked_fill(~allowed, MASKED), -1)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # padding after the completions
    logits = torch.randn(B, L, V, requires_grad=True)
    loss, stats = distill_loss(logits, ref, teacher, allowed, mask, lam=1.0)
    per_token = reverse_kl_per_token(logits, tilted_target(ref, teacher, allowed, 1.0), allowed)
    assert float(loss) == pytest.approx(float(per_token[mask.bool()].mean()), abs=1e-6)
    assert stats["kl_target"] == pytest.approx(float(loss)) and stats["kl_ref"] >= 0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0, 2].abs().sum() == 0 and logits.grad[1, 1:].abs().sum() == 0  # padding: no gradient
    assert logits.grad[..., 3:].abs().sum() == 0  # forbidden tokens: no gradient
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad
    after, _ = distill_loss(stepped, ref, teacher, allowed, mask, lam=1.0)
    assert float(after) < float(loss)


def test_forward_kl_matches_the_formula_and_skips_positions_without_a_target():
    from rl.algos.distill import forward_kl_per_token

    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)  # [2, V=4]
    inf = float("-inf")
    teacher = torch.tensor([[math.log(0.25), math.log(0.75), inf, inf], [inf, inf, inf, inf]])
    kl, has = forward_kl_per_token(logits, teacher)
    logp = torch.log_softmax(logits.detach(), -1)[0]
    want = 0.25 * (math.log(0.25) - logp[0]) + 0.75 * (math.log(0.75) - logp[1])
    assert float(kl[0]) == pytest.approx(float(want), abs=1e-5)
    assert has.tolist() == [True, False] and float(kl[1]) == 0.0
    kl.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1].abs().sum() == 0  # no target, no gradient
    at_target = torch.tensor([[math.log(0.25), math.log(0.75), -30.0, -30.0]])  # the policy already is the teacher
    assert float(forward_kl_per_token(at_target, teacher[:1])[0][0]) == pytest.approx(0.0, abs=1e-6)


def test_forward_distill_loss_is_the_teachers_kl_to_the_constrained_policy_over_positions_with_a_target():
    from rl.algos.distill import forward_distill_loss

    allowed = torch.tensor([[[True, True, False], [True, True, True], [True, True, True]]])  # [B=1, L=3, V=3]
    # position 0: the teacher's mass on the forbidden token is dropped and the rest renormalised (.2, .6 -> .25,
    # .75); position 1: the teacher is silent (no target); position 2: padding
    teacher = torch.tensor([[[math.log(0.2), math.log(0.6), math.log(0.2)], [NEG, NEG, NEG], [0.0, NEG, NEG]]])
    mask = torch.tensor([[1, 1, 0]])
    logits = torch.tensor([[[0.0, math.log(3.0), 9.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]], requires_grad=True)
    loss, stats = forward_distill_loss(logits, teacher, allowed, mask)
    # the constrained policy at position 0 is (.25, .75): it already is the renormalised teacher
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and stats["target_frac"] == pytest.approx(0.5)
    loss.backward()
    assert logits.grad.abs().max() < 1e-6  # at the target the gradient vanishes; elsewhere there is no term

    off = torch.tensor([[[0.0, 0.0, 9.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]], requires_grad=True)  # policy (.5, .5)
    loss, stats = forward_distill_loss(off, teacher, allowed, mask)
    want = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # one position with a target
    assert float(loss) == pytest.approx(want, abs=1e-5) and stats["kl_teacher"] == pytest.approx(want, abs=1e-5)
    loss.backward()
    assert off.grad[0, 1:].abs().sum() == 0 and off.grad[0, 0, 2] == 0  # silent, padding, forbidden: no gradient
    assert off.grad[0, 0, 1] < 0 < off.grad[0, 0, 0]  # descent raises the token the teacher prefers
