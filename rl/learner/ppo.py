"""The PPO learner: one readable loop (setup / train / cleanup) on the same base as GRPO.

TRL removed ``PPOTrainer`` in 1.13, so Relay runs PPO itself, reusing everything around the
learner: the rollout pool (generation in Ray actors), the reward pools, ``metrics.jsonl``,
TensorBoard, the progress bar and marker-validated checkpoints. The math lives in
``rl.algos.ppo`` and ``rl.algos.value_head``; this file only wires it together.

One step (``PPORecipe.train_step``)::

    sync adapter v = step - 1 to the pool (one ray.put)
    generate G completions for each of B prompts    seeds sample_seed(cfg.seed, v, i, j)
    score with every reward pool                    total = sum_k w_k * r_k; any None -> unscored
    ONE forward -> old logprobs + values            policy_and_values          [N, L] each
    reference logprobs (adapter disabled)           reference_logprobs         [N, L]
    token rewards = outcome at last token - kl_coef * KL(pi || ref)
    advantages, returns = GAE(gamma, lam)           optionally whitened
    ppo_epochs x minibatches: clipped policy loss + vf_coef * clipped value loss, AdamW step

The policy is ``AutoModelForCausalLM`` + a peft LoRA adapter; the value head is a linear layer on
the policy's last hidden states, trained by the same optimizer as the LoRA parameters. The
reference policy is the same model with the adapter disabled: one copy of the base weights.

Unscored samples (a reward component returned ``None``) are dropped from the loss mask: with a
value baseline they would otherwise still get non-zero advantages (see ``rl.algos.ppo``). This is
stricter than TRL's GRPO, which sums the components that did score; for PPO a missing component
(a timed-out image scorer, say) is a failure, not a zero.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from rl.adapter import lora_state_dict
from rl.algos.agreement import logprob_agreement
from rl.algos.ppo import (
    approx_kl,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_per_token,
    masked_mean,
    masked_var,
    outcome_to_token_rewards,
    whiten,
)
from rl.algos.value_head import ValueHead, policy_and_values, reference_logprobs
from rl.checkpoint import finalize, rotate
from rl.config import PPOConfig
from rl.learner.session import Session
from rl.rollout.client import RolloutClient, rollout_metrics, rollout_sampling
from rl.rollout.types import Rollout

logger = logging.getLogger(__name__)

__all__ = ["PPOArgs", "PPOLearner", "PPORecipe", "append_record", "combine_rewards", "ppo_args", "run_ppo"]


PPOArgs = PPOConfig  # the settings live in rl/config.py (algorithm.ppo)


def ppo_args(cfg) -> PPOArgs:
    """The run's PPO settings: ``cfg.algorithm.ppo`` when the config has it, else the defaults."""
    section = getattr(cfg.algorithm, "ppo", None)
    if section is None:
        return PPOArgs()
    if isinstance(section, PPOArgs):
        return section
    data = section.model_dump() if isinstance(section, BaseModel) else dict(section)
    return PPOArgs.model_validate(data)


# ----------------------------------------------------------------------------------------------
# small pieces (pure, testable on their own)
# ----------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; a missing value is null
    return value


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one ``{"step": ..., ...}`` line to metrics.jsonl (same format as the GRPO learner's)."""
    with Path(path).open("a") as f:
        f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")


def combine_rewards(per_component: list[list[float | None]], weights: list[float]) -> torch.Tensor:
    """Weighted sum of the components per sample; NaN where any component gave ``None``. -> [N] float32."""
    n = len(per_component[0]) if per_component else 0
    total = torch.zeros(n, dtype=torch.float32)
    for values, w in zip(per_component, weights, strict=True):
        col = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)
        total = total + w * col  # NaN propagates: a sample missing any component is unscored
    return total


def prompt_indices(step: int, per_step: int, dataset_size: int, seed: int) -> list[int]:
    """Dataset rows for 1-based ``step``: a fresh seeded permutation per epoch, batches may straddle epochs.

    Depends only on (step, seed): a resumed run draws the same prompts without saved sampler state.
    """
    out, perms = [], {}
    for pos in range((step - 1) * per_step, step * per_step):
        epoch, k = divmod(pos, dataset_size)
        if epoch not in perms:
            perms[epoch] = random.Random(f"relay-ppo-data-{seed}-{epoch}").sample(range(dataset_size), dataset_size)
        out.append(perms[epoch][k])
    return out


