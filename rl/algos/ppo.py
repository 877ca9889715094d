"""PPO math: masked statistics, GAE, clipped policy/value losses, KL estimators.

Pure torch functions, no state. Shapes in comments: ``B`` sequences, ``L`` completion tokens.
``mask`` is the completion mask (1 = a generated token that counts, 0 = padding / prompt); it may
be bool, int or float and is converted to the data's dtype.

Loss aggregation: every loss here is a **token mean over the whole batch**,
``sum(loss_tok * mask) / sum(mask)`` (``masked_mean``), so each valid token weighs the same
whatever the length of its sequence (DAPO's "token-level" aggregation; verl's ``token-mean``).

Variance conventions: ``masked_var`` uses Bessel's correction (``n - 1``), like ``torch.std``,
TRL and verl; with fewer than two valid entries the variance is 0.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "approx_kl",
    "clipped_policy_loss",
    "clipped_value_loss",
    "discounted_returns",
    "gae",
    "kl_per_token",
    "last_token_index",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "outcome_to_token_rewards",
    "whiten",
]

KLKind = Literal["k1", "k2", "k3"]


def _as(mask: Tensor, like: Tensor) -> Tensor:
    """The mask as ``like``'s dtype and device."""
    return mask.to(dtype=like.dtype, device=like.device)


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shapes must match: {listed}")


# ----------------------------------------------------------------------------------------------
# masked statistics
# ----------------------------------------------------------------------------------------------


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` where ``mask`` is 1. ``x``, ``mask``: same shape."""
    return (x * _as(mask, x)).sum() if dim is None else (x * _as(mask, x)).sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1; 0 where there are none.

    ``dim=None``: scalar over everything (the token mean used by every loss here).
    """
    m = _as(mask, x)
    total = (x * m).sum() if dim is None else (x * m).sum(dim=dim)
    count = m.sum() if dim is None else m.sum(dim=dim)
    return total / count.clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Scalar variance of ``x`` over valid entries (Bessel-corrected by default); 0 with < 2 entries."""
    m = _as(mask, x)
    n = m.sum()
    mean = masked_mean(x, m)
    sq = ((x - mean) ** 2 * m).sum()
    denom = (n - 1.0) if unbiased else n
    return torch.where(n > 1, sq / denom.clamp(min=1.0), torch.zeros_like(sq))


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` with mean/var over valid entries; invalid entries -> 0.

    x, mask: [B, L] (any shape). ``shift_mean=False`` keeps the mean (only rescales), as TRL/verl.
    """
    m = _as(mask, x)
    mean = masked_mean(x, m)
    var = masked_var(x, m)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


# ----------------------------------------------------------------------------------------------
# rewards and advantages
# ----------------------------------------------------------------------------------------------


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last valid token per row. mask: [B, L] -> [B] (long); -1 for an empty row."""
    m = mask.to(torch.bool)
    L = m.shape[-1]
    positions = torch.arange(L, device=m.device).expand_as(m)  # [B, L]
    return torch.where(m, positions, torch.full_like(positions, -1)).max(dim=-1).values  # [B]


def outcome_to_token_rewards(
    rewards: Tensor,
    mask: Tensor,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
) -> Tensor:
    """Place each sequence's outcome reward on its last valid token, minus ``kl_coef * kl`` per token.

    rewards: [B]; mask: [B, L]; kl: [B, L] per-token KL to the reference (e.g. ``kl_per_token``).
    Returns [B, L], zero on invalid tokens:
        r_t = -kl_coef * kl_t + [t == last valid token] * reward.
    A NaN reward (unscored sample) contributes 0 here; the caller should also drop such rows from
    the loss mask, since a value baseline would otherwise still give them non-zero advantages.
    Rows with no valid token get no reward.
    """
    if rewards.dim() != 1 or rewards.shape[0] != mask.shape[0]:
        raise ValueError(
            f"rewards must be [B] with B = mask.shape[0]; got rewards {tuple(rewards.shape)}, mask {tuple(mask.shape)}"
        )
    dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    m = mask.to(dtype=dtype, device=rewards.device)  # [B, L]
    token_rewards = torch.zeros_like(m)  # [B, L]
    if kl is not None:
        _check_same_shape(kl=kl, mask=mask)
        token_rewards = token_rewards - kl_coef * kl.to(dtype) * m
    last = last_token_index(mask)  # [B]
    has_token = last >= 0  # [B]
    outcome = torch.nan_to_num(rewards.to(dtype), nan=0.0)  # [B]
    rows = torch.arange(m.shape[0], device=m.device)[has_token]
    token_rewards[rows, last[has_token]] += outcome[has_token]
    return token_rewards


