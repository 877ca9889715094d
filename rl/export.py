"""``relay export``: a run's checkpoint as a plain PEFT adapter directory, or merged into its base model."""

from __future__ import annotations

import shutil
from pathlib import Path

from rl.checkpoint import checkpoints, latest_valid, problems
from rl.config import ConfigError

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def export(run_dir: str | Path, out_dir: str | Path, step: int | None = None, merge: bool = False) -> Path:
    run = Path(run_dir)
    root = run / "checkpoints"
    if step is None:
        ckpt = latest_valid(root)
        if ckpt is None:
            raise ConfigError([f"{run}: no valid checkpoint to export"])
    else:
        found = dict(checkpoints(root))
        if step not in found:
            raise ConfigError([f"--checkpoint {step}: not in {root} (have: {sorted(found) or 'none'})"])
        ckpt = found[step]
        if issues := problems(ckpt):
            raise ConfigError([f"--checkpoint {step}: {'; '.join(issues)}"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not merge:
        for name in _ADAPTER_FILES:
            shutil.copyfile(ckpt / name, out / name)
        return out
    import yaml
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.base_model import run_base_model
    from rl.config import validate

    base = run_base_model(validate(yaml.safe_load((run / "config.yaml").read_text())), run)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(ckpt))
    model.merge_and_unload().save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out