@dataclass
class Batch:
    """Rollouts packed for the learner: prompts left-padded, completions right-padded."""

    input_ids: torch.Tensor  # [N, T]
    attention_mask: torch.Tensor  # [N, T]
    completion_mask: torch.Tensor  # [N, L] 1 = generated token of a scored sample
    rollout_logprobs: torch.Tensor  # [N, L] logprobs the rollout engine recorded
    rewards: torch.Tensor  # [N] total reward, NaN = unscored
    L: int  # completion width (logits_to_keep)


def collate(rollouts: list[Rollout], rewards: torch.Tensor, pad_id: int) -> Batch:
    """Pack rollouts into tensors; unscored samples (NaN reward) get an all-zero completion mask."""
    n = len(rollouts)
    P = max(len(r.prompt_ids) for r in rollouts)
    L = max(len(r.completion_ids) for r in rollouts)
    input_ids = torch.full((n, P + L), pad_id, dtype=torch.long)  # [N, T]
    attention = torch.zeros((n, P + L), dtype=torch.long)  # [N, T]
    cmask = torch.zeros((n, L), dtype=torch.float32)  # [N, L]
    old = torch.zeros((n, L), dtype=torch.float32)  # [N, L]
    for i, r in enumerate(rollouts):
        p, c = len(r.prompt_ids), len(r.completion_ids)
        input_ids[i, P - p : P] = torch.tensor(r.prompt_ids)
        input_ids[i, P : P + c] = torch.tensor(r.completion_ids)
        attention[i, P - p : P + c] = 1
        cmask[i, :c] = 1.0
        old[i, :c] = torch.tensor(r.logprobs, dtype=torch.float32)
    scored = (~torch.isnan(rewards)).to(torch.float32)  # [N]
    return Batch(input_ids, attention, cmask * scored[:, None], old, rewards, L)


def _completion(prompt: Any, text: str) -> Any:
    """What reward functions receive, as TRL gives it: chat messages for chat prompts, else text."""
    if isinstance(prompt, str):
        return text
    if prompt and prompt[-1].get("role") == "assistant":  # a prefilled answer is continued
        return [{"role": "assistant", "content": prompt[-1].get("content", "") + text}]
    return [{"role": "assistant", "content": text}]


def _device(cfg) -> torch.device:
    if cfg.learner.device == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# the recipe
# ----------------------------------------------------------------------------------------------


