"""PPO math against numbers worked out by hand (the derivation is in each test's comments)."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algos.ppo import (
    approx_kl,
    clipped_policy_loss,
    clipped_value_loss,
    discounted_returns,
    gae,
    kl_per_token,
    last_token_index,
    masked_mean,
    masked_var,
    outcome_to_token_rewards,
    whiten,
)

LOG2 = 0.6931471805599453


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, t(expected) if not torch.is_tensor(expected) else expected, atol=atol, rtol=0)


# ------------------------------------------------------------------ masked statistics


def test_masked_mean_counts_only_valid_tokens():
    x = t([[1, 2, 3], [4, 5, 6]])
    mask = t([[1, 1, 0], [1, 0, 0]], torch.bool)
    close(masked_mean(x, mask), 7 / 3)  # (1 + 2 + 4) / 3
    close(masked_mean(x, mask, dim=1), [1.5, 4.0])
    close(masked_mean(x, torch.zeros_like(mask)), 0.0)  # nothing valid: 0, not NaN


def test_masked_var_is_bessel_corrected():
    # valid 1, 2, 4: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 42/9, / (3 - 1) = 7/3
    x = t([[1, 2, 3], [4, 5, 6]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    close(masked_var(x, mask), 7 / 3)
    close(masked_var(x, mask, unbiased=False), 14 / 9)
    close(masked_var(x, t([[1, 0, 0], [0, 0, 0]])), 0.0)  # one entry: 0


def test_whiten():
    # valid 1, 3, 5: mean 3, var (4 + 0 + 4) / 2 = 4, std 2
    x = t([[1, 3], [5, 100]])
    mask = t([[1, 1], [1, 0]])
    close(whiten(x, mask), [[-1, 0], [1, 0]], atol=1e-6)
    close(whiten(x, mask, shift_mean=False), [[2, 3], [4, 0]], atol=1e-6)


# ------------------------------------------------------------------ rewards, GAE


def test_last_token_index():
    mask = t([[1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1]], torch.long)
    assert last_token_index(mask).tolist() == [1, 2, -1, 2]


def test_outcome_to_token_rewards_places_reward_on_last_token_minus_kl():
    rewards = t([2.0, -1.0, float("nan"), 5.0])
    mask = t([[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0]])
    kl = t([[0.5, 1.0, 9.0], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    out = outcome_to_token_rewards(rewards, mask, kl=kl, kl_coef=0.1)
    close(
        out,
        [
            [-0.05, -0.1 + 2.0, 0.0],  # padding token's kl (9) ignored
            [0.0, 0.0, -0.2 - 1.0],
            [-0.3, 0.0, 0.0],  # NaN reward contributes 0
            [0.0, 0.0, 0.0],  # no valid token: nothing
        ],
    )
    close(outcome_to_token_rewards(t([3.0]), t([[1, 1, 0]])), [[0.0, 3.0, 0.0]])


def test_gae_by_hand():
    # gamma 0.9, lam 0.8 (gamma * lam = 0.72)
    # row 0: r = [0, 0, 1], V = [0.5, 0.6, 0.7]
    #   t2: delta = 1 - 0.7 = 0.3                         A2 = 0.3
    #   t1: delta = 0.9 * 0.7 - 0.6 = 0.03                A1 = 0.03 + 0.72 * 0.3 = 0.246
    #   t0: delta = 0.9 * 0.6 - 0.5 = 0.04                A0 = 0.04 + 0.72 * 0.246 = 0.21712
    # row 1 (right padded): r = [0, 2, -], V = [1.0, 0.5, 9]
    #   t1: delta = 2 - 0.5 = 1.5                         A1 = 1.5
    #   t0: delta = 0.9 * 0.5 - 1.0 = -0.55               A0 = -0.55 + 0.72 * 1.5 = 0.53
    # row 2 = row 1 left padded instead: same numbers shifted
    rewards = t([[0, 0, 1], [0, 2, 0], [7, 0, 2]])
    values = t([[0.5, 0.6, 0.7], [1.0, 0.5, 9.0], [5.0, 1.0, 0.5]])
    mask = t([[1, 1, 1], [1, 1, 0], [0, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    close(adv, [[0.21712, 0.246, 0.3], [0.53, 1.5, 0.0], [0.0, 0.53, 1.5]], atol=1e-6)
    close(ret, [[0.71712, 0.846, 1.0], [1.53, 2.0, 0.0], [0.0, 1.53, 2.0]], atol=1e-6)


def test_gae_with_zero_values_and_lam_one_is_reward_to_go():
    rewards = t([[1.0, 2.0, 3.0]])
    adv, ret = gae(rewards, torch.zeros(1, 3), torch.ones(1, 3), gamma=0.5, lam=1.0)
    close(adv, [[2.75, 3.5, 3.0]])  # 3; 2 + 0.5 * 3; 1 + 0.5 * 3.5
    close(ret, [[2.75, 3.5, 3.0]])


def test_discounted_returns_skips_invalid_tokens():
    close(discounted_returns(t([[1.0, 2.0, 3.0]]), t([[1, 1, 1]]), gamma=0.5), [[2.75, 3.5, 3.0]])
    # middle token invalid: G0 = 1 + 0.5 * 3 = 2.5 (the 100 is never counted)
    close(discounted_returns(t([[1.0, 100.0, 3.0]]), t([[1, 0, 1]]), gamma=0.5), [[2.5, 0.0, 3.0]])


# ------------------------------------------------------------------ losses


def _policy_case():
    # ratios and advantages, clip_eps 0.2; -A*ratio vs -A*clip(ratio):
    #   r=1.5 A=+1: -1.5 vs -1.2 -> -1.2 (clipped)     r=0.5 A=+1: -0.5 vs -0.8 -> -0.5
    #   r=1.1 A=-1:  1.1 vs  1.1 ->  1.1               r=0.7 A=-1:  0.7 vs  0.8 ->  0.8 (clipped)
    #   r=1.5 A=-2:  3.0 vs  2.4 ->  3.0               masked token (r=5, A=100) ignored
    ratio = t([[1.5, 0.5, 1.1], [0.7, 1.5, 5.0]])
    adv = t([[1.0, 1.0, -1.0], [-1.0, -2.0, 100.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    old_logp = t([[-1.0, -2.0, -0.5], [-3.0, -1.0, -2.0]])
    logp = (old_logp + ratio.log()).requires_grad_(True)
    return logp, old_logp, adv, mask


def test_clipped_policy_loss_by_hand():
    logp, old_logp, adv, mask = _policy_case()
    loss, clipfrac = clipped_policy_loss(logp, old_logp, adv, mask, clip_eps=0.2)
    close(loss, 0.64, atol=1e-6)  # (-1.2 - 0.5 + 1.1 + 0.8 + 3.0) / 5
    close(clipfrac, 0.4)  # 2 of 5 valid tokens clipped
    loss.backward()
    # d/dlogp of -A*ratio/5 is -A*ratio/5 where unclipped, 0 where clipped or masked
    close(logp.grad, [[0.0, -0.1, 0.22], [0.0, 0.6, 0.0]], atol=1e-6)


def test_clipped_policy_loss_clip_higher():
    logp, old_logp, adv, mask = _policy_case()
    # upper bound 1.6: r=1.5 A=+1 no longer clipped (-1.5); r=0.7 A=-1 still clipped at 0.8
    loss, clipfrac = clipped_policy_loss(logp, old_logp, adv, mask, clip_eps=0.2, clip_eps_high=0.6)
    close(loss, 0.58, atol=1e-6)  # (-1.5 - 0.5 + 1.1 + 0.8 + 3.0) / 5
    close(clipfrac, 0.2)


def test_clipped_value_loss_by_hand():
    # old V = 0, clip 0.2:
    #   V=0.5 R=1:  (0.5-1)^2 = 0.25 vs (0.2-1)^2 = 0.64 -> 0.64
    #   V=-0.1 R=0: 0.01 vs 0.01 -> 0.01
    #   V=0.3 R=-1: 1.69 vs (0.2+1)^2 = 1.44 -> 1.69
    #   4th masked.  loss = 0.5 * (0.64 + 0.01 + 1.69) / 3 = 0.39
    values = t([[0.5, -0.1, 0.3, 0.5]])
    loss = clipped_value_loss(values, torch.zeros(1, 4), t([[1.0, 0.0, -1.0, 0.1]]), t([[1, 1, 1, 0]]), clip_eps=0.2)
    close(loss, 0.39, atol=1e-6)


def test_kl_estimators_by_hand():
    # token 0: pi = 0.5, ref = 0.25 -> d = log 2;  token 1: equal -> 0;  token 2: d = -log 2
    logp = t([[math.log(0.5), -1.0, math.log(0.25)]])
    ref = t([[math.log(0.25), -1.0, math.log(0.5)]])
    close(kl_per_token(logp, ref, "k1"), [[LOG2, 0.0, -LOG2]])
    close(kl_per_token(logp, ref, "k2"), [[0.5 * LOG2**2, 0.0, 0.5 * LOG2**2]])
    # k3 = exp(-d) - 1 + d: 0.5 - 1 + log2 ; 0 ; 2 - 1 - log2
    close(kl_per_token(logp, ref, "k3"), [[LOG2 - 0.5, 0.0, 1.0 - LOG2]])
    mask = t([[1, 1, 0]])
    close(approx_kl(logp, ref, mask, "k1"), LOG2 / 2)
    close(approx_kl(logp, ref, mask, kind="k3"), (LOG2 - 0.5) / 2)
    with pytest.raises(ValueError, match="k1"):
        kl_per_token(logp, ref, "k9")  # type: ignore[arg-type]


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shapes must match"):
        clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))
