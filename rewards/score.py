"""``relay score``: score a JSONL of samples with one reward function, through a reward pool.

Input lines are ``{"prompt": ..., "completion": ..., <columns>...}``; prompt/completion are strings or
chat messages, other fields reach the function as keyword columns. Output lines are
``{"index": i, "score": float | null, ...original fields}``, written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from rewards.pool import RewardError, RewardPool, RewardSpec, ScoreResult
from rewards.registry import check_reward
from rl.atomic import atomic_path
from rl.registry import RegistryError


class ScoreInputError(ValueError):
    """Bad user input to ``relay score`` (file, line, field or option); the message says what to fix."""


REQUIRED_FIELDS = ("prompt", "completion")


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSONL file; every problem names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ScoreInputError(f"input file {str(path)!r} does not exist")
    samples: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) are not samples
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ScoreInputError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); fix or remove the line"
                ) from exc
            if not isinstance(record, dict):
                raise ScoreInputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            for name in REQUIRED_FIELDS:
                if name not in record:
                    raise ScoreInputError(
                        f"{path}:{lineno}: missing field {name!r}; each line needs 'prompt' and 'completion'"
                    )
            samples.append(record)
    if not samples:
        raise ScoreInputError(f"input file {str(path)!r} has no samples")
    return samples


def _columns(samples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Every extra field becomes a column; samples lacking it get None there."""
    names: dict[str, None] = {}
    for s in samples:
        for key in s:
            if key not in REQUIRED_FIELDS and key != "completion_ids":
                names.setdefault(key, None)
    return {name: [s.get(name) for s in samples] for name in names}


def summarize(result: ScoreResult) -> dict[str, Any]:
    scored = [v for v in result.values if v is not None]
    mean = sum(scored) / len(scored) if scored else None
    std = math.sqrt(sum((v - mean) ** 2 for v in scored) / len(scored)) if scored else None
    return {
        "count": len(result.values),
        "scored": len(scored),
        "mean": mean,
        "std": std,
        "min": min(scored) if scored else None,
        "max": max(scored) if scored else None,
        "failures": result.n_failed,
        "timeouts": result.n_timeout,
        "invalid": result.n_invalid,
        "seconds": round(result.seconds, 3),
        "errors": list(result.errors[:5]),  # the pool's first messages naming the function and the samples
    }


def failed_samples(summary: dict[str, Any]) -> int:
    """Samples without a score because the reward raised, timed out or returned invalid values (a None the
    function returned on purpose is not a failure)."""
    return summary["failures"] + summary["timeouts"] + summary["invalid"]


def format_summary(summary: dict[str, Any]) -> str:
    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}"

    lines = [
        f"scored {summary['scored']}/{summary['count']} samples in {summary['seconds']:.2f}s",
        f"  mean {num(summary['mean'])}  std {num(summary['std'])}  min {num(summary['min'])}  max {num(summary['max'])}",
    ]
    missing = summary["count"] - summary["scored"]
    if missing:
        lines.append(
            f"  no score for {missing}: {summary['failures']} failed, {summary['timeouts']} timed out, "
            f"{summary['invalid']} invalid, {missing - summary['failures'] - summary['timeouts'] - summary['invalid']} None by the function"
        )
    return "\n".join(lines)