class PPORecipe:
    """setup(resume_from) -> train() -> cleanup(); ``train_step`` is one PPO iteration."""

    def __init__(self, session: Session, args: PPOArgs | None = None):
        cfg = self.cfg = session.cfg
        self.session = session
        self.plan = session.plan
        self.run_dir = Path(session.run_dir)
        self.rollout_pool = session.rollout_pool
        self.reward_pools = list(session.reward_pools)
        self.args = args or ppo_args(cfg)
        self.G = cfg.algorithm.num_generations
        self.prompts_per_step = cfg.learner.batch_size // self.G
        self.sampling = rollout_sampling(cfg.rollout)
        self.client = RolloutClient(self.rollout_pool, self.sampling, self.G, cfg.seed)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.step = 0  # optimizer steps done (= the adapter version the pool gets next)
        self.writer = None
        self.bar = None
        self._samples: list[tuple[str, str]] = []

    # ---- setup -----------------------------------------------------------------------------------
    def setup(self, model_path: str, resume_from: Path | None = None) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

        cfg = self.cfg
        _seed_everything(cfg.seed)
        self.device = _device(cfg)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, cfg.model.dtype))
        self.model = get_peft_model(base, LoraConfig(**self.session.lora)).to(self.device)
        hidden = self.model.config.hidden_size
        self.value_head = ValueHead(hidden, init_std=self.args.value_init_std).to(self.device)
        # What policy_and_values calls on the hidden states [B, L, H] -> [B, L].
        self.critic = self.value_head if self.args.value_shares_trunk else _DetachedInput(self.value_head)
        lora = [p for p in self.model.parameters() if p.requires_grad]
        self.params = lora + list(self.value_head.parameters())
        groups = [{"params": lora}, {"params": list(self.value_head.parameters())}]
        if self.args.value_lr is not None:
            groups[1]["lr"] = self.args.value_lr
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.learner.learning_rate, weight_decay=cfg.learner.weight_decay)
        self.scheduler = get_scheduler(
            cfg.learner.lr_scheduler,
            self.optimizer,
            num_warmup_steps=cfg.learner.warmup_steps,
            num_training_steps=cfg.learner.max_steps,
        )
        if resume_from is not None:
            self.load_checkpoint(Path(resume_from))
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        if cfg.logging.wandb:
            logger.warning("logging.wandb: the PPO learner does not log to W&B yet; metrics.jsonl and TensorBoard only")
        if cfg.logging.progress_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=cfg.learner.max_steps, initial=self.step, desc="relay train (ppo)",
                            dynamic_ncols=True)  # fmt: skip

    # ---- train -----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        start = self.step
        every = cfg.checkpoint.every_steps or cfg.learner.max_steps
        while self.step < cfg.learner.max_steps:
            record = self.train_step()
            if self.step % cfg.logging.log_every == 0:
                self.log(record)
            if self.step % every == 0 or self.step == cfg.learner.max_steps:
                self.save_checkpoint()
        return {"steps": self.step, "resumed_from": start or None, "seconds": round(time.perf_counter() - t0, 2)}

    def train_step(self) -> dict[str, Any]:
        t_step = time.perf_counter()
        stats: dict[str, Any] = {}
        rows = [self.plan.train_dataset[i] for i in prompt_indices(
            self.step + 1, self.prompts_per_step, len(self.plan.train_dataset), self.cfg.seed)]  # fmt: skip
        rollouts = self.generate(rows, stats)
        rewards = self.score(rows, rollouts, stats)
        batch = collate(rollouts, rewards, self.pad_id)
        exp = self.experience(batch, stats)
        self.update(batch, exp, stats)
        self.scheduler.step()
        self.step += 1
        n_tok = int(batch.attention_mask.sum())
        stats["step_time"] = time.perf_counter() - t_step
        stats["tokens_per_second"] = n_tok / max(stats["step_time"], 1e-9)
        return {"step": self.step, **stats}

    def generate(self, rows: list[dict], stats: dict) -> list[Rollout]:
        """Sync the adapter (version = optimizer steps so far), then sample G completions per prompt."""
        version = self.step
        stats.update(self.client.sync(version, lora_state_dict(self.model)))
        prompts = [r["prompt"] for r in rows]
        rollouts, seconds = self.client.generate(prompts, version)
        stats.update(rollout_metrics(rollouts, version, seconds))
        n_tokens = stats["rollout/tokens"]
        stats["completions/mean_length"] = n_tokens / len(rollouts)
        stats["completions/clipped_ratio"] = sum(r.finish_reason == "length" for r in rollouts) / len(rollouts)
        self._samples = [(json.dumps(prompts[r.prompt_index])[:2000], r.text) for r in rollouts[:4]]
        return rollouts

    def score(self, rows: list[dict], rollouts: list[Rollout], stats: dict) -> torch.Tensor:
        """Every reward pool scores the batch concurrently; returns the weighted total [N] (NaN = unscored)."""
        prompts = [rows[r.prompt_index]["prompt"] for r in rollouts]
        completions = [_completion(p, r.text) for p, r in zip(prompts, rollouts, strict=True)]
        completion_ids = [r.completion_ids for r in rollouts]
        columns = {k: [rows[r.prompt_index][k] for r in rollouts] for k in rows[0] if k != "prompt"}

        async def score_all():
            return await asyncio.gather(
                *(pool.ascore(prompts, completions, completion_ids, **columns) for pool in self.reward_pools)
            )

        results = asyncio.run(score_all())
        for pool, res in zip(self.reward_pools, results, strict=True):
            name = pool.spec.name
            scored = [v for v in res.values if v is not None]
            stats[f"rewards/{name}/mean"] = float(np.mean(scored)) if scored else math.nan  # as TRL logs them
            stats[f"rewards/{name}/std"] = float(np.std(scored, ddof=1)) if len(scored) > 1 else 0.0
            stats.update(res.metrics(name))
        total = combine_rewards([list(r.values) for r in results], [p.spec.weight for p in self.reward_pools])
        valid = total[~torch.isnan(total)]
        stats["reward"] = float(valid.mean()) if len(valid) else math.nan
        stats["reward_std"] = float(valid.std()) if len(valid) > 1 else 0.0
        stats["n_unscored"] = int(torch.isnan(total).sum())
        return total

    @torch.no_grad()
    def experience(self, batch: Batch, stats: dict) -> dict[str, torch.Tensor]:
        """Old logprobs and values (one forward), reference logprobs, KL-penalised token rewards, GAE."""
        a, dev, temp = self.args, self.device, self.sampling.logprob_temperature
        ids, attn = batch.input_ids.to(dev), batch.attention_mask.to(dev)  # [N, T]
        mask = batch.completion_mask.to(dev)  # [N, L]
        self.model.eval()
        self.value_head.eval()
        old_logp, old_values = policy_and_values(self.model, self.critic, ids, attn, batch.L, temp)  # [N, L]
        ref_logp = reference_logprobs(self.model, ids, attn, batch.L, temp)  # [N, L]
        kl = kl_per_token(old_logp, ref_logp, a.kl_estimator)  # [N, L]
        token_rewards = outcome_to_token_rewards(batch.rewards.to(dev), mask, kl=kl, kl_coef=a.kl_coef)  # [N, L]
        advantages, returns = gae(token_rewards, old_values, mask, gamma=a.gamma, lam=a.lam)  # [N, L]
        if a.whiten_advantages:
            advantages = whiten(advantages, mask)
        # Same tokens, same adapter: the learner should reproduce the engine's logprobs closely.
        agreement = logprob_agreement(batch.rollout_logprobs, old_logp.cpu(), mask.cpu())  # as GRPO logs it
        if agreement is not None:
            stats["rollout/logprob_diff_mean"] = agreement["diff_mean"]
            stats["rollout/logprob_diff_max"] = agreement["diff_max"]
            stats["rollout/mismatch_kl"] = agreement["mismatch_kl"]
        stats["kl"] = float(approx_kl(old_logp, ref_logp, mask, "k3"))  # k3 as GRPO's "kl", comparable
        stats["kl_penalty"] = float(masked_mean(a.kl_coef * kl, mask))
        stats["values/mean"] = float(masked_mean(old_values, mask))
        stats["returns/mean"] = float(masked_mean(returns, mask))
        var_r = masked_var(returns, mask)
        explained = 1 - masked_var(returns - old_values, mask) / var_r if var_r > 0 else math.nan
        stats["values/explained_variance"] = float(explained)
        return {"logp": old_logp, "values": old_values, "advantages": advantages, "returns": returns, "mask": mask}

    def update(self, batch: Batch, exp: dict[str, torch.Tensor], stats: dict) -> None:
        """``ppo_epochs`` passes of minibatch updates on the clipped policy + value loss."""
        a, cfg, dev = self.args, self.cfg, self.device
        n = batch.input_ids.shape[0]
        mb = min(a.minibatch_size or n, n)
        ids, attn = batch.input_ids.to(dev), batch.attention_mask.to(dev)
        sums: dict[str, float] = {}
        updates = 0
        if float(exp["mask"].sum()) == 0:
            logger.warning("step %d: no scored sample in the batch; skipping the update", self.step + 1)
        self.model.train()
        self.value_head.train()
        for epoch in range(a.ppo_epochs if float(exp["mask"].sum()) > 0 else 0):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(cfg.seed, self.step, epoch)))
            for start in range(0, n, mb):
                idx = order[start : start + mb].to(dev)
                logp, values = policy_and_values(self.model, self.critic, ids[idx], attn[idx], batch.L,
                                                 self.sampling.logprob_temperature)  # fmt: skip
                m = exp["mask"][idx]  # [mb, L]
                pg_loss, clipfrac = clipped_policy_loss(logp, exp["logp"][idx], exp["advantages"][idx], m,
                                                        clip_eps=cfg.algorithm.epsilon)  # fmt: skip
                vf_loss = clipped_value_loss(values, exp["values"][idx], exp["returns"][idx], m,
                                             clip_eps=a.cliprange_value)  # fmt: skip
                loss = pg_loss + a.vf_coef * vf_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.learner.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    drift = approx_kl(logp.detach(), exp["logp"][idx], m, "k3")
                for key, val in (("loss", loss), ("policy_loss", pg_loss), ("value_loss", vf_loss),
                                 ("clipfrac", clipfrac), ("policy_drift_kl", drift), ("grad_norm", grad_norm)):  # fmt: skip
                    sums[key] = sums.get(key, 0.0) + float(val.detach())
                updates += 1
        for key in ("loss", "policy_loss", "value_loss", "clipfrac", "policy_drift_kl", "grad_norm"):
            stats[key] = sums[key] / updates if updates else math.nan
        stats["learning_rate"] = self.scheduler.get_last_lr()[0]

    # ---- observability ---------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        append_record(self.metrics_path, record)
        step = record["step"]
        if self.writer is not None:
            for key, value in record.items():
                numeric = isinstance(value, (int, float)) and math.isfinite(value)
                if numeric and key != "step" and not key.endswith("_hash"):
                    self.writer.add_scalar(f"train/{key}", value, step)
            if self._samples and (step == 1 or step % 10 == 0):
                rows = "\n\n".join(f"**prompt** {p}\n\n**completion** {c}" for p, c in self._samples)
                self.writer.add_text("samples", rows, step)
            self.writer.flush()
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            shown = {"reward": record.get("reward"), "kl": record.get("kl"), "tok/s": record.get("tokens_per_second")}
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if isinstance(v, (int, float))})

    # ---- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """checkpoint-N/: PEFT adapter, value head, optimizer, scheduler, RNG states, step; then the marker."""
        from safetensors.torch import save_file

        ckpt = self.ckpt_root / f"checkpoint-{self.step}"
        ckpt.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(ckpt))  # adapter_config.json + adapter_model.safetensors
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                  str(ckpt / "value_head.safetensors"))  # fmt: skip
        torch.save(self.optimizer.state_dict(), ckpt / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), ckpt / "scheduler.pt")
        torch.save(_rng_state(), ckpt / "rng_state.pth")
        state = {"global_step": self.step, "algorithm": "ppo", "max_steps": self.cfg.learner.max_steps}
        (ckpt / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
        extra = {"relay_config.yaml": self.run_dir / "config.yaml", "versions.json": self.run_dir / "versions.json"}
        finalize(ckpt, self.step, extra)
        rotate(self.ckpt_root, self.cfg.checkpoint.keep)
        logger.info("checkpoint %s saved", ckpt)
        return ckpt

    def load_checkpoint(self, ckpt: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = json.loads((ckpt / "trainer_state.json").read_text())
        if state.get("algorithm") != "ppo":
            raise ValueError(f"{ckpt}: not a PPO checkpoint (algorithm {state.get('algorithm')!r}); resume it with "
                             "the algorithm that wrote it")  # fmt: skip
        dev = self.device
        adapter = load_file(str(ckpt / "adapter_model.safetensors"), device=str(dev))
        result = set_peft_model_state_dict(self.model, adapter)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{ckpt}: adapter keys do not match this model ({result.unexpected_keys[:3]})")
        self.value_head.load_state_dict(load_file(str(ckpt / "value_head.safetensors"), device=str(dev)))
        self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=dev, weights_only=True))
        self.scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        _set_rng_state(torch.load(ckpt / "rng_state.pth", weights_only=False))  # our own file: numpy state inside
        self.step = int(state["global_step"])
        logger.info("resumed from %s at step %d", ckpt, self.step)

    # ---- cleanup ---------------------------------------------------------------------------------
    def save_final(self, summary: dict[str, Any]) -> None:
        self.model.save_pretrained(str(self.run_dir / "adapter"))
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def cleanup(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class _DetachedInput(torch.nn.Module):
    """Runs ``head`` on detached inputs: its loss trains the head only, not the layers below."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden.detach())


def _mix(*parts: int) -> int:
    return zlib.crc32(json.dumps(parts).encode())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PPOLearner:
    """The ``Learner`` for ``algorithm.name: ppo``."""

    def train(self, session: Session) -> dict[str, Any]:
        return run_ppo(session)


def run_ppo(session: Session, args: PPOArgs | None = None) -> dict[str, Any]:
    """Train ``session`` with PPO: its rollout pool generates, its reward pools (``rewards.pool.RewardPool``) score,
    from its base model (the one the rollout pool was built with). Writes metrics.jsonl, TensorBoard,
    checkpoints/checkpoint-N, adapter/ and summary.json; returns the summary.
    """
    recipe = PPORecipe(session, args)
    try:
        recipe.setup(session.model_path, session.resume_from)
        summary = recipe.train()
        recipe.save_final(summary)
        logger.info("finished: %s", summary)
    finally:
        recipe.cleanup()
    return summary
