"""bench/seeds.py: the over-seeds table and reading finished run directories."""

from __future__ import annotations

import json
import os
import time

import pytest

from bench.seeds import load_run, seed_table, summarise


def _run_dir(tmp_path, seed: int, start: float, trained: float):
    d = tmp_path / f"run{seed}"
    d.mkdir()
    (d / "config.yaml").write_text(f"seed: {seed}\n")
    (d / "relay.log").write_text("2026-12-04 20:00:00,123 INFO relay: run dir x\n")
    row = {"raw": {"overall": 0.5}, "start": {"overall": start}, "trained": {"overall": trained}}
    (d / "eval.json").write_text(json.dumps(row))
    ten_minutes_later = time.mktime(time.strptime("2026-12-04 20:10:00", "%Y-%m-%d %H:%M:%S"))
    os.utime(d / "eval.json", (ten_minutes_later, ten_minutes_later))
    return d


def test_table_has_each_seed_the_summary_and_the_gain(tmp_path):
    runs = [load_run(_run_dir(tmp_path, s, start, trained)) for s, start, trained in [(0, 0.4, 0.6), (1, 0.2, 0.5)]]
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[0]["wall_s"] == pytest.approx(600)
    lines = seed_table(runs, "overall").splitlines()
    assert lines[0] == "| overall | seed 0 | seed 1 | mean ± std (min-max) |"
    assert lines[3] == "| start | 0.400 | 0.200 | 0.300 ± 0.141 (0.200-0.400) |"
    assert lines[5] == "| trained − start | +0.200 | +0.300 | 0.250 ± 0.071 (0.200-0.300) |"
    assert summarise([0.7]) == "0.700"


def test_an_eval_with_its_own_paired_row_gets_no_second_gain_row(tmp_path):
    runs = [load_run(_run_dir(tmp_path, s, start, trained)) for s, start, trained in [(0, 0.4, 0.6), (1, 0.2, 0.5)]]
    for r in runs:  # DUET's eval.json: a paired trained-start row with the same metric
        r["eval"]["trained-start"] = {"overall": r["eval"]["trained"]["overall"] - r["eval"]["start"]["overall"]}
    lines = seed_table(runs, "overall").splitlines()
    assert [line.split(" |")[0] for line in lines[2:]] == ["| raw", "| start", "| trained", "| trained-start"]


def test_a_run_without_eval_json_is_refused_by_name(tmp_path, capsys):
    d = _run_dir(tmp_path, 0, 0.1, 0.2)
    (d / "eval.json").unlink()
    with pytest.raises(SystemExit) as exc:
        load_run(d)
    assert exc.value.code == 2
    assert f"{d} has no eval.json" in capsys.readouterr().err
