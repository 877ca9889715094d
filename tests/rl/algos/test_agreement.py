"""Rollout/learner logprob agreement on tensors computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos.agreement import logprob_agreement


def test_identical_logprobs_agree_exactly():
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    assert logprob_agreement(lp, lp.clone(), torch.ones(2, 2)) == {
        "diff_mean": 0.0,
        "diff_max": 0.0,
        "mismatch_kl": 0.0,
    }


def test_hand_computed_diffs_and_k3():
    rollout = torch.tensor([[-1.0, -2.0, -9.0], [-1.0, float("nan"), -1.0]])  # [2, 3]
    learner = torch.tensor([[-1.5, -2.0, 0.0], [-0.5, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])  # masked token and NaN token do not count
    got = logprob_agreement(rollout, learner, mask)
    log_r = torch.tensor([-0.5, 0.0, 0.5, 0.0])  # the four counted tokens
    assert got["diff_mean"] == pytest.approx(0.25)
    assert got["diff_max"] == pytest.approx(0.5)
    k3 = [(math.exp(x) - 1 - x) for x in log_r.tolist()]
    assert got["mismatch_kl"] == pytest.approx(sum(k3) / 4)
    assert got["mismatch_kl"] > 0


def test_k3_approximates_the_true_kl_from_samples():
    """Tokens sampled from q, scored under p: mean k3 -> KL(q || p)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.tensor([0.6, 0.3, 0.1])
    p = torch.tensor([0.5, 0.3, 0.2])
    y = torch.multinomial(q, 200_000, replacement=True, generator=gen)
    got = logprob_agreement(q.log()[y][None], p.log()[y][None], torch.ones(1, len(y)))
    assert got["mismatch_kl"] == pytest.approx((q * (q / p).log()).sum().item(), rel=0.05)


def test_no_counted_tokens_gives_none():
    lp = torch.zeros(2, 2)
    assert logprob_agreement(lp, lp, torch.zeros(2, 2)) is None
