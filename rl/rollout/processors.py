"""Extra logits processors for rollout engines, declared as plain data so they ship to Ray actors.

A spec is ``("package.module:factory", {kwargs})`` (a 2-item list after a YAML/JSON round trip).
``factory(tokenizer, **kwargs)`` runs once per engine (it may load files, build tries) and returns a
*processor factory*: an object with

- ``for_batch(prompt_length: int) -> transformers.LogitsProcessor``: the HF engine builds one per
  generate batch with the padded prompt width, and places it *before* ``SeededGumbelSampler`` (which
  must stay last: it samples from, and records log-probs of, the processed logits);
- ``for_request() -> Callable[[Sequence[int], Tensor], Tensor]`` (optional): a per-request
  ``(output_token_ids, logits [V]) -> logits`` for the vLLM engine (see ``rl/rollout/vllm_glue.py``).

The GRPO learner applies the same processors (``disallowed_tokens``) when it computes the policy's
log-probs, so the policy it trains is the one the engines sampled from: a token a processor sets to
-inf has probability 0 in both, and no probability can leak to tokens the sampler never emits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rl.registry import import_object

Spec = tuple[str, dict[str, Any]]


def normalize_specs(specs: Sequence[Any] | None) -> list[Spec]:
    """``[("mod:fn", {kwargs}), ...]`` from tuples, 2-lists or bare import strings; clear errors otherwise."""
    out: list[Spec] = []
    for i, spec in enumerate(specs or []):
        if isinstance(spec, str):
            spec = (spec, {})
        if (
            not isinstance(spec, (list, tuple))
            or len(spec) != 2
            or not isinstance(spec[0], str)
            or not isinstance(spec[1], dict)
        ):
            raise ValueError(
                f"logits_processors[{i}] ({spec!r}): expected ('package.module:factory', {{kwargs}}); "
                "give an import string and a dict of keyword arguments"
            )
        out.append((spec[0], dict(spec[1])))
    return out


def build_factories(specs: Sequence[Any] | None, tokenizer: Any) -> list[Any]:
    """One processor factory per spec (``factory(tokenizer, **kwargs)``), checked for ``for_batch``."""
    out = []
    for i, (target, kwargs) in enumerate(normalize_specs(specs)):
        factory = import_object(target, what=f"logits_processors[{i}]")(tokenizer, **kwargs)
        if not callable(getattr(factory, "for_batch", None)):
            raise TypeError(
                f"logits_processors[{i}] ({target!r}) returned {type(factory).__name__}, which has no "
                "for_batch(prompt_length); return an object with for_batch (and for_request for vLLM)"
            )
        out.append(factory)
    return out


def disallowed_tokens(factories: Sequence[Any], input_ids: Any, logits_to_keep: int, vocab_size: int) -> Any:
    """Where the processors forbid each token at each completion position.

    input_ids [B, T]: the left-padded prompt (width ``T - L``) then the completion (``L = logits_to_keep``)
    -> bool [B, L, V], True = forbidden. At position j every processor sees the ids before completion
    token j, as during generation; a token is forbidden where a processor sets its score to -inf (other
    changes to the scores are not constraints and are not applied).
    """
    import torch

    batch, width = input_ids.shape
    prompt = width - logits_to_keep
    procs = [f.for_batch(prompt) for f in factories]
    out = torch.zeros(batch, logits_to_keep, vocab_size, dtype=torch.bool, device=input_ids.device)
    for j in range(logits_to_keep):
        scores = torch.zeros(batch, vocab_size, device=input_ids.device)  # [B, V]
        for proc in procs:
            scores = proc(input_ids[:, : prompt + j], scores)
        out[:, j] = torch.isneginf(scores)
    return out
