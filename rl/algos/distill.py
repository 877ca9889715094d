"""On-policy distillation towards a teacher-tilted reference, token by token.

The KL-regularised RL objective ``max_π E_π[λ log p_T(y)] − KL(π || π_ref)`` has the closed-form optimum
``q(y) ∝ π_ref(y) p_T(y)^λ``, and maximising it is the same as minimising ``KL(π || q)``. When the teacher
p_T factorises over the tokens of ``y`` (a recommender's item distribution pushed through the semantic-ID
trie gives each code's marginal given the prefix), a per-token target is

    q(c | s) ∝ π_ref(c | s) · m_T(c | s)^λ        over the tokens the rollout constraint allows at s,

and the loss is the exact reverse KL at every completion position the policy visited (the expectation over
the next token is summed, not sampled, so no per-sample variance). Positions come from the policy's own
rollouts: on-policy, as in GKD / on-policy distillation. Thinking Machines' on-policy distillation samples
the next token instead; with a small allowed set the sum is cheap and exact. ``q`` here is a per-token
approximation of the sequence-level optimum (each token's tilt is renormalised at its prefix).

``forward_distill_loss`` is the mass-covering alternative (``algorithm.distill_divergence: forward``): the
forward KL(m_T || π_θ) from the teacher itself at the same on-policy positions, GKD's forward-KL variant. The
reverse KL to the product π_ref · m_T is mode seeking (it sharpens the policy); the forward KL pulls every
allowed token's mass towards the teacher's, on the prefixes the policy visits, which teacher-forced
distillation along the data's own path never reaches.

Pure torch; shapes in comments. ``MASKED`` marks forbidden tokens with a finite value so that ``0 · log 0``
terms and their gradients stay 0 (an ``-inf`` there gives NaN gradients through ``where``).
"""

from __future__ import annotations

from typing import Any, Protocol

MASKED = -1e9  # forbidden token: finite, so p = 0 exactly and 0 * (logp - logq) has a zero gradient


class TokenTeacher(Protocol):
    """What an env's ``token_teacher`` factory returns (``rl.env_api.Env.token_teacher``)."""

    def log_probs(self, input_ids: Any, logits_to_keep: int, vocab_size: int) -> Any:
        """input_ids [B, T] (the left-padded prompt, then the L = ``logits_to_keep`` completion tokens) ->
        [B, L, V]: log m_T of every next token at each completion position (``-inf`` where it gives none)."""
        ...


def tilted_target(ref_logits: Any, teacher_logp: Any, allowed: Any, lam: float) -> Any:
    """log q [..., V] over the allowed tokens: ``log_softmax(log π_ref + λ log m_T)``.

    ref_logits [..., V]: the reference model's logits (any scale: they are renormalised over ``allowed``);
    teacher_logp [..., V]: the teacher's log-probabilities of the next token (``-inf`` where it puts no mass);
    allowed [..., V] bool: the tokens the rollout constraint allows. A position where the teacher gives no
    allowed token any mass falls back to ``π_ref`` (the tilt is skipped there, not the position)."""
    import torch

    ref = torch.log_softmax(ref_logits.float().masked_fill(~allowed, MASKED), dim=-1)  # [..., V]
    has_teacher = torch.isfinite(teacher_logp) & allowed  # [..., V]
    teacher = teacher_logp.float().masked_fill(~has_teacher, MASKED)
    tilt = torch.where(has_teacher.any(-1, keepdim=True), lam * teacher, torch.zeros_like(teacher))
    return torch.log_softmax((ref + tilt).masked_fill(~allowed, MASKED), dim=-1)


