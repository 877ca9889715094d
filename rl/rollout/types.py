"""Plain data that crosses the rollout boundary (engine -> worker -> pool -> learner)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How completions are sampled; the same meaning for every engine (hf, vllm)."""

    max_new_tokens: int  # hard cap on completion length; hitting it gives finish_reason "length"
    temperature: float = 1.0  # logits are divided by this; 0 means greedy (logprobs then use temperature 1)
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens with probability >= top_p; 1 = off
    top_k: int = 0  # keep only the k most likely tokens; 0 = off
    # n beams per prompt instead of n samples (MiniOneRec's GRPO groups): constrained beam search returns the
    # n best distinct completions, deterministic (seeds unused), sample_index = beam rank (0 = best by the model's
    # summed log-probability). Needs temperature 1 and no top_k/top_p: beam search scores log_softmax(logits)
    # at temperature 1 and truncates nothing, so other values would change nothing but the logprobs. hf only.
    beam_search: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens ({self.max_new_tokens}) must be >= 1")
        if self.temperature < 0:
            problems.append(f"temperature ({self.temperature}) must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p ({self.top_p}) must be in (0, 1]; use 1 to turn it off")
        if self.top_k < 0:
            problems.append(f"top_k ({self.top_k}) must be >= 0; use 0 to turn it off")
        if self.beam_search and (self.temperature != 1 or self.top_p < 1 or self.top_k):
            problems.append(
                f"beam_search ranks completions by their log-probability at temperature 1 without truncation; "
                f"temperature ({self.temperature}), top_p ({self.top_p}) and top_k ({self.top_k}) must be 1, 1 and 0"
            )
        if problems:
            raise ValueError("invalid SamplingParams: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def logprob_temperature(self) -> float:
        """The temperature logprobs are computed at (1 for greedy decoding)."""
        return 1.0 if self.greedy else self.temperature


@dataclass
class Rollout:
    """One sampled completion of one prompt."""

    prompt_index: int  # index into the prompt list of the request this rollout answers
    sample_index: int  # 0..n-1 among the n samples of that prompt (with beam_search: the beam rank, 0 = best)
    prompt_ids: list[int]  # the rendered prompt's token ids (no padding)
    completion_ids: list[int]  # sampled ids; ends with EOS when finish_reason == "stop" (TRL expects it)
    logprobs: list[float]  # log p(token) under log_softmax(logits / temperature), one per completion id
    text: str  # completion decoded without special tokens
    version: int  # adapter version of the policy that sampled it (-1 = base model, no adapter loaded)
    finish_reason: FinishReason  # "stop": emitted EOS; "length": hit max_new_tokens


class StaleAdapterError(RuntimeError):
    """A worker was asked to sample for adapter version v but holds another one (on-policy guarantee)."""


@runtime_checkable
class RolloutEngine(Protocol):
    """What a ``RolloutWorker`` needs from an engine (``rl.rollout.hf.HFEngine``, ``rl.rollout.vllm.VLLMEngine``,
    or a ``module:Class`` of a user's): the same prompts, seeds and adapter give the same contract
    (``tests/rl/rollout/test_engine_contract.py``)."""

    eos_ids: list[int]  # token ids that end a completion (``eos_token_ids``)
    last_stats: Any  # the last generate call's timing (tokens, seconds)

    @property
    def version(self) -> int: ...  # the loaded adapter version; -1 = the base model

    @property
    def asleep(self) -> bool: ...

    def generate(
        self, prompts: Sequence[Any], n: int, sampling: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[Rollout]: ...  # n rollouts per prompt, prompt-major; seeds: one per rollout

    def load_adapter(self, version: int, tensors: dict[str, Any]) -> None: ...  # all LoRA tensors, or raise

    def adapter_tensors(self) -> dict[str, Any]: ...  # the loaded LoRA tensors (the learner's names)

    def render(self, prompt: Any) -> list[int]: ...  # a prompt (text or chat messages) -> token ids

    def sleep(self) -> None: ...  # rollout.colocate: free the device for the learner

    def wake_up(self) -> None: ...


def eos_token_ids(generation_eos: int | Sequence[int] | None, tokenizer_eos: int | None) -> list[int]:
    """The ids that end a completion: the generation config's EOS id(s), then the tokenizer's if it is not
    among them. Both engines use this, so a checkpoint ends completions at the same tokens in hf and vllm."""
    ids = [generation_eos] if isinstance(generation_eos, int) else list(generation_eos or [])
    if tokenizer_eos is not None and tokenizer_eos not in ids:
        ids.append(tokenizer_eos)
    if not ids:
        raise ValueError("the model has no eos_token_id (generation_config or tokenizer); set one in the checkpoint")
    return ids
