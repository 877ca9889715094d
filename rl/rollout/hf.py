"""Hugging Face transformers rollout engine: base model + peft LoRA adapter, batched generation.

The CPU/debug engine (and the reference the vLLM engine is checked against). Sampling is seeded
per rollout through ``SeededGumbelSampler``, so results do not depend on batch composition.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import torch

from rl.adapter import lora_state_dict
from rl.rollout.sampling import SeededGumbelSampler
from rl.rollout.types import FinishReason, Rollout, SamplingParams, eos_token_ids

Message = dict[str, str]
Prompt = str | list[Message]  # plain text, or chat messages rendered with the chat template

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class GenerateStats:
    """What the last ``generate`` call did."""

    seconds: float = 0.0
    rollouts: int = 0
    completion_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Row:
    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    seed: int


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"dtype {name!r} is not supported; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


class HFEngine:
    """``generate(prompts, n, sampling, seeds) -> list[Rollout]`` and ``load_adapter(version, tensors)``.

    ``version`` is -1 until the first ``load_adapter``: the freshly initialised LoRA (B = 0) makes the
    policy equal to the base model, which is what an un-updated learner samples from too.
    """

    def __init__(
        self,
        model_path: str,
        lora: dict[str, Any],
        dtype: str = "float32",
        device: str = "cpu",
        torch_threads: int | None = None,
        batch_size: int | None = None,
        logits_processors: list | None = None,
    ):
        """``logits_processors``: ``[("module:factory", kwargs), ...]`` (``rl/rollout/processors.py``):
        built once here with this engine's tokenizer, instantiated per generate batch, applied in order
        before the seeded sampler."""
        from peft import LoraConfig, get_peft_model
        from peft import get_peft_model_state_dict as _peft_state
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size ({batch_size}) must be >= 1, or None for one batch per call")
        self.device = torch.device(device)
        self.batch_size = batch_size
        # Local directory or hub id: the same from_pretrained path.
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=_dtype(dtype)).to(self.device)
        # The learner's LoraConfig, so its get_peft_model_state_dict keys are ours.
        self.model = get_peft_model(base, LoraConfig(**{"task_type": "CAUSAL_LM", **lora})).eval()
        self._lora_keys = frozenset(_peft_state(self.model).keys())
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._version = -1
        self._asleep = False
        self.last_stats = GenerateStats()
        from rl.rollout.processors import build_factories

        self.processor_factories = build_factories(logits_processors, self.tokenizer)

    # ---- colocation ------------------------------------------------------------------------------
    @property
    def asleep(self) -> bool:
        return self._asleep

    def sleep(self) -> None:
        """Free the device for the learner (``rollout.colocate``): the weights move to CPU memory."""
        if not self._asleep and self.device.type != "cpu":
            self.model.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self._asleep = True

    def wake_up(self) -> None:
        """Back on the device, with any adapter loaded while asleep."""
        if self._asleep and self.device.type != "cpu":
            self.model.to(self.device)
        self._asleep = False

    # ---- adapter ---------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    def load_adapter(self, version: int, tensors: dict[str, torch.Tensor]) -> None:
        """Load the learner's LoRA tensors (all of them: a partial load would mix two policies)."""
        from peft import set_peft_model_state_dict

        keys = set(tensors)
        if keys != self._lora_keys:
            missing, extra = sorted(self._lora_keys - keys), sorted(keys - self._lora_keys)
            raise ValueError(
                f"adapter version {version} does not match this engine's LoRA layout: missing {missing[:3]} "
                f"({len(missing)}), unexpected {extra[:3]} ({len(extra)}); the learner and rollout workers "
                "must use the same base model and LoraConfig (r, target_modules)"
            )
        with torch.no_grad():
            set_peft_model_state_dict(self.model, tensors)
        self._version = version

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        return lora_state_dict(self.model)

    # ---- generation ------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt. Chat messages ending with an assistant turn are continued, not closed."""
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not prompt:
            raise ValueError("empty chat prompt: give at least one message")
        prefill = prompt[-1].get("role") == "assistant"
        text = self.tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=not prefill, continue_final_message=prefill
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]  # the template has the specials

    def _render_checked(self, index: int, prompt: Prompt) -> list[int]:
        ids = self.render(prompt)
        if not ids:
            raise ValueError(f"prompt {index} renders to no tokens; give non-empty text")
        return ids

    def generate(
        self, prompts: list[Prompt], n: int, sampling: SamplingParams, seeds: list[int] | None = None
    ) -> list[Rollout]:
        """``len(prompts) * n`` rollouts, prompt-major (prompt 0's n samples first)."""
        if n < 1:
            raise ValueError(f"n ({n}) must be >= 1")
        if self._asleep:
            raise RuntimeError("the engine is asleep (rollout.colocate); call wake_up() before generate")
        if seeds is None:
            seeds = [secrets.randbits(63) for _ in range(len(prompts) * n)]
        if len(seeds) != len(prompts) * n:
            raise ValueError(
                f"seeds has {len(seeds)} entries; need one per rollout: len(prompts) * n = {len(prompts) * n}"
            )
        start = time.perf_counter()
        rendered = [self._render_checked(i, p) for i, p in enumerate(prompts)]
        rows = [_Row(p, s, rendered[p], seeds[p * n + s]) for p in range(len(prompts)) for s in range(n)]
        step = self.batch_size or max(len(rows), 1)
        rollouts: list[Rollout] = []
        for i in range(0, len(rows), step):
            rollouts.extend(self._generate_batch(rows[i : i + step], sampling))
        self.last_stats = GenerateStats(
            seconds=time.perf_counter() - start,
            rollouts=len(rollouts),
            completion_tokens=sum(len(r.completion_ids) for r in rollouts),
        )
        return rollouts

    @torch.inference_mode()
    def _generate_batch(self, rows: list[_Row], sampling: SamplingParams) -> list[Rollout]:
        from transformers import GenerationConfig, LogitsProcessorList

        input_ids, attention_mask = self._left_pad([r.prompt_ids for r in rows])  # [B, L]
        sampler = SeededGumbelSampler([r.seed for r in rows], input_ids.shape[1], sampling)
        extra = [f.for_batch(input_ids.shape[1]) for f in self.processor_factories]
        # A clean config: the checkpoint's own defaults (repetition_penalty, top_k, ...) must not
        # change the sampling distribution behind the learner's back. Greedy over Gumbel-perturbed logits.
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
        )
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([*extra, sampler]),  # the sampler stays last
        )
        completions = out.sequences[:, input_ids.shape[1] :].cpu()  # [B, T]
        chosen, logprobs = sampler.recorded()  # [B, T] each
        return [self._to_rollout(r, completions[i], chosen[i].cpu(), logprobs[i].cpu()) for i, r in enumerate(rows)]

    def _to_rollout(self, row: _Row, completion: torch.Tensor, chosen: torch.Tensor, logprobs: torch.Tensor) -> Rollout:
        ids = completion.tolist()  # [T]
        stop_at = next((t for t, tok in enumerate(ids) if tok in self.eos_ids), None)
        finish: FinishReason
        if stop_at is None:
            finish = "length"
        else:
            ids, finish = ids[: stop_at + 1], "stop"  # keep the EOS, drop the padding after it
        if chosen[: len(ids)].tolist() != ids:
            raise RuntimeError(
                "generate picked tokens other than the seeded sampler's argmax; another logits processor "
                "or a generation_config override is active"
            )
        return Rollout(
            prompt_index=row.prompt_index,
            sample_index=row.sample_index,
            prompt_ids=list(row.prompt_ids),
            completion_ids=ids,
            logprobs=logprobs[: len(ids)].tolist(),
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            version=self._version,
            finish_reason=finish,
        )

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)  # [B, L]
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)  # [B, L]
        for i, seq in enumerate(sequences):
            if seq:
                input_ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                attention_mask[i, width - len(seq) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _eos_ids(self) -> list[int]:
        return eos_token_ids(self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)
