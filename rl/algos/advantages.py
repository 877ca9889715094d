"""Advantage estimators, selectable by name (``ADVANTAGE_ESTIMATORS``; duplicates are refused).

Every estimator has the same signature::

    fn(rewards, group_size, mask, kl=None, **options) -> advantages
       rewards    [N]     N = B * G; the G samples of one prompt are consecutive
       group_size int     G
       mask       [N, L]  completion mask (1 = generated token that counts)
       kl         [N, L]  per-token KL to the reference; used by token-level estimators only
       advantages [N, L]  0 on invalid tokens

``NaN`` in ``rewards`` marks an unscored sample (a reward function returned ``None``): it is left
out of every baseline/statistic and its advantage is 0 on every token.

Sequence-level estimators (``grpo``, ``dr_grpo``, ``rloo``) compute one number per sample and
broadcast it over the sample's valid tokens; they ignore ``kl`` (in GRPO the KL is a loss term,
see ``rl.algos.ppo.kl_per_token``). Token-level ``reinforce_pp`` folds the KL into the reward.
Names in ``KL_IN_REWARD`` are the ones that read ``kl``.

Plug-ins: ``ADVANTAGE_ESTIMATORS.register("mine", fn)``, or give ``compute_advantages`` an import
string ``"package.module:fn"`` / ``"path/to/file.py:fn"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rl.algos.ppo import discounted_returns, outcome_to_token_rewards, whiten
from rl.registry import Registry

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_IN_REWARD",
    "AdvantageEstimator",
    "compute_advantages",
    "dr_grpo",
    "grpo",
    "group_stats",
    "reinforce_pp",
    "rloo",
]

AdvantageEstimator = Callable[..., Tensor]

ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")

KL_IN_REWARD = frozenset({"reinforce_pp"})


def _check_inputs(rewards: Tensor, group_size: int, mask: Tensor, kl: Tensor | None = None) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B*G]; got shape {tuple(rewards.shape)}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size ({group_size!r}) must be a positive integer")
    if rewards.shape[0] % group_size != 0:
        raise ValueError(
            f"group_size ({group_size}) must divide the number of rewards ({rewards.shape[0]}); "
            "pass the G completions of every prompt"
        )
    if mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"mask must be [B*G, L] with B*G = {rewards.shape[0]}; got {tuple(mask.shape)}")
    if kl is not None and kl.shape != mask.shape:
        raise ValueError(f"kl must have the mask's shape {tuple(mask.shape)}; got {tuple(kl.shape)}")


def _float(rewards: Tensor) -> Tensor:
    return rewards if rewards.is_floating_point() else rewards.to(torch.float32)


def group_stats(rewards: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-group statistics over scored samples (NaN rewards excluded).

    rewards: [N] -> (valid [B, G] bool, count [B, 1], mean [B, 1], std [B, 1]).
    ``std`` is Bessel-corrected (as ``torch.std``, TRL, verl); 0 with fewer than 2 scored samples.
    ``mean`` is 0 for a group with no scored sample.
    """
    r = _float(rewards).view(-1, group_size)  # [B, G]
    valid = ~torch.isnan(r)  # [B, G]
    r0 = torch.where(valid, r, torch.zeros_like(r))  # [B, G]
    count = valid.sum(dim=1, keepdim=True).to(r.dtype)  # [B, 1]
    mean = r0.sum(dim=1, keepdim=True) / count.clamp(min=1.0)  # [B, 1]
    sq = torch.where(valid, (r - mean) ** 2, torch.zeros_like(r)).sum(dim=1, keepdim=True)  # [B, 1]
    std = torch.where(count > 1, (sq / (count - 1.0).clamp(min=1.0)).sqrt(), torch.zeros_like(sq))  # [B, 1]
    return valid, count, mean, std


