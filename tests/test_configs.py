"""Every recipe in configs/ loads and validates (schema and env/reward references)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.config import load_config
from rl.preflight import preflight

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.name) for p in CONFIGS])
def test_config_loads_and_preflights(path):
    cfg = load_config(path)
    plan = preflight(cfg)
    assert len(plan.train_dataset) > 0
    assert plan.rewards
