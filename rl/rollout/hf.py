"""Hugging Face transformers rollout engine: base model + peft LoRA adapter, batched generation.

The CPU/debug engine (and the reference the vLLM engine is checked against). Sampling is seeded
per rollout through ``SeededGumbelSampler``, so results do not depend on batch composition.
``SamplingParams.beam_search``: each prompt's n rollouts are instead the n beams of one transformers
beam search (``_generate_beams``), with the same logits processors and no sampler.
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


def trim_at_eos(ids: list[int], eos_ids: list[int]) -> tuple[list[int], FinishReason]:
    """A generated row [T] cut after its first EOS (kept; the padding after it dropped) and why it ended."""
    stop_at = next((t for t, tok in enumerate(ids) if tok in eos_ids), None)
    if stop_at is None:
        return ids, "length"
    return ids[: stop_at + 1], "stop"


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
        rollouts: list[Rollout] = []
        if sampling.beam_search:  # seeds unused: beam search is deterministic
            step = max(1, self.batch_size // n) if self.batch_size else max(len(rendered), 1)  # prompts
            for i in range(0, len(rendered), step):
                rollouts.extend(self._generate_beams(range(i, min(i + step, len(rendered))), rendered, n, sampling))
        else:
            rows = [_Row(p, s, rendered[p], seeds[p * n + s]) for p in range(len(prompts)) for s in range(n)]
            step = self.batch_size or max(len(rows), 1)
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

    @torch.inference_mode()
    def _generate_beams(
        self, prompt_indices: range, rendered: list[list[int]], n: int, sampling: SamplingParams
    ) -> list[Rollout]:
        """``n`` beams of each prompt in ``prompt_indices``, prompt-major, best beam first (sample_index = rank).

        Transformers' beam search log-softmaxes the logits, runs the logits processors on those log-probs
        (the trie masks invalid tokens to -inf), and ranks beams by the summed result (``length_penalty=0``:
        the model's total log-probability of the sequence, the same ranking as ``rewards.rec.genrec_eval``).
        ``out.scores`` holds those processed log-probs per step; ``normalize_logits=True`` renormalises them
        over the tokens left allowed, so each recorded logprob is log_softmax(processed logits) at temperature
        1 of the chosen token, as the sampler records it.
        """
        from transformers import GenerationConfig, LogitsProcessorList

        input_ids, attention_mask = self._left_pad([rendered[p] for p in prompt_indices])  # [P, L]
        extra = [f.for_batch(input_ids.shape[1]) for f in self.processor_factories]
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=False,
            num_beams=n,
            num_return_sequences=n,
            early_stopping=True,
            length_penalty=0.0,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=LogitsProcessorList(extra),
        )
        vocab = self.model.config.get_text_config().vocab_size
        if out.scores[0].shape[-1] != vocab:  # compute_transition_scores reshapes by config.vocab_size
            raise RuntimeError(f"the model's logits have {out.scores[0].shape[-1]} columns but config.vocab_size "
                               f"is {vocab}; beam logprobs need them equal")  # fmt: skip
        logprobs = self.model.compute_transition_scores(
            out.sequences, out.scores, out.beam_indices, normalize_logits=True
        ).cpu()  # [P*n, T]
        completions = out.sequences[:, input_ids.shape[1] :].cpu()  # [P*n, T]
        rollouts = []
        for k, p in enumerate(prompt_indices):
            group = [  # beam j of prompt p is row k * n + j, best first
                self._to_rollout(_Row(p, j, rendered[p], seed=0), completions[k * n + j], None, logprobs[k * n + j])
                for j in range(n)
            ]
            distinct = len({tuple(r.completion_ids) for r in group})
            if distinct < n:
                raise RuntimeError(
                    f"beam search found {distinct} distinct completions of prompt {p}, fewer than n = {n} beams: the "
                    "logits processors (e.g. the trie) allow fewer completions than that; lower "
                    "algorithm.num_generations or turn rollout.beam_search off"
                )
            rollouts.extend(group)
        return rollouts

    def _to_rollout(
        self, row: _Row, completion: torch.Tensor, chosen: torch.Tensor | None, logprobs: torch.Tensor
    ) -> Rollout:
        """``chosen``: the sampler's picks, checked against ``completion`` (None: no sampler, beam search)."""
        ids, finish = trim_at_eos(completion.tolist(), self.eos_ids)
        if chosen is not None and chosen[: len(ids)].tolist() != ids:
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