def write_scores(path: str | Path, samples: list[dict[str, Any]], values: list[float | None]) -> None:
    """Write ``{"index", "score", ...fields}`` lines via a temp file + rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for i, (sample, value) in enumerate(zip(samples, values, strict=True)):
            f.write(json.dumps({"index": i, "score": value, **sample}, ensure_ascii=False) + "\n")


def score_jsonl(
    reward: str,
    input_path: str | Path,
    output_path: str | Path | None = None,
    *,
    num_workers: int = 1,
    timeout_s: float | None = 60.0,
    kwargs: dict[str, Any] | None = None,
    batch_size: int | None = None,
    num_cpus: float = 1.0,
    fail_fast: bool = False,
) -> dict[str, Any]:
    """Score every sample of ``input_path`` with ``reward`` on a running Ray cluster; return the summary."""
    samples = read_samples(input_path)
    try:  # resolve here too: a bad name or file is a user error (exit 2), reported before any actor starts
        check_reward(reward, kwargs)
    except RegistryError as exc:
        raise ScoreInputError(str(exc)) from exc
    if output_path is not None and Path(output_path).resolve() == Path(input_path).resolve():
        raise ScoreInputError(f"--output {str(output_path)!r} is the input file; write the scores elsewhere")
    spec = RewardSpec(
        name=reward.rpartition(":")[2] or reward,
        source=reward,
        kwargs=dict(kwargs or {}),
        num_workers=num_workers,
        timeout_s=timeout_s,
        num_cpus=num_cpus,
        batch_size=batch_size,
    )
    problems = spec.problems()
    if problems:
        raise ScoreInputError("; ".join(problems))
    ids = [s.get("completion_ids") for s in samples]
    with RewardPool(spec, on_failure="fail_fast" if fail_fast else "none") as pool:
        result = pool.score(
            [s["prompt"] for s in samples],
            [s["completion"] for s in samples],
            ids if all(i is not None for i in ids) else None,
            **_columns(samples),
        )
    if output_path is not None:
        write_scores(output_path, samples, result.values)
    return summarize(result)


def add_score_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--reward", required=True, help="registry name, 'package.module:function' or 'path/to/file.py:function'"
    )
    parser.add_argument(
        "--input", required=True, help="JSONL with 'prompt', 'completion' and any columns the reward needs"
    )
    parser.add_argument("--output", default=None, help="write {index, score, ...fields} per sample here (JSONL)")
    parser.add_argument("--num-workers", type=int, default=1, help="reward actors (default 1)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per chunk before its samples score None (0: no limit)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="samples per actor call (default: split evenly over workers)"
    )
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per reward actor")
    parser.add_argument(
        "--kwargs", default=None, help="JSON object of keyword arguments for the reward, e.g. '{\"max_length\": 64}'"
    )
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failure instead of scoring it None")
    parser.add_argument(
        "--max-failures",
        type=int,
        default=0,
        help="samples that may fail, time out or be invalid (NaN/inf, wrong count) before relay score exits 1 "
        "(default 0: any failure exits 1; the summary and --output are written either way)",
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else start a local one)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _parse_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScoreInputError(
            f"--kwargs is not valid JSON ({exc.msg}); give an object like '{{\"scale\": 2}}'"
        ) from exc
    if not isinstance(value, dict):
        raise ScoreInputError(f"--kwargs must be a JSON object, got {type(value).__name__}")
    return value


def run_score(args: argparse.Namespace) -> int:
    """Run ``relay score``. Exit codes: 0 when every sample scored (or returned None on purpose);
    1 when more than ``--max-failures`` samples failed, timed out or were invalid (the summary is printed
    and ``--output`` written first), or ``--fail-fast`` stopped at a failure; 2 for bad input."""
    import sys

    from rl.cluster import shutdown, start_or_join

    try:
        kwargs = _parse_kwargs(args.kwargs)
        read_samples(args.input)  # fail on bad input before paying for a cluster
        problems = RewardSpec(
            name=args.reward,
            source=args.reward,
            num_workers=args.num_workers,
            timeout_s=args.timeout,
            num_cpus=args.num_cpus,
            batch_size=args.batch_size,
        ).problems()
        if getattr(args, "max_failures", 0) < 0:
            problems.append(f"--max-failures ({args.max_failures}) must be >= 0")
        if problems:
            raise ScoreInputError("; ".join(problems))
    except ScoreInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # A local cluster needs room for every worker even on a small machine; joining ignores num_cpus.
    local_cpus = max(os.cpu_count() or 1, math.ceil(args.num_workers * args.num_cpus))
    handle = start_or_join(args.address or None, num_cpus=local_cpus)
    try:
        summary = score_jsonl(
            args.reward,
            args.input,
            args.output,
            num_workers=args.num_workers,
            timeout_s=args.timeout,
            kwargs=kwargs,
            batch_size=args.batch_size,
            num_cpus=args.num_cpus,
            fail_fast=args.fail_fast,
        )
    except ScoreInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RewardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if handle.started_local:  # never disconnect from a cluster (or session) we only joined
            shutdown(handle)
    print(json.dumps(summary) if getattr(args, "json", False) else format_summary(summary))
    if args.output:
        print(f"wrote {args.output}")
    allowed = getattr(args, "max_failures", 0)
    if (bad := failed_samples(summary)) > allowed:
        shown = "".join(f"\n  {e}" for e in summary["errors"][:3])
        print(
            f"error: {bad} of {summary['count']} samples failed, timed out or were invalid (--max-failures "
            f"{allowed}); fix the reward, or pass --max-failures {bad} to accept them{shown}",
            file=sys.stderr,
        )
        return 1
    return 0
