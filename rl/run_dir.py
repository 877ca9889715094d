"""The run directory: its creation, what goes into it before the learner starts (config, versions, log
file, data report), and which config changes a resumed run may make."""

from __future__ import annotations

import json
import logging
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from rl.atomic import atomic_write_text
from rl.config import ConfigError, RelayConfig

logger = logging.getLogger("relay")


def default_run_dir(cfg: RelayConfig) -> Path:
    """Where a run goes without ``--run-dir``: the config's ``run_dir``, else ``runs/<name>-<timestamp>``."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.name}-{stamp}"


def create_run_dir(path: Path) -> Path:
    """A fresh run directory; refuses one that already holds a run."""
    if (path / "config.yaml").exists():
        raise ConfigError([f"--run-dir {str(path)!r} already holds a run; pick a new directory"])
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            [f"--run-dir {str(path)!r} is not writable ({exc.strerror}); choose a writable path"]
        ) from None
    return path


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("relay-rl", "torch", "transformers", "trl", "peft", "ray", "datasets", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_yaml(path: Path, data: dict) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def setup_file_logging(run_dir: Path, level: str) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "relay.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, logging.getLevelName(level)))
    return handler


# Fields that may differ between a run and its resumption without changing what it computes.
SAFE_TO_CHANGE = ("learner.max_steps", "logging.", "checkpoint.", "eval.", "cluster.", "run_dir", "name")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def config_changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every field that differs."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def write_data_report(env: Any, run_path: Path) -> dict | None:
    """``RUN_DIR/data_report.json``: what the env's loaders skipped (``env.args.data.on_error: skip``)."""
    report = env.data_report()
    if report is None:
        return None
    atomic_write_text(run_path / "data_report.json", json.dumps(report, indent=2) + "\n")
    if report.get("skipped_lines"):
        msg = f"data: skipped {report['skipped_lines']} malformed line(s) {report.get('skipped_per_file', {})}"
        logger.warning("%s; see %s", msg, run_path / "data_report.json")
        print(f"relay: {msg}; see {run_path / 'data_report.json'}")
    return report
