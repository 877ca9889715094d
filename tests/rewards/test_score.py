"""``relay score`` core: JSONL in, scores + summary out, clear errors for bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rewards.score import (
    ScoreInputError,
    add_score_arguments,
    format_summary,
    read_samples,
    run_score,
    score_jsonl,
)

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "samples.jsonl"


def parse(*argv: str) -> argparse.Namespace:
    return add_score_arguments(argparse.ArgumentParser(prog="relay score")).parse_args(list(argv))


def test_malformed_line_names_file_and_line():
    with pytest.raises(ScoreInputError) as info:
        read_samples(FIXTURES / "malformed.jsonl")
    assert f"{FIXTURES / 'malformed.jsonl'}:3: not valid JSON" in str(info.value)


def test_missing_field_names_line_and_field():
    with pytest.raises(ScoreInputError, match=r"missing_completion.jsonl:2: missing field 'completion'"):
        read_samples(FIXTURES / "missing_completion.jsonl")


def test_missing_file():
    with pytest.raises(ScoreInputError, match="does not exist"):
        read_samples(FIXTURES / "nope.jsonl")


def test_score_jsonl_end_to_end(ray_cluster, tmp_path):
    out = tmp_path / "scored.jsonl"
    summary = score_jsonl("exact_match", SAMPLES, out, num_workers=2, num_cpus=0.5)
    assert summary["count"] == 4 and summary["scored"] == 3  # answer null -> None by the function
    assert summary["mean"] == pytest.approx(2 / 3) and summary["min"] == 0.0 and summary["max"] == 1.0
    assert (summary["failures"], summary["timeouts"], summary["invalid"]) == (0, 0, 0)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0, None]
    assert rows[0]["prompt"] == "Capital of France?" and rows[2]["answer"] == "hi"
    assert not [p for p in tmp_path.iterdir() if p.name != "scored.jsonl"]  # no temp file left behind
    text = format_summary(summary)
    assert "scored 3/4 samples" in text and "1 None by the function" in text


def test_score_jsonl_rejects_unknown_reward_before_starting_actors(ray_cluster):
    with pytest.raises(ScoreInputError, match=r"unknown reward function 'exact'.*did you mean 'exact_match'"):
        score_jsonl("exact", SAMPLES)


def test_run_score_cli(ray_cluster, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    args = parse(
        "--reward",
        "length_penalty",
        "--input",
        str(SAMPLES),
        "--output",
        str(out),
        "--kwargs",
        '{"max_length": 4}',
        "--num-cpus",
        "0.5",
        "--json",
    )
    assert run_score(args) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["count"] == 4 and summary["scored"] == 4 and summary["min"] == -0.25
    assert ray_cluster.is_initialized()  # joined the session's cluster: must not shut it down


def test_run_score_bad_input_exits_2(ray_cluster, capsys):
    assert run_score(parse("--reward", "exact_match", "--input", str(FIXTURES / "malformed.jsonl"))) == 2
    assert "malformed.jsonl:3: not valid JSON" in capsys.readouterr().err
    assert run_score(parse("--reward", "exact_match", "--input", str(SAMPLES), "--kwargs", "{oops")) == 2
    assert "--kwargs is not valid JSON" in capsys.readouterr().err
    strict = f"{FIXTURES / 'sample_rewards.py'}:strict"
    assert run_score(parse("--reward", strict, "--input", str(SAMPLES), "--kwargs", '{"scal": 2}')) == 2
    assert "does not accept keyword argument(s) scal" in capsys.readouterr().err
    assert run_score(parse("--reward", "exact_match", "--input", str(SAMPLES), "--num-workers", "0")) == 2
    assert "num_workers (0) must be >= 1" in capsys.readouterr().err


def test_run_score_fail_fast_exits_1(ray_cluster, tmp_path, capsys):
    reward = f"{FIXTURES / 'sample_rewards.py'}:raises_on_bad"
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "p", "completion": "bad"}\n')
    assert run_score(parse("--reward", reward, "--input", str(path), "--fail-fast", "--num-cpus", "0.5")) == 1
    assert "reward 'raises_on_bad' raised" in capsys.readouterr().err


@pytest.mark.parametrize(
    "reward,completions,n_bad,kind",
    [
        ("raises_on_bad", ["ok", "bad", "ok", "ok"], 4, "failed"),  # one chunk: the raise fails all four
        ("non_finite", ["nan", "ok", "str", "ok"], 2, "invalid"),  # NaN and a string
        ("one_short", ["a", "b", "c", "d"], 4, "invalid"),  # the wrong number of values
    ],
)
def test_run_score_exits_1_on_failed_samples_but_writes_everything(
    reward, completions, n_bad, kind, ray_cluster, tmp_path, capsys
):
    """`relay score ... && train` must not pass on a broken reward: exit 1 past --max-failures (default 0),
    with the summary printed and the output written (atomically) all the same."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"prompt": "p", "completion": c}) + "\n" for c in completions))
    out = tmp_path / "scores.jsonl"
    argv = ["--reward", f"{FIXTURES / 'sample_rewards.py'}:{reward}", "--input", str(path), "--num-cpus", "0.5"]
    assert run_score(parse(*argv, "--output", str(out))) == 1
    captured = capsys.readouterr()
    assert f"scored {4 - n_bad}/4 samples" in captured.out and f"{n_bad} {kind}" in captured.out
    assert f"error: {n_bad} of 4 samples failed, timed out or were invalid (--max-failures 0)" in captured.err
    assert f"reward {reward!r}" in captured.err  # the pool's message names the function
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and sum(r["score"] is None for r in rows) == n_bad
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "scores.jsonl"]  # no temp file left
    if kind == "failed":  # deliberate tolerance (one case is enough): n_bad allowed -> 0; one fewer -> 1
        assert run_score(parse(*argv, "--max-failures", str(n_bad))) == 0
        assert run_score(parse(*argv, "--max-failures", str(n_bad - 1))) == 1


def test_run_score_negative_max_failures_is_bad_input(capsys):
    assert run_score(parse("--reward", "exact_match", "--input", str(SAMPLES), "--max-failures", "-1")) == 2
    assert "--max-failures (-1) must be >= 0" in capsys.readouterr().err
