"""Every recipe in configs/ loads and validates (schema and env/reward references)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.config import load_config
from rl.preflight import preflight

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
# recipes whose data lives outside the repo (../shared/data) preflight on the bundled subset of the same format
BUNDLED = {"genrec_scientific.yaml": ["env.args.data.path=envs/data/scientific300/Scientific300.inter.json"]}


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.name) for p in CONFIGS])
def test_config_loads_and_preflights(path):
    cfg = load_config(path, BUNDLED.get(path.name, []))
    plan = preflight(cfg)
    assert len(plan.train_dataset) > 0
    assert plan.rewards
