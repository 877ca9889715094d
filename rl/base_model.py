"""Which model a run's processes load: the user's, a tiny one built into the run dir, or the SFT warm start."""

from __future__ import annotations

from pathlib import Path

from rl.config import ConfigError, RelayConfig
from rl.env_api import Env, build_env


def resolve_model(cfg: RelayConfig, run_dir: Path) -> str:
    """The model path every process loads: a tiny model built into the run dir, a packaged model's
    cached conversion (made on first use), or the user's."""
    from rl import packaged_models

    if packaged_models.is_packaged(cfg.model.name):
        try:
            return str(packaged_models.materialise(cfg.model.name, cfg.model.cache_dir))
        except packaged_models.PackagedModelError as exc:
            raise ConfigError([str(exc)]) from None
    if cfg.model.name != "tiny":
        return cfg.model.name
    from rl.tiny_model import TinyModelSpec, build_tiny_model

    target = run_dir / "base_model"
    if not (target / "config.json").exists():
        build_tiny_model(target, TinyModelSpec(**cfg.model.tiny.model_dump()))
    return str(target)


def run_base_model(cfg: RelayConfig, run_dir: Path, env: Env | None = None) -> str:
    """The model a run's adapter sits on: its SFT warm start if it made one, else the base model as
    the env prepared it (``Env.prepare_model``, idempotent)."""
    sft = run_dir / "sft_model"
    if (sft / "config.json").exists():
        return str(sft)
    env = env or build_env(cfg.env.name, cfg.env.args, cfg.seed)
    return env.prepare_model(resolve_model(cfg, run_dir), run_dir)
