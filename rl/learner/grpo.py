"""The GRPO learner: TRL's ``GRPOTrainer`` whose generation and rewards run in Ray actor pools.

The seam is TRL's ``rollout_func`` hook: each generation batch, Relay (1) ships the current LoRA
tensors to the rollout pool if the policy moved (one object-store put), (2) generates there with
per-(step, prompt, sample) seeds and the expected adapter version, so no worker can answer with a
stale adapter, and (3) hands TRL token ids and logprobs. Rewards are async functions that call the
reward pools, so TRL runs all components concurrently. Everything else (advantages, loss, KL to
the adapter-disabled base, optimizer, LoRA) is TRL's. When the rollout engines run logits processors
(the genrec trie), the learner's log-probs are taken under the same masks (``_constrained_logps``).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from rl.adapter import lora_state_dict
from rl.rollout.client import RolloutClient, rollout_metrics

logger = logging.getLogger(__name__)

MASKED_LOGIT = -1e9  # a token the rollout's processors forbid (finite, so entropies and 0 * logp stay defined)


class StepStats:
    """Relay-side numbers gathered during a step and merged into the trainer's log record."""

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = defaultdict(list)
        self.samples: list[tuple[str, str]] = []
        self.versions: list[int] = []  # adapter version of each sample of the latest batch (rollout order)

    def add(self, key: str, value: float) -> None:
        self._values[key].append(float(value))

    def flush(self) -> dict[str, float]:
        # Counters (failures, bytes) are summed over the logging window; timings are averaged.
        out = {}
        for key, vals in self._values.items():
            if key.endswith("_hash"):
                out[key] = vals[-1]
                continue
            if key.endswith(("_max", "_min")):  # extremes over the window (e.g. rollout/staleness_max)
                out[key] = max(vals) if key.endswith("_max") else min(vals)
                continue
            summed = key.endswith(("_failed", "_timeout", "_invalid", "_retried", "_bytes", "/tokens"))
            out[key] = sum(vals) if summed else sum(vals) / len(vals)
        self._values.clear()
        return out


# TRL GRPOTrainer methods RelayGRPOTrainer overrides, with the leading parameters the overrides rely on
# (checked against the installed TRL by tests/rl/learner/test_trl_seam.py: an upgrade that renames or
# reorders one fails there, in one obvious place). Everything else is TRL's own behaviour.
TRL_OVERRIDES: dict[str, tuple[str, ...]] = {
    "__init__": ("self", "model", "reward_funcs", "args", "train_dataset"),  # Relay's options (keywords) added
    "_get_train_sampler": ("self", "dataset"),  # async mode: the step-indexed prompt order
    "log": ("self", "logs", "start_time"),  # Relay's rollout/reward stats merged into each record
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),  # keep [B*G, F]
    "_generate_and_score_completions": ("self", "inputs"),  # other estimators; the on-policy mask
    "_compute_loss": ("self", "model", "inputs"),  # hands the batch to the loss's policy forward
    # the constrained path (_constrained_logps) also takes batch_size, compute_entropy and compute_aux_loss by name
    "_get_per_token_logps_and_entropies": (
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
    ),
}


class RelayGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that merges Relay's rollout/reward stats into each log record and can swap in
    another group-based advantage estimator (``rl.algos.advantages``: dr_grpo, rloo, reinforce_pp).

    TRL computes its own GRPO advantages; for another estimator the rewards TRL gathered are
    re-used and ``advantages`` replaced ([B*G] or token-level [B*G, L], which TRL's loss accepts).

    Asynchronous rollouts (``rl.learner.async_rollout``) pass ``step_sampler`` (a prompt order known
    in advance, so upcoming batches can be prefetched) and ``is_correction`` (truncated importance
    sampling, ``rl.algos.off_policy.importance_weights``). TRL's own IS correction only runs with
    ``use_vllm``, not for ``rollout_func`` output, so Relay folds the weights into the advantages:
    every TRL loss is linear in the advantage and the weights are >= 0, so ``w * loss(A) ==
    loss(w * A)`` token by token, which is exactly TRL's ``per_token_loss * importance_sampling_ratio``.

    Every generation batch, the first loss forward (the learner's log π_θ before this batch's update)
    is compared with the logprobs the rollout engine reported for the on-policy samples
    (``rl.algos.agreement``): ``rollout/logprob_diff_mean``, ``rollout/logprob_diff_max`` and
    ``rollout/mismatch_kl``. No extra forward pass is needed.
    """

    def __init__(
        self,
        *args: Any,
        relay_stats: StepStats,
        advantage_estimator: str | None = None,
        kl_coef: float = 0.0,
        step_sampler: Callable[[int], Any] | None = None,
        is_correction: str | None = None,
        is_cap: float = 3.0,
        logit_constraints: Sequence[Any] = (),
        token_teacher: Any = None,
        distill_coef: float = 0.0,
        distill_lambda: float = 1.0,
        distill_divergence: str = "reverse",
        **kwargs: Any,
    ):
        """TRL's arguments, plus Relay's options:

        ``relay_stats``: the rollout/reward stats the rollout and reward functions record (merged into each log);
        ``advantage_estimator``: an ``rl.algos.advantages`` name, None for TRL's own GRPO advantages;
        ``kl_coef``: REINFORCE++'s weight of the per-token KL folded into the reward;
        ``step_sampler``: async mode, ``len(train_dataset) -> rl.algos.off_policy.StepSampler`` (a prompt order
        known in advance); None: TRL's RepeatSampler;
        ``is_correction``/``is_cap``: an ``rl.algos.off_policy.IS_MODES`` entry and its weight cap; None: no
        IS weights;
        ``logit_constraints``: the rollout engines' processor factories (``rl.rollout.processors``, e.g. the
        genrec trie): the learner's log-probs are then taken under the same masks (``_constrained_logps``);
        ``token_teacher``/``distill_coef``/``distill_lambda``/``distill_divergence``: on-policy distillation
        (``rl.algos.distill``): the loss adds ``distill_coef`` x the per-token KL(π_θ || π_ref ·
        teacher^distill_lambda) on the rollouts, or, with ``distill_divergence="forward"``, KL(teacher || π_θ).
        """
        super().__init__(*args, **kwargs)
        self.relay_stats = relay_stats
        self.advantage_estimator = advantage_estimator
        self.kl_coef = kl_coef
        self.step_sampler = step_sampler(len(self.train_dataset)) if step_sampler is not None else None
        self.is_correction = is_correction
        self.is_cap = is_cap
        self.logit_constraints = list(logit_constraints)
        self.token_teacher, self.distill_coef, self.distill_lambda = token_teacher, distill_coef, distill_lambda
        self.distill_divergence = distill_divergence

    def _get_train_sampler(self, dataset=None):
        if self.step_sampler is not None:  # training only: evaluation has its own _get_eval_sampler
            return self.step_sampler
        return super()._get_train_sampler(dataset)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs or any(k.startswith("reward") for k in logs):
            logs.update(self.relay_stats.flush())
        super().log(logs, start_time)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = rewards_per_func  # [B*G, F], NaN = no score
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        import torch

        out = super()._generate_and_score_completions(inputs)
        if self.advantage_estimator is not None:
            self._replace_advantages(out)
        versions = self.relay_stats.versions  # per sample, as the rollout_func recorded them
        if out.get("sampling_per_token_logps") is not None and len(versions) == len(out["completion_ids"]):
            step = self.state.global_step
            out["rollout_on_policy"] = torch.tensor([v == step for v in versions], device=out["completion_ids"].device)
            self._agreement_pending = True  # the next loss forward is π_θ before this batch's update
        return out

    def _compute_loss(self, model, inputs):
        if self.is_correction is not None and inputs.get("sampling_per_token_logps") is None:
            raise RuntimeError("importance-sampling correction needs the rollout logprobs; the rollout_func gave none")
        self._loss_inputs = inputs  # picked up by the loss's own policy forward, below
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._loss_inputs = None
        if self.token_teacher is not None and self.distill_coef > 0:
            loss = loss + self.distill_coef * self._distill_loss(model, inputs)
        return loss

    def _distill_loss(self, model, inputs):
        """Per-token reverse KL to π_ref tilted by the env's token teacher (or the forward KL from the teacher),
        on this batch's completions (``rl.algos.distill``). Costs one more policy forward, and for the reverse
        KL a reference forward (adapter off)."""
        import torch

        from rl.algos.distill import distill_loss, forward_distill_loss
        from rl.rollout.processors import disallowed_tokens

        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)  # [B, T]
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        width = inputs["completion_ids"].size(1)  # L

        def logits_of(net):  # [B, L, V]: position j predicts completion token j
            out = net(input_ids=ids, attention_mask=mask, logits_to_keep=width + 1).logits
            return out[:, :-1].float() / self.temperature

        policy = logits_of(model)
        vocab = policy.size(-1)
        allowed = ~disallowed_tokens(self.logit_constraints, ids, width, vocab)  # [B, L, V]
        teacher = self.token_teacher.log_probs(ids, width, vocab).to(policy.device)  # [B, L, V]
        if self.distill_divergence == "forward":
            loss, stats = forward_distill_loss(policy, teacher, allowed, inputs["completion_mask"])
        else:
            with torch.no_grad(), self.accelerator.unwrap_model(model).disable_adapter():
                ref = logits_of(model)
            loss, stats = distill_loss(policy, ref, teacher, allowed, inputs["completion_mask"], self.distill_lambda)
        for key, value in stats.items():
            self.relay_stats.add(f"distill/{key}", value)
        return loss

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self.logit_constraints:
            out = self._constrained_logps(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        else:
            out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args,
                                                             **kwargs)  # fmt: skip
        inputs, self._loss_inputs = getattr(self, "_loss_inputs", None), None
        if inputs is not None:
            # TRL's _compute_loss runs the policy forward first and reads inputs["advantages"] after it.
            # With num_iterations=1 those logprobs, detached, are π_θ of this step: no extra forward.
            current = out[0].detach()  # [B*G, L]
            if getattr(self, "_agreement_pending", False):
                self._agreement_pending = False
                self._record_agreement(inputs, current)
            if self.is_correction is not None:
                self._apply_importance_weights(inputs, current)
        return out

    def _constrained_logps(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                           compute_entropy=False, compute_aux_loss=False, **extra):  # fmt: skip
        """TRL's (log-probs [B, L], entropies [B, L] | None, None) of the completion tokens, with every token the
        rollout's processors forbid masked out before the softmax.

        Without it the learner trains the unconstrained softmax while the engines sample from the masked one:
        a negative advantage then pushes probability onto tokens the sampler never emits, and with a dense
        reward that leak grew until the learner's log-probs were nats away from the engine's (docs/genrec.md).
        TRL's fused LM head never materialises the logits, so this path runs the plain forward instead.
        """
        import torch
        from trl.trainer.utils import entropy_from_logits, selective_log_softmax

        from rl.rollout.processors import disallowed_tokens

        if compute_aux_loss or any(v is not None for v in extra.values()):
            raise NotImplementedError("logits processors in the learner: text-only models without MoE aux loss only")
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]  # [b, T]
            with self.accelerator.autocast():
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1).logits
            logits = logits[:, -logits_to_keep - 1 : -1].float() / self.temperature  # [b, L, V]: j predicts token j
            forbidden = disallowed_tokens(self.logit_constraints, ids, logits_to_keep, logits.size(-1))  # [b, L, V]
            logits = logits.masked_fill(forbidden, MASKED_LOGIT)  # finite: p = 0 exactly, and 0 * logp stays 0
            logps.append(selective_log_softmax(logits, ids[:, -logits_to_keep:]))
            if compute_entropy:
                entropies.append(entropy_from_logits(logits))
        return torch.cat(logps), (torch.cat(entropies) if compute_entropy else None), None

    def _record_agreement(self, inputs, current) -> None:
        """Rollout engine vs learner logprobs of the on-policy samples (``rl.algos.agreement``)."""
        from rl.algos.agreement import logprob_agreement

        sampled, on_policy = inputs.get("sampling_per_token_logps"), inputs.get("rollout_on_policy")
        if sampled is None or on_policy is None:
            return
        mask = inputs["completion_mask"].float() * on_policy.float().unsqueeze(1)  # [B*G, L]
        got = logprob_agreement(sampled, current, mask)
        if got is not None:
            self.relay_stats.add("rollout/logprob_diff_mean", got["diff_mean"])
            self.relay_stats.add("rollout/logprob_diff_max", got["diff_max"])
            self.relay_stats.add("rollout/mismatch_kl", got["mismatch_kl"])

    def _apply_importance_weights(self, inputs, current) -> None:
        """Weight the advantages by truncated IS ratios π_θ / π_rollout (the rollout engine's logprobs)."""
        from rl.algos.off_policy import importance_weights

        sampled = inputs["sampling_per_token_logps"]  # [B*G, L]
        mask = inputs["completion_mask"].float()  # [B*G, L]
        weights = importance_weights(sampled, current, mask, self.is_correction, self.is_cap)  # [B*G, L] | [B*G, 1]
        adv = inputs["advantages"]
        inputs["advantages"] = (adv.unsqueeze(1) if adv.dim() == 1 else adv) * weights  # [B*G, L] | [B*G, 1]
        valid = weights.expand_as(mask)[mask.bool()]
        if valid.numel():
            self.relay_stats.add("rollout/is_weight_mean", valid.mean().item())
            self.relay_stats.add("rollout/is_weight_min", valid.min().item())
            self.relay_stats.add("rollout/is_weight_max", valid.max().item())

    def _replace_advantages(self, out) -> None:
        import torch

        from rl.algos.advantages import KL_IN_REWARD, compute_advantages

        per_func = self._last_rewards_per_func  # [B*G, F]
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)  # [B*G]
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
        mask = out["completion_mask"].float()  # [B*G, L]
        kl, options = None, {}
        if self.advantage_estimator in KL_IN_REWARD:
            kl = self._sampling_kl(out)  # [B*G, L]
            options["kl_coef"] = self.kl_coef
        out["advantages"] = compute_advantages(self.advantage_estimator, rewards, self.num_generations, mask, kl,
                                               **options)  # fmt: skip

    def _sampling_kl(self, out):
        """k1 KL of the sampled tokens to the reference (the base model: adapter disabled)."""
        import torch

        prompt_completion_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attention_mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        logits_to_keep = out["completion_ids"].size(1)
        model = self.accelerator.unwrap_model(self.model)
        with torch.no_grad(), model.disable_adapter():
            ref, _, _ = self._get_per_token_logps_and_entropies(
                self.model, prompt_completion_ids, attention_mask, logits_to_keep
            )
        sampled = out.get("sampling_per_token_logps")
        if sampled is None:
            with torch.no_grad():
                sampled, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, prompt_completion_ids, attention_mask, logits_to_keep
                )
        return torch.nan_to_num(sampled - ref) * out["completion_mask"]


