"""Where a run directory goes."""

from __future__ import annotations

from pathlib import Path

from rl.config import load_config
from rl.run_dir import default_run_dir

REPO = Path(__file__).resolve().parents[2]


def test_the_configs_run_dir_is_used_without_the_flag(tmp_path):
    cfg = load_config(REPO / "configs" / "letters.yaml", [f"run_dir={tmp_path / 'mine'}"])
    assert default_run_dir(cfg) == tmp_path / "mine"
    unnamed = default_run_dir(load_config(REPO / "configs" / "letters.yaml", []))
    assert unnamed.parent == Path("runs") and unnamed.name.startswith(f"{cfg.name}-")