def reverse_kl_per_token(policy_logits: Any, target_logq: Any, allowed: Any) -> Any:
    """KL(π_θ || q) at every position [...] = Σ_c π_θ(c) (log π_θ(c) − log q(c)) over the allowed tokens.

    policy_logits [..., V] (with grad), target_logq [..., V] (``tilted_target``, no grad), allowed [..., V]."""
    import torch

    logp = torch.log_softmax(policy_logits.float().masked_fill(~allowed, MASKED), dim=-1)  # [..., V]
    diff = torch.where(allowed, logp - target_logq, torch.zeros_like(logp))
    return (logp.exp() * diff).sum(-1)  # [...]


def distill_loss(
    policy_logits: Any, ref_logits: Any, teacher_logp: Any, allowed: Any, mask: Any, lam: float
) -> tuple[Any, dict[str, float]]:
    """Mean per-token reverse KL to the tilted target over the completion tokens, and its stats.

    policy_logits, ref_logits, teacher_logp [B, L, V]; allowed [B, L, V] bool; mask [B, L] (1 = a completion
    token). Returns (loss scalar, {"kl_target": mean KL(π_θ || q), "kl_ref": mean KL(π_θ || π_ref)})."""
    import torch

    with torch.no_grad():
        logq = tilted_target(ref_logits, teacher_logp, allowed, lam)  # [B, L, V]
        logref = tilted_target(ref_logits, torch.zeros_like(teacher_logp), allowed, 0.0)
    kl = reverse_kl_per_token(policy_logits, logq, allowed)  # [B, L]
    m = mask.float()
    denom = m.sum().clamp(min=1.0)
    loss = (kl * m).sum() / denom
    with torch.no_grad():
        kl_ref = (reverse_kl_per_token(policy_logits.detach(), logref, allowed) * m).sum() / denom
    return loss, {"kl_target": float(loss.detach()), "kl_ref": float(kl_ref)}


def forward_kl_per_token(logits: Any, teacher_logp: Any) -> tuple[Any, Any]:
    """KL(m_T || π_θ) at every position, for a teacher-forced (supervised) distillation loss, and where it
    applies: Σ_c m_T(c) (log m_T(c) − log π_θ(c)) over the tokens the teacher gives mass.

    logits [..., V] (with grad; softmax over the whole vocabulary), teacher_logp [..., V] (``-inf`` where the
    teacher gives none; a position with no finite entry has no target) -> (kl [...], has_target [...] bool)."""
    import torch

    has = torch.isfinite(teacher_logp)  # [..., V]
    logp = torch.log_softmax(logits.float(), dim=-1)  # [..., V]
    t = teacher_logp.float().masked_fill(~has, MASKED)
    kl = torch.where(has, t.exp() * (t - logp), torch.zeros_like(logp)).sum(-1)  # [...]
    return kl, has.any(-1)


def forward_distill_loss(
    policy_logits: Any, teacher_logp: Any, allowed: Any, mask: Any
) -> tuple[Any, dict[str, float]]:
    """Mean KL(m_T || π_θ) over the completion tokens where the teacher gives an allowed token mass, with both
    distributions renormalised over the allowed tokens (the constrained policy the rollouts sample from).

    policy_logits, teacher_logp [B, L, V] (``-inf`` where the teacher gives none); allowed [B, L, V] bool;
    mask [B, L] (1 = a completion token). Returns (loss scalar, {"kl_teacher": the loss, "target_frac": the
    share of completion tokens that had a target})."""
    import torch

    t = teacher_logp.float().masked_fill(~allowed, float("-inf"))  # [B, L, V]
    lse = torch.logsumexp(t, dim=-1, keepdim=True)  # [B, L, 1]: -inf where the teacher is silent
    t = torch.where(torch.isfinite(lse), t - lse, t)
    kl, has = forward_kl_per_token(policy_logits.float().masked_fill(~allowed, MASKED), t)  # [B, L] each
    m = mask.float() * has.float()
    loss = (kl * m).sum() / m.sum().clamp(min=1.0)
    frac = float(m.sum() / mask.float().sum().clamp(min=1.0))
    return loss, {"kl_teacher": float(loss.detach()), "target_frac": frac}
