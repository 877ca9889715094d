"""``relay eval CONFIG_OR_RUN_DIR``: score the start policy and the trained policy on the env's eval set.

The policies are generated with the same ``HFEngine`` the rollout actors use (greedy decoding),
in-process: evaluation needs no cluster. The env decides what is measured (``Env.evaluate``);
this module loads the policies, writes ``eval.json`` and prints the table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rl.atomic import atomic_write_text
from rl.config import ConfigError, RelayConfig, load_config, validate

logger = logging.getLogger(__name__)

Generate = Callable[[list[Any]], list[str]]


def load_adapter_tensors(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        raise ConfigError([f"{adapter_dir}: no adapter_model.safetensors; is this a finished run directory?"])
    return load_file(str(path))


def policy(cfg: RelayConfig, model_path: str, adapter_dir: Path | None = None, batch_size: int = 64) -> Generate:
    """A greedy ``generate(prompts) -> texts`` for ``model_path`` (+ a saved LoRA adapter)."""
    from rl.adapter import saved_lora_kwargs
    from rl.rollout.hf import HFEngine
    from rl.rollout.types import SamplingParams

    lora = cfg.lora.peft_kwargs() if adapter_dir is None else saved_lora_kwargs(cfg, adapter_dir)
    engine = HFEngine(model_path, lora=lora, dtype=cfg.model.dtype)
    if adapter_dir is not None:
        engine.load_adapter(0, load_adapter_tensors(adapter_dir))
    sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=0.0)

    def generate(prompts: list[Any]) -> list[str]:
        texts: list[str] = []
        for i in range(0, len(prompts), batch_size):
            texts += [r.text for r in engine.generate(prompts[i : i + batch_size], 1, sampling)]
        return texts

    generate.engine = engine  # type: ignore[attr-defined]  # for envs that decode their own way (beam search)
    generate.model_path = model_path  # type: ignore[attr-defined]  # where the run's files are (envs.genrec)
    return generate


def _policies_for(target: Path, overrides: list[str]) -> tuple[RelayConfig, dict[str, Generate], Path]:
    from rl.base_model import run_base_model

    if target.is_dir():
        config_path = target / "config.yaml"
        if not config_path.is_file():
            raise ConfigError([f"{target}: not a run directory (no config.yaml); pass a run dir or a config file"])
        data = yaml.safe_load(config_path.read_text())
        from rl.config import apply_overrides

        cfg = validate(apply_overrides(data, overrides), source=str(config_path))
        start_model = run_base_model(cfg, target)
        policies = {"start": policy(cfg, start_model, batch_size=cfg.eval.batch_size)}
        if (target / "adapter").is_dir():
            policies["trained"] = policy(cfg, start_model, target / "adapter", batch_size=cfg.eval.batch_size)
        return cfg, policies, target
    cfg = load_config(target, overrides)
    out = Path(tempfile.mkdtemp(prefix=f"relay-eval-{cfg.name}-"))
    return cfg, {"start": policy(cfg, run_base_model(cfg, out), batch_size=cfg.eval.batch_size)}, out


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Metrics as rows, policies as columns; then one line per row that carries ``ci95`` intervals."""
    names = list(results)
    metrics: list[str] = []
    for row in results.values():
        metrics += [m for m, v in row.items() if m not in metrics and isinstance(v, (int, float))]
    width = max([len(m) for m in metrics] + [6])
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{n:>9}" for n in names)]
    for m in metrics:
        cells = []
        for n in names:
            v = results[n].get(m)
            cells.append(f"{v:>9.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else f"{'-':>9}")
        lines.append(f"{m:<{width}}  " + "  ".join(cells))
    for n in names:  # a row may carry intervals: {"ci95": {metric: [lo, hi]}} (e.g. genrec's rl-sft)
        ci = results[n].get("ci95")
        if isinstance(ci, dict) and ci:
            parts = [f"{m} {results[n].get(m, math.nan):+.3f} [{lo:+.3f}, {hi:+.3f}]" for m, (lo, hi) in ci.items()]
            lines.append(f"{n} 95% CI: " + "; ".join(parts))
    return "\n".join(lines)


def eval_out_dir(run_dir: Path, overrides: list[str], max_prompts: int | None) -> Path:
    """Where an evaluation of a run goes: the run directory itself for the run's own eval set, and
    ``RUN_DIR/eval-<8 hex>/`` (a hash of the overrides and --max-prompts) for any other, so evaluating a
    hidden prompt set never overwrites the run's ``eval.json``."""
    if not overrides and max_prompts is None:
        return run_dir
    key = "\n".join([*overrides, f"max_prompts={max_prompts}"])
    return run_dir / f"eval-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def run_eval(
    target: str | Path, overrides: list[str] | None = None, max_prompts: int | None = None, out: Path | None = None
) -> dict:
    """Evaluate and write ``eval.json`` (and the env's eval files) into ``out``; by default the run
    directory (``eval_out_dir``), or a temp dir for a bare config."""
    from rl.env_api import build_env
    from rl.process_setup import quiet_libraries

    quiet_libraries()
    overrides = list(overrides or [])
    cfg, policies, out_dir = _policies_for(Path(target), overrides)
    if out is not None:
        out_dir = out
    elif Path(target).is_dir():
        out_dir = eval_out_dir(Path(target), overrides, max_prompts)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = build_env(cfg.env.name, cfg.env.args, cfg.seed)
    max_prompts = max_prompts or cfg.eval.max_prompts
    results = env.evaluate(policies, out_dir, max_prompts=max_prompts)
    atomic_write_text(out_dir / "eval.json", json.dumps(results, indent=2) + "\n")
    protocol = env.eval_protocol(max_prompts)
    if out_dir != Path(target):  # say what this evaluation was, next to it
        record = {"target": str(target), "overrides": overrides, "max_prompts": max_prompts, "protocol": protocol}
        atomic_write_text(out_dir / "eval_args.json", json.dumps(record, indent=2) + "\n")
    if protocol:
        print(f"protocol: {protocol}")
    print(format_table(results))
    print(f"eval.json written to {out_dir / 'eval.json'}")
    return results
