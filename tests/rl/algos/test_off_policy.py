"""Async-rollout math and scheduling: IS weights against hand-computed values, the prefetch window's
staleness bound, and the step-indexed prompt order."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos.off_policy import StepSampler, importance_weights, prefetch_targets, step_prompt_indices

# Two samples, three tokens; sample 1's last token is padding (mask 0) with a NaN sampling logprob.
SAMPLED = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -3.0, float("nan")]])  # [N=2, L=3]
CURRENT = torch.tensor([[-0.5, -2.0, -2.0], [-0.2, -1.0, -4.0]])  # [2, 3]
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # [2, 3]
# log-ratios current - sampled on valid tokens: [[0.5, 0, -1.5], [0, 2.0, (masked) 0]]


def test_token_truncate_by_hand():
    w = importance_weights(SAMPLED, CURRENT, MASK, "token_truncate", cap=3.0)
    expected = torch.tensor([[math.exp(0.5), 1.0, math.exp(-1.5)], [1.0, 3.0, 1.0]])  # e^2 = 7.39 -> cap 3
    torch.testing.assert_close(w, expected)


def test_token_mask_zeroes_weights_above_the_cap():
    w = importance_weights(SAMPLED, CURRENT, MASK, "token_mask", cap=3.0)
    expected = torch.tensor([[math.exp(0.5), 1.0, math.exp(-1.5)], [1.0, 0.0, 1.0]])
    torch.testing.assert_close(w, expected)


def test_sequence_modes_sum_the_token_log_ratios():
    w = importance_weights(SAMPLED, CURRENT, MASK, "sequence_truncate", cap=3.0)
    torch.testing.assert_close(w, torch.tensor([[math.exp(-1.0)], [3.0]]))  # [N, 1]; e^2 capped
    w = importance_weights(SAMPLED, CURRENT, MASK, "sequence_mask", cap=3.0)
    torch.testing.assert_close(w, torch.tensor([[math.exp(-1.0)], [0.0]]))


def test_truncate_floor_and_unknown_mode():
    w = importance_weights(SAMPLED, CURRENT, MASK, "token_truncate", cap=3.0, floor=0.5)
    assert w[0, 2].item() == 0.5  # e^-1.5 = 0.22 raised to the floor
    with pytest.raises(ValueError, match="token_truncate"):
        importance_weights(SAMPLED, CURRENT, MASK, "token_clip")


def _simulate(max_staleness: int, last_step: int, restart_at: int | None = None) -> dict[int, int]:
    """Drive prefetch_targets like AsyncRollouts does: batch -> policy version that generated it."""
    made, upto = {}, -1
    for step in range(last_step + 1):
        if step == restart_at:
            upto = -1  # a resumed process knows nothing of the old window
            made = {b: v for b, v in made.items() if b < step}
        for batch in prefetch_targets(step, upto, max_staleness, last_step):
            assert batch not in made, f"batch {batch} submitted twice"
            made[batch] = step
            upto = batch
        assert step in made, f"no batch ready for step {step}"
    return made


@pytest.mark.parametrize("max_staleness", [1, 2, 3])
@pytest.mark.parametrize("restart_at", [None, 4])
def test_staleness_never_exceeds_the_bound_and_every_step_gets_one_batch(max_staleness, restart_at):
    made = _simulate(max_staleness, last_step=9, restart_at=restart_at)
    assert sorted(made) == list(range(10))  # each step trained once, none past the end
    staleness = {b: b - v for b, v in made.items()}
    assert max(staleness.values()) == max_staleness  # the bound is reached, never exceeded
    assert all(0 <= s <= max_staleness for s in staleness.values())
    assert staleness[0] == 0 and all(staleness[b] == max_staleness for b in range(max_staleness, 4))
    if restart_at is not None:
        assert staleness[restart_at] == 0  # regenerated with the restored adapter


def test_step_prompt_indices_are_pure_and_cover_each_pass():
    a = [step_prompt_indices(7, s, num_items=10, per_step=4) for s in range(5)]  # 20 positions = 2 passes
    assert a == [step_prompt_indices(7, s, 10, 4) for s in range(5)]
    flat = [i for step in a for i in step]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # each pass has its own order
    assert a != [step_prompt_indices(8, s, 10, 4) for s in range(5)]  # the seed matters


def test_step_sampler_repeats_each_prompt_for_its_group():
    sampler = StepSampler(seed=0, num_items=6, per_step=2, repeats=3, num_steps=2)
    out = list(sampler)
    assert len(out) == len(sampler) == 12
    expected = [i for s in range(2) for i in step_prompt_indices(0, s, 6, 2) for _ in range(3)]
    assert out == expected
