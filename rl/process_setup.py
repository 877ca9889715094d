"""Per-process setup of every process that trains or evaluates: quiet libraries, torch threads."""

from __future__ import annotations

from rl.config import RelayConfig


def quiet_libraries() -> None:
    """Keep the console to Relay's progress bar: no per-file loading bars or deprecation chatter."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def setup_learner_process(cfg: RelayConfig) -> None:
    """Quiet libraries and learner.torch_threads, in every process that trains (driver or Ray Train rank)."""
    import torch

    quiet_libraries()
    if cfg.learner.torch_threads:
        torch.set_num_threads(cfg.learner.torch_threads)
