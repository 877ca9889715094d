"""vLLM rollout engine (GPU, the ``vllm`` extra): same contract as ``HFEngine``.

``generate(prompts, n, sampling, seeds) -> list[Rollout]`` with per-token logprobs and the adapter
version; ``load_adapter(version, tensors)`` loads only the LoRA tensors, as a new vLLM adapter id from
a versioned PEFT directory (the pinned vLLM loads LoRA from a path, not from in-memory tensors), and
evicts the previous one. ``sync="merged"`` is the fallback: W + scale * B @ A is computed from the
original weights and loaded into the model in place (no LoRA in vLLM at all).

All request building, output parsing, adapter packaging and constraint validation live in
``rl/rollout/vllm_glue.py`` (tested on CPU); this file only makes vLLM calls. Verified status: see
docs/scale_out.md.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from rl.rollout import vllm_glue as glue
from rl.rollout.hf import GenerateStats
from rl.rollout.types import Rollout, SamplingParams


class VLLMEngine:
    def __init__(
        self,
        model_path: str,
        lora: dict[str, Any],
        dtype: str = "bfloat16",
        torch_threads: int | None = None,  # accepted for engine_kwargs parity with hf; vLLM ignores it
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        sync: Literal["adapter", "merged"] = "adapter",
        adapter_root: str | None = None,
        constraint: dict[str, Any] | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        sleep_mode: bool = False,
        logits_processors: list | None = None,
    ):
        from vllm import LLM  # ImportError here when the vllm extra is missing

        if sync not in ("adapter", "merged"):
            raise ValueError(f"sync ({sync!r}) must be 'adapter' or 'merged'")
        self.model_path = model_path
        self.lora = dict(lora)
        self.sync = sync
        self.constraint = glue.constraint_kwargs(constraint)
        self.adapter_root = Path(adapter_root or tempfile.mkdtemp(prefix="relay-vllm-adapters-"))
        self.adapter_root.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {
            "model": model_path,
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
            "enforce_eager": enforce_eager,
            "logprobs_mode": glue.LOGPROBS_MODE,
            "max_logprobs": 1,
        }
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if sleep_mode:  # rollout.colocate: sleep() frees the GPU for the learner between generations
            kwargs["enable_sleep_mode"] = True
        # Relay's extra logits processors (e.g. the semantic-ID trie): one engine-level adapter class; the
        # specs travel with each request (SamplingParams.extra_args), built by vllm_glue.RequestProcessorBuilder.
        self.processor_args = glue.processor_extra_args(logits_processors)
        if self.processor_args:
            kwargs["logits_processors"] = [_relay_adapter_class()]
        if sync == "adapter":
            kwargs.update(enable_lora=True, max_loras=2, max_lora_rank=max(8, int(self.lora["r"])))
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_ids = self._eos_ids()
        self._version = -1
        self._asleep = False
        self._lora_request: Any = None
        self._last_tensors: dict[str, Any] = {}
        self._base_weights: dict[str, Any] | None = None  # merged mode: originals of adapted weights
        self.last_stats = GenerateStats()

    # ---- colocation ------------------------------------------------------------------------------
    @property
    def asleep(self) -> bool:
        return self._asleep

    def sleep(self) -> None:
        """Level 1 sleep: weights offloaded to CPU memory, KV cache discarded; LoRA adapters stay loaded."""
        if not self._asleep:
            self.llm.sleep(level=1)
        self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self.llm.reset_prefix_cache()  # the discarded KV cache must not be matched by prefix
        self._asleep = False

    # ---- adapter ---------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    def load_adapter(self, version: int, tensors: dict[str, Any]) -> None:
        if self.sync == "merged":
            self._load_merged(tensors)
        else:
            self._load_lora(version, tensors)
        self._last_tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}
        self._version = version

    def _load_lora(self, version: int, tensors: dict[str, Any]) -> None:
        from vllm.lora.request import LoRARequest

        config = glue.adapter_config(self.lora, tensors.keys(), self.model_path)
        path = glue.write_adapter_dir(self.adapter_root, version, tensors, config)
        new_id = glue.adapter_int_id(version)
        request = LoRARequest(lora_name=f"relay-v{version}", lora_int_id=new_id, lora_path=str(path))
        if new_id in self.llm.llm_engine.list_loras():  # reloading the same version: replace it
            self.llm.llm_engine.remove_lora(new_id)
        self.llm.llm_engine.add_lora(request)  # load now, not lazily on the first request
        for old in glue.adapters_to_evict(self.llm.llm_engine.list_loras(), new_id):
            self.llm.llm_engine.remove_lora(old)
        glue.prune_adapter_dirs(self.adapter_root, keep_version=version)
        self._lora_request = request

    def _load_merged(self, tensors: dict[str, Any]) -> None:
        names = list(glue.lora_pairs(tensors))
        if self._base_weights is None:  # the checkpoint's originals (HF names), so merges never accumulate
            self._base_weights = glue.read_base_weights(self.model_path, names)
        merged = glue.merged_weights(self._base_weights, tensors, self.lora)
        self.llm.collective_rpc(_load_weights, args=(list(merged.items()),))
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights

    def adapter_tensors(self) -> dict[str, Any]:
        return dict(self._last_tensors)

    # ---- generation ------------------------------------------------------------------------------
    def render(self, prompt: Any) -> list[int]:
        return glue.render_prompt(self.tokenizer, prompt)

    def generate(
        self, prompts: list, n: int, sampling: SamplingParams, seeds: list[int] | None = None
    ) -> list[Rollout]:
        from vllm.inputs import TokensPrompt

        problems = glue.check_sampling(sampling)
        if problems:
            raise ValueError("; ".join(problems))
        if self._asleep:
            raise RuntimeError("the engine is asleep (rollout.colocate); call wake_up() before generate")
        if seeds is None:
            seeds = [secrets.randbits(63) for _ in range(len(prompts) * n)]
        start = time.perf_counter()
        requests = glue.build_requests([self.render(p) for p in prompts], n, seeds)
        params = [self._params(sampling, r.seed) for r in requests]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=r.prompt_ids) for r in requests],
            params,
            lora_request=self._lora_request,
            use_tqdm=False,
        )
        rollouts = []
        for r, out in zip(requests, outputs, strict=True):
            comp = out.outputs[0]
            ids, lps, finish = glue.parse_completion(comp.token_ids, comp.logprobs, comp.finish_reason, self.eos_ids)
            rollouts.append(
                Rollout(r.prompt_index, r.sample_index, r.prompt_ids, ids, lps, comp.text, self._version, finish)
            )
        self.last_stats = GenerateStats(
            seconds=time.perf_counter() - start,
            rollouts=len(rollouts),
            completion_tokens=sum(len(x.completion_ids) for x in rollouts),
        )
        return rollouts

    def _params(self, sampling: SamplingParams, seed: int) -> Any:
        from vllm import SamplingParams as VSamplingParams

        kwargs = glue.sampling_kwargs(sampling, seed, self.eos_ids)
        if self.processor_args:
            kwargs["extra_args"] = dict(self.processor_args)
        if self.constraint:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(**self.constraint)
        return VSamplingParams(**kwargs)

    def _eos_ids(self) -> list[int]:
        from transformers import GenerationConfig

        ids: list[int] = []
        try:
            eos = GenerationConfig.from_pretrained(self.model_path).eos_token_id
            ids = [eos] if isinstance(eos, int) else list(eos or [])
        except OSError:
            pass
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        if not ids:
            raise ValueError(
                "the model has no eos_token_id (generation_config or tokenizer); set one in the checkpoint"
            )
        return ids


# Runs inside vLLM's worker processes through LLM.collective_rpc (``self`` is the worker). The model's
# load_weights takes Hugging Face names and maps them onto vLLM's fused layers (qkv_proj, gate_up_proj).
def _load_weights(self: Any, weights: list[tuple[str, Any]]) -> None:
    self.model_runner.model.load_weights(weights=weights)



# Relay's extra logits processors inside vLLM (V1 model runner): one engine-level class that vLLM loads in
# its worker processes (module-level, so it pickles by reference), applying per-request processors built
# by the tested glue from the specs in each request's extra_args. Not run here (no GPU); see docs/genrec.md.
try:
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor as _AdapterLogitsProcessor
except ImportError:  # the vllm extra is not installed: VLLMEngine cannot be built either
    _AdapterLogitsProcessor = None

if _AdapterLogitsProcessor is not None:

    class RelayLogitsProcessors(_AdapterLogitsProcessor):
        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool):
            from transformers import AutoTokenizer

            super().__init__(vllm_config, device, is_pin_memory)
            tokenizer = AutoTokenizer.from_pretrained(vllm_config.model_config.tokenizer)
            self._builder = glue.RequestProcessorBuilder(tokenizer)

        def is_argmax_invariant(self) -> bool:
            return False  # masking changes the argmax

        def new_req_logits_processor(self, params: Any) -> Any:
            return self._builder(getattr(params, "extra_args", None))


def _relay_adapter_class() -> type:
    if _AdapterLogitsProcessor is None:
        raise ImportError("vLLM's AdapterLogitsProcessor is not importable; install the vllm extra on a GPU machine")
    return RelayLogitsProcessors
