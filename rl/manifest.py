"""Checksummed file manifests: ``{relative path: {"size", "sha256"}}`` for a directory, and the check that
a directory still matches one. Shared by checkpoint completion markers (``rl/checkpoint.py``) and the
packaged-model cache (``rl/packaged_models.py``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_entries(directory: Path, paths: Iterable[Path]) -> dict[str, dict]:
    """The manifest entries of ``paths`` (files under ``directory``), keyed by their POSIX relative path."""
    return {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in paths}


def manifest_problems(directory: Path, files: dict[str, dict]) -> list[str]:
    """One line per file that is missing, has another size (truncated?) or another sha256 (corrupt)."""
    problems = []
    for rel, want in sorted(files.items()):
        path = directory / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != want["size"]:
            problems.append(f"{rel}: {path.stat().st_size} bytes, expected {want['size']} (truncated?)")
        elif sha256_file(path) != want["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    return problems