def _completion_text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def record_rollouts(
    stats: StepStats, rollouts: list, step: int, prompts: list[Any], gen_seconds: float, tokenizer: Any
) -> None:
    """The per-step rollout metrics and TensorBoard samples (sync and async ``rollout_func`` alike);
    ``prompts`` are the distinct prompts ``rollouts`` index into."""
    for key, value in rollout_metrics(rollouts, step, gen_seconds).items():
        stats.add(key, value)
    stats.samples = [
        (json.dumps(prompts[r.prompt_index])[:2000], _completion_text(tokenizer, r.completion_ids))
        for r in rollouts[:4]
    ]
    stats.versions = [r.version for r in rollouts]


def rollout_output(rollouts: list) -> dict[str, list]:
    """What TRL's ``rollout_func`` returns: token ids and the rollout engine's logprobs."""
    return {
        "prompt_ids": [r.prompt_ids for r in rollouts],
        "completion_ids": [r.completion_ids for r in rollouts],
        "logprobs": [r.logprobs for r in rollouts],
    }


def make_rollout_func(client: RolloutClient, stats: StepStats):
    """TRL ``rollout_func`` on ``client``: wake the engines (colocated), sync the adapter if the policy
    moved, generate, put the engines back to sleep, record the step's rollout metrics.

    TRL passes the per-process prompts already repeated ``num_generations`` times in a row
    (its RepeatSampler); we generate each distinct prompt once with ``n = num_generations``.
    """

    def rollout_func(prompts: list[Any], trainer: GRPOTrainer) -> dict[str, list]:
        g = client.g
        if len(prompts) % g:
            raise RuntimeError(f"rollout_func got {len(prompts)} prompts, not a multiple of num_generations={g}")
        unique = prompts[::g]
        version = trainer.state.global_step
        acc = trainer.accelerator
        moved = client.wake_up(acc)  # {} unless colocated
        if client.version != version:
            moved.update(client.sync(version, lora_state_dict(trainer.model), acc))
        # rank r of a data-parallel learner holds global prompts r*len(unique) onwards
        rollouts, gen_seconds = client.generate(unique, version, offset=acc.process_index * len(unique))
        client.sleep(acc)
        for key, value in moved.items():
            stats.add(key, value)
        record_rollouts(stats, rollouts, version, unique, gen_seconds, trainer.processing_class)
        return rollout_output(rollouts)

    return rollout_func


