"""Checkpoints that are either complete and valid or ignored, and what resuming needs.

The trainer (HF/TRL) writes ``checkpoint-N/`` (LoRA adapter, optimizer, scheduler, RNG states,
trainer state with the data position). Relay then adds the resolved config and package versions
and, last, a marker listing every file's size and SHA-256. A checkpoint without a marker that
matches its files (a crash mid-save, a truncated copy) is reported and skipped. Old checkpoints
are removed only after a newer one is complete.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from rl.atomic import atomic_write_text
from rl.manifest import file_entries, manifest_problems

logger = logging.getLogger(__name__)

MARKER = "relay_checkpoint.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def _files(ckpt: Path) -> list[Path]:
    return sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != MARKER)


def finalize(ckpt: Path, step: int, extra_files: dict[str, Path] | None = None) -> None:
    """Copy ``extra_files`` in, then write the marker (atomically) that makes ``ckpt`` valid."""
    for name, src in (extra_files or {}).items():
        if src.exists():
            shutil.copyfile(src, ckpt / name)
    manifest = {
        "step": step,
        "files": file_entries(ckpt, _files(ckpt)),
    }
    atomic_write_text(ckpt / MARKER, json.dumps(manifest, indent=1))


def problems(ckpt: Path) -> list[str]:
    """Why ``ckpt`` is not a usable checkpoint (empty when it is)."""
    marker = ckpt / MARKER
    if not marker.is_file():
        return [f"{ckpt.name}: no {MARKER} (the save did not finish)"]
    try:
        manifest = json.loads(marker.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return [f"{ckpt.name}: {MARKER} is unreadable"]
    return [f"{ckpt.name}: {p}" for p in manifest_problems(ckpt, files)]


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """``checkpoint-N`` directories under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))]
    return sorted(found, reverse=True)


def latest_valid(root: Path, quarantine: Path | None = None) -> Path | None:
    """The newest valid checkpoint; invalid newer ones are reported and moved to ``quarantine``."""
    for _, ckpt in checkpoints(root):
        issues = problems(ckpt)
        if not issues:
            return ckpt
        logger.warning("skipping checkpoint %s: %s", ckpt, "; ".join(issues))
        print(f"relay: skipping invalid checkpoint {ckpt}: {'; '.join(issues)}")
        if quarantine is not None:
            quarantine.mkdir(parents=True, exist_ok=True)
            ckpt.rename(quarantine / ckpt.name)
    return None


def rotate(root: Path, keep: int, protect: Path | None = None) -> None:
    """Keep the ``keep`` newest valid checkpoints (and ``protect``, the best one); never touch one that is
    not yet finalized."""
    valid = [p for _, p in checkpoints(root) if (p / MARKER).is_file()]
    for old in valid[keep:]:
        if protect is None or old.resolve() != protect.resolve():
            shutil.rmtree(old, ignore_errors=True)


BEST_FILE = "best_checkpoint.json"
EVAL_HISTORY = "eval_history.jsonl"  # one row per periodic eval (rl.learner.periodic_eval)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a .jsonl file (none if it is missing); a line cut by a crash is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def best_checkpoint(root: Path, history: list[dict], metric: str, mode: str = "max") -> tuple[Path, int, float] | None:
    """(checkpoint, step, value): the finalized checkpoint whose step's eval row (``history``, rows of
    eval_history.jsonl) has the best ``metric``; ties go to the earlier step. None: no evaluated checkpoint."""
    by_step = {int(r["step"]): r[metric] for r in history if isinstance(r.get(metric), (int, float))}
    best = None
    for step, ckpt in sorted(checkpoints(root)):
        if step in by_step and (ckpt / MARKER).is_file():
            value = float(by_step[step])
            if best is None or (value > best[2] if mode == "max" else value < best[2]):
                best = (ckpt, step, value)
    return best


class FinalizeCheckpoints(TrainerCallback):
    """After the trainer writes ``checkpoint-N``: add config/versions, write the marker, rotate.

    ``keep_best`` (metric, mode): the checkpoint best by that eval metric (RUN_DIR/eval_history.jsonl) is
    kept out of rotation and recorded in RUN_DIR/best_checkpoint.json."""

    def __init__(self, run_dir: Path, keep: int, keep_best: tuple[str, str] | None = None):
        self.run_dir = run_dir
        self.keep = keep
        self.keep_best = keep_best

    def _best(self, root: Path) -> Path | None:
        if self.keep_best is None:
            return None
        metric, mode = self.keep_best
        best = best_checkpoint(root, read_jsonl(self.run_dir / EVAL_HISTORY), metric, mode)
        if best is None:
            return None
        ckpt, step, value = best
        record = {"metric": metric, "mode": mode, "step": step, "value": value, "checkpoint": str(ckpt)}
        atomic_write_text(self.run_dir / BEST_FILE, json.dumps(record, indent=2) + "\n")
        return ckpt

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()  # every rank has written its part (rng_state_<rank>.pth) before the manifest
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            extra = {"relay_config.yaml": self.run_dir / "config.yaml", "versions.json": self.run_dir / "versions.json"}
            finalize(ckpt, state.global_step, extra)
            rotate(Path(args.output_dir), self.keep, protect=self._best(Path(args.output_dir)))
            logger.info("checkpoint %s saved", ckpt)


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records written after ``last_step`` (steps a resumed run will produce again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by the crash
    atomic_write_text(path, "".join(line + "\n" for line in kept))
