"""RL algorithm math: advantage estimators, PPO losses, value head and logprob forwards.

Pure torch functions with shapes in their docstrings; see ``docs/algorithms.md`` for the formulas.
``rl.algos.value_head`` imports nothing from transformers/peft; it works on any HF-style model.
"""

from rl.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    KL_IN_REWARD,
    compute_advantages,
    dr_grpo,
    group_stats,
    grpo,
    reinforce_pp,
    rloo,
)
from rl.algos.ppo import (
    approx_kl,
    clipped_policy_loss,
    clipped_value_loss,
    discounted_returns,
    gae,
    kl_per_token,
    last_token_index,
    masked_mean,
    masked_sum,
    masked_var,
    outcome_to_token_rewards,
    whiten,
)
from rl.algos.value_head import (
    ValueHead,
    policy_and_values,
    reference_logprobs,
    selective_log_softmax,
    token_logprobs,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_IN_REWARD",
    "ValueHead",
    "approx_kl",
    "clipped_policy_loss",
    "clipped_value_loss",
    "compute_advantages",
    "discounted_returns",
    "dr_grpo",
    "gae",
    "group_stats",
    "grpo",
    "kl_per_token",
    "last_token_index",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "outcome_to_token_rewards",
    "policy_and_values",
    "reference_logprobs",
    "reinforce_pp",
    "rloo",
    "selective_log_softmax",
    "token_logprobs",
    "whiten",
]
