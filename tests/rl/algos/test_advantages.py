"""Advantage estimators against numbers worked out by hand, plus a few properties (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    KL_IN_REWARD,
    compute_advantages,
    dr_grpo,
    grpo,
    reinforce_pp,
    rloo,
)
from rl.registry import RegistryError

NAN = float("nan")
INV_SQRT2 = 0.7071067811865476

# Three groups of G = 3: spread rewards, equal rewards, one unscored sample.
REWARDS = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.0, NAN, 4.0])
# L = 2; some completions are one token long, one is empty.
MASK = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1], [1, 1], [0, 0], [1, 1], [1, 1], [1, 0]])


def broadcast(seq, mask=MASK):
    return torch.tensor(seq)[:, None] * mask.float()


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def test_registry_names_and_duplicates():
    assert ADVANTAGE_ESTIMATORS.names() == ["dr_grpo", "grpo", "reinforce_pp", "rloo"]
    assert KL_IN_REWARD == {"reinforce_pp"}
    ADVANTAGE_ESTIMATORS.register("grpo", grpo)  # re-registering the same object is a no-op
    with pytest.raises(RegistryError, match="already registered"):
        ADVANTAGE_ESTIMATORS.register("grpo", rloo)
    with pytest.raises(RegistryError, match="did you mean 'rloo'.*known: dr_grpo, grpo, reinforce_pp, rloo"):
        compute_advantages("rlo", REWARDS, 3, MASK)


def test_grpo_by_hand():
    # group 1: mean 2, deviations -1 0 1, unbiased var 2 / 2 = 1 -> -1 0 1
    # group 2: all equal -> 0
    # group 3: scored 0 and 4: mean 2, var (4 + 4) / 1 = 8, std 2*sqrt(2) -> -1/sqrt2, (NaN -> 0), 1/sqrt2
    expected = broadcast([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0, -INV_SQRT2, 0.0, INV_SQRT2])
    out = grpo(REWARDS, 3, MASK)
    assert out.shape == (9, 2) and torch.isfinite(out).all()
    close(out, expected)
    close(compute_advantages("grpo", REWARDS, 3, MASK), expected)


def test_dr_grpo_by_hand():
    # mean only: group 1 mean 2, group 2 mean 5, group 3 mean 2 over the scored two
    close(dr_grpo(REWARDS, 3, MASK), broadcast([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0, -2.0, 0.0, 2.0]))


def test_rloo_by_hand():
    # group 1: 1 - (2+3)/2 = -1.5 ; 2 - (1+3)/2 = 0 ; 3 - (1+2)/2 = 1.5
    # group 3: scored 0 and 4 baseline each other: -4, 4 ; unscored 0
    close(rloo(REWARDS, 3, MASK), broadcast([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0, -4.0, 0.0, 4.0]))


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_group_of_one_and_equal_groups_give_zero_without_nan(name):
    rewards = torch.tensor([3.0, NAN, -2.0])
    mask = torch.ones(3, 4)
    out = compute_advantages(name, rewards, 1, mask)
    assert torch.isfinite(out).all()
    if name != "reinforce_pp":  # sequence estimators: no baseline from a group of one
        close(out, torch.zeros(3, 4))
    else:  # batch whitening still applies; the unscored row stays 0
        close(out[1], torch.zeros(4))
    equal = compute_advantages(name, torch.full((4,), 0.5), 2, torch.ones(4, 3))
    close(equal, torch.zeros(4, 3))


def test_all_unscored_group_is_zero():
    out = grpo(torch.tensor([NAN, NAN, 1.0, 2.0]), 2, torch.ones(4, 1))
    close(out[:, 0], torch.tensor([0.0, 0.0, -INV_SQRT2, INV_SQRT2]))


def test_reinforce_pp_by_hand():
    # gamma 0.5, kl_coef 0.1
    # row 0: mask 111, reward 1, kl [1, 2, 0] -> r_t = [-0.1, -0.2, 1.0]
    #        G = [-0.1 + 0.5*0.3, -0.2 + 0.5*1.0, 1.0] = [0.05, 0.3, 1.0]
    # row 1: mask 110, reward 0, kl [0, 1, (5 padding)] -> r_t = [0, -0.1, -] ; G = [-0.05, -0.1, -]
    # row 2: unscored (NaN): excluded, 0
    # whiten over 0.05 0.3 1.0 -0.05 -0.1: mean 1.2/5 = 0.24,
    #   deviations -0.19 0.06 0.76 -0.29 -0.34, squares sum 0.817, unbiased var 0.817/4
    rewards = torch.tensor([1.0, 0.0, NAN])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    kl = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 5.0], [3.0, 3.0, 3.0]])
    std = math.sqrt(0.817 / 4)
    expected = torch.tensor([[-0.19, 0.06, 0.76], [-0.29, -0.34, 0.0], [0.0, 0.0, 0.0]]) / std
    out = reinforce_pp(rewards, 1, mask, kl, kl_coef=0.1, gamma=0.5)
    close(out, expected)
    close(compute_advantages("reinforce_pp", rewards, 1, mask, kl, kl_coef=0.1, gamma=0.5), expected)


def test_reinforce_pp_needs_kl_when_kl_coef_set():
    with pytest.raises(ValueError, match="kl_coef"):
        reinforce_pp(torch.ones(2), 1, torch.ones(2, 2), None, kl_coef=0.1)


def test_input_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"group_size \(4\) must divide the number of rewards \(9\)"):
        grpo(REWARDS, 4, MASK)
    with pytest.raises(ValueError, match="mask must be"):
        rloo(REWARDS, 3, torch.ones(8, 2))
    with pytest.raises(ValueError, match="kl must have"):
        reinforce_pp(REWARDS, 3, MASK, torch.zeros(9, 3))


def test_plugin_by_import_string():
    out = compute_advantages("rl.algos.advantages:dr_grpo", REWARDS, 3, MASK)
    close(out, dr_grpo(REWARDS, 3, MASK))


# ------------------------------------------------------------------ properties

finite = st.floats(min_value=-10, max_value=10, allow_nan=False, width=32)


@st.composite
def grouped_rewards(draw):
    g = draw(st.integers(1, 5))
    b = draw(st.integers(1, 4))
    values = draw(st.lists(finite, min_size=b * g, max_size=b * g))
    unscored = draw(st.lists(st.booleans(), min_size=b * g, max_size=b * g))
    r = torch.tensor([NAN if u else v for v, u in zip(values, unscored, strict=True)], dtype=torch.float64)
    return r, g


@settings(max_examples=60, deadline=None)
@given(grouped_rewards())
def test_rloo_sums_to_zero_and_grpo_has_zero_mean_per_group(case):
    rewards, g = case
    mask = torch.ones(rewards.shape[0], 1)
    scored = ~torch.isnan(rewards).view(-1, g)
    for name in ("grpo", "dr_grpo", "rloo"):
        adv = compute_advantages(name, rewards, g, mask)[:, 0].view(-1, g)  # [B, G]
        assert torch.isfinite(adv).all(), name
        assert (adv[~scored] == 0).all(), name  # unscored samples get 0
        group_sum = adv.sum(dim=1)  # unscored are 0, so this is the sum over scored samples
        torch.testing.assert_close(group_sum, torch.zeros_like(group_sum), atol=1e-6 * g * 20, rtol=0)


@settings(max_examples=40, deadline=None)
@given(grouped_rewards(), st.floats(min_value=-100, max_value=100, allow_nan=False))
def test_group_estimators_ignore_a_constant_shift(case, shift):
    rewards, g = case
    mask = torch.ones(rewards.shape[0], 2)
    for name in ("dr_grpo", "rloo"):
        a = compute_advantages(name, rewards, g, mask)
        b = compute_advantages(name, rewards + shift, g, mask)
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