def make_reward_func(pool, stats: StepStats):
    """An async TRL reward function backed by a ``RewardPool`` (TRL gathers all components concurrently),
    named like its component (``pool.spec.name``; TRL logs ``rewards/<name>/mean`` and ``/std``)."""
    name = pool.spec.name

    async def reward_func(prompts, completions, completion_ids=None, **columns):
        result = await pool.ascore(prompts, completions, completion_ids, **columns)
        for key, value in result.metrics(name).items():
            stats.add(key, value)
        return result.values

    reward_func.__name__ = name
    reward_func.__qualname__ = name
    return reward_func


class SamplesToTensorBoard(TrainerCallback):
    """Writes a few prompt/completion samples as TensorBoard text every ``every`` steps."""

    def __init__(self, logdir: str, stats: StepStats, every: int = 10):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(logdir)
        self.stats = stats
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if self.stats.samples and (state.global_step == 1 or state.global_step % self.every == 0):
            rows = "\n\n".join(f"**prompt** {p}\n\n**completion** {c}" for p, c in self.stats.samples)
            self.writer.add_text("samples", rows, state.global_step)
            self.writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        self.writer.close()


def grpo_args(cfg, output_dir: str, reward_weights: list[float]) -> GRPOConfig:
    """Map Relay's config onto TRL's GRPOConfig (one optimizer step per generation batch).

    TensorBoard's directory comes from the TENSORBOARD_LOGGING_DIR environment variable (transformers 5).
    """
    report_to = []
    if cfg.logging.tensorboard:
        report_to.append("tensorboard")
    if cfg.logging.wandb:
        report_to.append("wandb")
    return GRPOConfig(
        output_dir=output_dir,
        report_to=report_to,
        use_cpu=cfg.learner.device == "cpu",
        bf16=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_steps=cfg.learner.max_steps,
        per_device_train_batch_size=cfg.learner.batch_size,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=cfg.algorithm.num_generations,
        num_iterations=cfg.algorithm.num_iterations,
        max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k,
        beta=cfg.algorithm.beta,
        epsilon=cfg.algorithm.epsilon,
        loss_type=cfg.algorithm.loss_type,
        scale_rewards=cfg.algorithm.scale_rewards,
        reward_weights=reward_weights,
        learning_rate=cfg.learner.learning_rate,
        lr_scheduler_type=cfg.learner.lr_scheduler,
        warmup_steps=cfg.learner.warmup_steps,
        weight_decay=cfg.learner.weight_decay,
        max_grad_norm=cfg.learner.max_grad_norm,
        logging_steps=cfg.logging.log_every,
        # Checkpoints every N steps and always at the end (HF saves at max_steps with the "steps" strategy);
        # Relay's FinalizeCheckpoints marks each one complete and rotates, so HF keeps them all.
        save_strategy="steps",
        save_steps=cfg.checkpoint.every_steps or cfg.learner.max_steps,
        save_total_limit=None,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        log_completions=False,
        disable_tqdm=True,
        **sharding_args(cfg),
    )


def sharding_args(cfg) -> dict:
    """TrainingArguments for learner.strategy and learner.gradient_checkpointing: FSDP2 (accelerate) shards
    the model over the Ray Train workers; 'ddp' (and a single learner process) needs nothing beyond what
    accelerate does by default."""
    checkpointing = cfg.learner.gradient_checkpointing
    if cfg.learner.strategy != "fsdp" or cfg.learner.num_workers == 1:
        return {"gradient_checkpointing": checkpointing}
    # FSDP's own activation checkpointing replaces the trainer's (which would all-gather again in backward).
    return {
        "fsdp": True,
        "fsdp_config": {"version": 2, "activation_checkpointing": checkpointing, **cfg.learner.fsdp_config},
        "gradient_checkpointing": False,
    }