def _broadcast(seq_adv: Tensor, mask: Tensor) -> Tensor:
    """Sequence advantages [N] over the mask [N, L] -> [N, L]."""
    return seq_adv[:, None] * mask.to(dtype=seq_adv.dtype, device=seq_adv.device)


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo(rewards: Tensor, group_size: int, mask: Tensor, kl: Tensor | None = None, *, eps: float = 1e-6) -> Tensor:
    """GRPO: A_i = (r_i - mean_g) / (std_g + eps), per group g of G samples.

    rewards [N], mask [N, L] -> [N, L]. A group of one, or of equal rewards, gives 0 (no NaN).
    """
    _check_inputs(rewards, group_size, mask, kl)
    r = _float(rewards).view(-1, group_size)  # [B, G]
    valid, _, mean, std = group_stats(rewards, group_size)
    adv = torch.where(valid, (r - mean) / (std + eps), torch.zeros_like(r))  # [B, G]
    return _broadcast(adv.reshape(-1), mask)


@ADVANTAGE_ESTIMATORS.register("dr_grpo")
def dr_grpo(rewards: Tensor, group_size: int, mask: Tensor, kl: Tensor | None = None) -> Tensor:
    """Dr. GRPO: A_i = r_i - mean_g (no division by the group std). rewards [N], mask [N, L] -> [N, L]."""
    _check_inputs(rewards, group_size, mask, kl)
    r = _float(rewards).view(-1, group_size)  # [B, G]
    valid, _, mean, _ = group_stats(rewards, group_size)
    adv = torch.where(valid, r - mean, torch.zeros_like(r))  # [B, G]
    return _broadcast(adv.reshape(-1), mask)


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo(rewards: Tensor, group_size: int, mask: Tensor, kl: Tensor | None = None) -> Tensor:
    """RLOO: A_i = r_i - (sum_{j != i} r_j) / (n - 1), over the n scored samples of the group.

    Equals n / (n - 1) * (r_i - mean_g). With n < 2 there is no baseline and A_i = 0.
    rewards [N], mask [N, L] -> [N, L].
    """
    _check_inputs(rewards, group_size, mask, kl)
    r = _float(rewards).view(-1, group_size)  # [B, G]
    valid, count, _, _ = group_stats(rewards, group_size)
    r0 = torch.where(valid, r, torch.zeros_like(r))  # [B, G]
    total = r0.sum(dim=1, keepdim=True)  # [B, 1]
    baseline = (total - r0) / (count - 1.0).clamp(min=1.0)  # [B, G]
    adv = torch.where(valid & (count > 1), r - baseline, torch.zeros_like(r))  # [B, G]
    return _broadcast(adv.reshape(-1), mask)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp")
def reinforce_pp(
    rewards: Tensor,
    group_size: int,
    mask: Tensor,
    kl: Tensor | None = None,
    *,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++: KL-penalised token rewards, discounted reward-to-go, batch whitening.

    rewards [N], mask [N, L], kl [N, L] -> [N, L]:
        r_t = -kl_coef * kl_t + [t = last valid token] * r     (``outcome_to_token_rewards``)
        G_t = r_t + gamma * G_{t+1}                             (over valid tokens)
        A_t = (G_t - mean(G)) / sqrt(var(G) + eps)              (mean/var over every valid token of
                                                                 every scored sample in the batch)
    ``group_size`` is only checked (REINFORCE++ uses no group baseline). Unscored (NaN) samples
    are left out of the whitening statistics and get 0.
    """
    _check_inputs(rewards, group_size, mask, kl)
    if kl is None and kl_coef != 0.0:
        raise ValueError(f"reinforce_pp: kl_coef ({kl_coef}) is non-zero but no per-token kl was given")
    r = _float(rewards)  # [N]
    scored = ~torch.isnan(r)  # [N]
    m = mask.to(dtype=r.dtype, device=r.device) * scored[:, None].to(r.dtype)  # [N, L]
    token_rewards = outcome_to_token_rewards(r, m, kl=kl, kl_coef=kl_coef)  # [N, L]
    returns = discounted_returns(token_rewards, m, gamma=gamma)  # [N, L]
    return whiten(returns, m, eps=eps)  # [N, L]


def compute_advantages(
    name: str,
    rewards: Tensor,
    group_size: int,
    mask: Tensor,
    kl: Tensor | None = None,
    **options: float,
) -> Tensor:
    """Run the estimator registered as ``name`` (or an import string). rewards [N], mask [N, L] -> [N, L].

    ``options`` are the estimator's keyword options (``eps``, ``kl_coef``, ``gamma``).
    """
    fn = ADVANTAGE_ESTIMATORS.resolve(name)
    return fn(rewards, group_size, mask, kl, **options)
