"""Learners (TRL-based GRPO family, SFT warm start, PPO, the data-parallel wrapper).

Relay generates in its own rollout actors (``rl/rollout/``), never through TRL's in-process vLLM
integration, yet TRL imports vLLM at module import whenever it is installed (``trl.generation``),
which costs every learner process ~20-30 s of CPU on 2 cores. So TRL is told vLLM is absent before any
TRL trainer module is imported; TRL's ``use_vllm`` paths are not used by Relay (``grpo_args`` never
sets them).
"""

from __future__ import annotations

import sys


def hide_vllm_from_trl() -> None:
    """Make TRL's ``is_vllm_available()`` false; must run before ``trl.trainer`` modules are imported."""
    if any(m.startswith(("trl.trainer", "trl.generation")) for m in sys.modules):
        return  # too late to matter (already imported with whatever it found); leave TRL alone
    import importlib

    importlib.import_module("trl.import_utils").is_vllm_available = lambda min_version=None: False


hide_vllm_from_trl()
