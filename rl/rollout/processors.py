"""Extra logits processors for rollout engines, declared as plain data so they ship to Ray actors.

A spec is ``("package.module:factory", {kwargs})`` (a 2-item list after a YAML/JSON round trip).
``factory(tokenizer, **kwargs)`` runs once per engine (it may load files, build tries) and returns a
*processor factory*: an object with

- ``for_batch(prompt_length: int) -> transformers.LogitsProcessor``: the HF engine builds one per
  generate batch with the padded prompt width, and places it *before* ``SeededGumbelSampler`` (which
  must stay last: it samples from, and records log-probs of, the processed logits);
- ``for_request() -> Callable[[Sequence[int], Tensor], Tensor]`` (optional): a per-request
  ``(output_token_ids, logits [V]) -> logits`` for the vLLM engine (see ``rl/rollout/vllm_glue.py``).
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
