"""Rollout/learner agreement: do the rollout engine's logprobs match the learner's for the same adapter?

Every GRPO step the learner recomputes log π_θ(y_t) of each sampled completion token in its loss
forward; the rollout engine reported log π_rollout(y_t) when it sampled. For on-policy samples both
are the same policy, so any difference is numerics (kernels, dtype, batching) — or a weight-sync bug
(a worker sampling from a stale or half-applied adapter), which these numbers expose at once:

    diff_t = |log π_learner(y_t) - log π_rollout(y_t)|
    KL(rollout || learner) ~= mean_t k3(r_t),  r_t = π_learner(y_t) / π_rollout(y_t),  k3(r) = r - 1 - log r

k3 is Schulman's unbiased, non-negative estimator of KL(q || p) from samples of q (here q = the
rollout policy, which produced y). Shapes: N samples (B*G), L completion length.
"""

from __future__ import annotations

import torch
from torch import Tensor


def logprob_agreement(
    rollout_logps: Tensor,  # [N, L] log π_rollout(y_t) as the engine reported it (NaN = unknown)
    learner_logps: Tensor,  # [N, L] log π_learner(y_t), same tokens, same adapter
    mask: Tensor,  # [N, L] 1 = a completion token of an on-policy sample
) -> dict[str, float] | None:
    """``{"diff_mean", "diff_max", "mismatch_kl"}`` over the masked tokens, or None if there are none."""
    keep = mask.bool() & ~torch.isnan(rollout_logps)  # [N, L]
    if not keep.any():
        return None
    log_ratio = (learner_logps.float() - rollout_logps.float())[keep]  # [T] log r_t
    diff = log_ratio.abs()  # [T]
    k3 = torch.expm1(log_ratio) - log_ratio  # [T] r - 1 - log r >= 0
    return {"diff_mean": diff.mean().item(), "diff_max": diff.max().item(), "mismatch_kl": k3.mean().item()}
