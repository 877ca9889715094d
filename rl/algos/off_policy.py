"""Off-policy pieces of asynchronous rollouts: which batches to prefetch, how stale they are, and the
truncated importance-sampling (IS) weights that correct for it.

With ``rollout.mode=async`` the rollout workers generate batch ``b`` with the adapter of an earlier
step ``v <= b`` while the learner trains; batch ``b``'s *staleness* is ``b - v`` policy versions,
bounded by ``rollout.max_staleness``. The learner's current policy (π_θ at step b, the "old" policy
of the PPO ratio) differs from the sampling policy π_v, so each token's loss is weighted by

    w = clamp(exp(log π_θ(y_t) - log π_v(y_t)), max=cap)          (token_truncate, TIS)

the same math as TRL's ``vllm_importance_sampling_correction`` (modes token/sequence x truncate/mask).
All functions here are pure; shapes: N = samples in the batch (B*G), L = completion length.
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal

import torch
from torch import Tensor

ISMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
IS_MODES: tuple[str, ...] = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_weights(
    sampling_logps: Tensor,  # [N, L] log π_v(y_t) recorded by the rollout engine (NaN = unknown)
    current_logps: Tensor,  # [N, L] log π_θ(y_t) of the learner before this step's update
    mask: Tensor,  # [N, L] 1 = completion token that counts
    mode: ISMode = "token_truncate",
    cap: float = 3.0,
    floor: float | None = None,
) -> Tensor:  # [N, L] for token_* modes, [N, 1] for sequence_* modes
    """Truncated (``*_truncate``: clamp to [floor, cap]) or masked (``*_mask``: 0 outside) IS weights.

    Masked-out tokens and tokens whose sampling logprob is unknown (NaN) get a log-ratio of 0, i.e.
    weight 1 before truncation (TRL does the same). Sequence modes sum the token log-ratios.
    """
    if mode not in IS_MODES:
        raise ValueError(f"importance-sampling mode {mode!r} is not one of {', '.join(IS_MODES)}")
    log_ratio = torch.nan_to_num((current_logps - sampling_logps) * mask, nan=0.0)  # [N, L]
    if mode.startswith("sequence"):
        log_ratio = log_ratio.sum(dim=-1, keepdim=True)  # [N, 1]
    ratio = torch.exp(log_ratio)
    lo = -float("inf") if floor is None else floor
    if mode.endswith("truncate"):
        return ratio.clamp(min=floor, max=cap)
    return ratio.masked_fill((ratio < lo) | (ratio > cap), 0.0)


def prefetch_targets(step: int, submitted_upto: int, max_staleness: int, last_step: int) -> list[int]:
    """Batches to submit now, at learner step ``step`` (policy version ``step``).

    ``submitted_upto`` is the last batch already submitted (-1: none; after a restart, everything
    before ``step`` counts as done). Batches ``step .. step + max_staleness`` may be in flight, so the
    newest is generated ``max_staleness`` versions before it is trained; ``last_step`` caps the window
    (no batch past the run's end). Each batch is submitted once.
    """
    first = max(submitted_upto + 1, step)
    return list(range(first, min(step + max_staleness, last_step) + 1))


def step_prompt_indices(seed: int, step: int, num_items: int, per_step: int) -> list[int]:
    """Dataset indices of the ``per_step`` prompts of ``step``: a pure function of its arguments.

    Global position p = step * per_step + i walks through one seeded permutation per pass over the
    data (pass = p // num_items), so every prompt is used once per pass and any step's prompts are
    known in advance (async prefetch) and after a restart (resume).
    """
    if num_items < 1:
        raise ValueError("the training dataset is empty")
    out, cache = [], {}
    for p in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(p, num_items)
        if epoch not in cache:
            digest = hashlib.sha256(f"relay-order:{seed}:{epoch}".encode()).digest()
            order = list(range(num_items))
            random.Random(int.from_bytes(digest[:8], "little")).shuffle(order)
            cache[epoch] = order
        out.append(cache[epoch][pos])
    return out


class StepSampler(torch.utils.data.Sampler[int]):
    """Yields ``step_prompt_indices`` for steps 0..num_steps-1, each index ``repeats`` times in a row
    (TRL's GRPO groups: one prompt, ``num_generations`` consecutive samples)."""

    def __init__(self, seed: int, num_items: int, per_step: int, repeats: int, num_steps: int):
        self.seed, self.num_items, self.per_step = seed, num_items, per_step
        self.repeats, self.num_steps = repeats, num_steps

    def __len__(self) -> int:
        return self.num_steps * self.per_step * self.repeats

    def __iter__(self):
        for step in range(self.num_steps):
            for index in step_prompt_indices(self.seed, step, self.num_items, self.per_step):
                for _ in range(self.repeats):
                    yield index