@torch.no_grad()
def gae(
    rewards_tok: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the valid tokens of each sequence.

    rewards_tok, values, mask: [B, L]. Returns ``(advantages, returns)``, both [B, L], 0 where invalid.
        delta_t = r_t + gamma * V_{t'} - V_t          (t' = next valid token; V = 0 after the last)
        A_t     = delta_t + gamma * lam * A_{t'}
        R_t     = A_t + V_t                           (the value target)
    Invalid tokens are skipped (not treated as steps), so left/right/middle padding give the same
    result as the packed sequence. Advantages are not whitened; call ``whiten`` if wanted.
    Runs under ``no_grad``: advantages and returns are targets, not part of the graph.
    """
    _check_same_shape(rewards_tok=rewards_tok, values=values, mask=mask)
    m = mask.to(torch.bool)
    L = rewards_tok.shape[-1]
    advantages = torch.zeros_like(values)  # [B, L]
    next_value = torch.zeros_like(values[:, 0])  # [B]
    next_adv = torch.zeros_like(values[:, 0])  # [B]
    for t in reversed(range(L)):
        valid = m[:, t]  # [B]
        delta = rewards_tok[:, t] + gamma * next_value - values[:, t]  # [B]
        adv_t = delta + gamma * lam * next_adv  # [B]
        next_adv = torch.where(valid, adv_t, next_adv)
        next_value = torch.where(valid, values[:, t], next_value)
        advantages[:, t] = torch.where(valid, adv_t, torch.zeros_like(adv_t))
    returns = (advantages + values) * _as(mask, values)  # [B, L]
    return advantages, returns


def discounted_returns(rewards_tok: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """Reward-to-go over valid tokens: G_t = r_t + gamma * G_{t'} (t' = next valid token).

    rewards_tok, mask: [B, L] -> [B, L], 0 where invalid. (``gae`` with V = 0 and lam = 1.)
    """
    _check_same_shape(rewards_tok=rewards_tok, mask=mask)
    m = mask.to(torch.bool)
    out = torch.zeros_like(rewards_tok)  # [B, L]
    running = torch.zeros_like(rewards_tok[:, 0])  # [B]
    for t in reversed(range(rewards_tok.shape[-1])):
        running = torch.where(m[:, t], rewards_tok[:, t] + gamma * running, running)
        out[:, t] = torch.where(m[:, t], running, torch.zeros_like(running))
    return out


# ----------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------


def clipped_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate, token mean over the batch.

    logp, old_logp, adv, mask: [B, L]. Returns ``(loss, clipfrac)``, both scalars:
        ratio_t = exp(logp_t - old_logp_t)
        loss    = masked_mean( max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps_high)) )
        clipfrac= fraction of valid tokens where the clipped term is the larger (gradient is zero)
    ``clip_eps_high`` defaults to ``clip_eps`` (set it higher for DAPO's clip-higher).
    """
    _check_same_shape(logp=logp, old_logp=old_logp, adv=adv, mask=mask)
    high = clip_eps if clip_eps_high is None else clip_eps_high
    ratio = torch.exp(logp - old_logp)  # [B, L]
    unclipped = -adv * ratio  # [B, L]
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)  # [B, L]
    loss_tok = torch.maximum(unclipped, clipped)  # [B, L]
    loss = masked_mean(loss_tok, mask)
    clipfrac = masked_mean((clipped > unclipped).to(logp.dtype), mask).detach()
    return loss, clipfrac


def clipped_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
) -> Tensor:
    """PPO2 value loss: 0.5 * masked_mean(max((V - R)^2, (V_clip - R)^2)), token mean over the batch.

    values, old_values, returns, mask: [B, L]; V_clip = old_V + clip(V - old_V, -eps, eps).
    The 0.5 matches TRL's and verl's PPO value loss.
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)  # [B, L]
    err_unclipped = (values - returns) ** 2  # [B, L]
    err_clipped = (v_clipped - returns) ** 2  # [B, L]
    return 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), mask)


# ----------------------------------------------------------------------------------------------
# KL to the reference policy
# ----------------------------------------------------------------------------------------------


def kl_per_token(logp: Tensor, ref_logp: Tensor, kind: KLKind = "k1") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled-token logprobs (Schulman's k1/k2/k3).

    logp, ref_logp: [B, L] -> [B, L]. With d = logp - ref_logp:
        k1 = d                       (unbiased, can be negative)
        k2 = d^2 / 2                 (biased, low variance)
        k3 = exp(-d) - 1 + d         (unbiased, always >= 0; GRPO's KL term)
    For k3, ``-d`` is clamped to [-20, 20] before ``exp`` to avoid overflow.
    """
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    d = logp - ref_logp  # [B, L]
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d**2
    if kind == "k3":
        neg = torch.clamp(-d, -20.0, 20.0)
        return torch.exp(neg) - 1.0 - neg
    raise ValueError(f"kl kind {kind!r} is unknown; use 'k1', 'k2' or 'k3'")


def approx_kl(logp: Tensor, ref_logp: Tensor, mask: Tensor, kind: KLKind = "k1") -> Tensor:
    """Scalar token-mean KL estimate over valid tokens. logp, ref_logp, mask: [B, L] -> []."""
    return masked_mean(kl_per_token(logp, ref_logp, kind), mask)
