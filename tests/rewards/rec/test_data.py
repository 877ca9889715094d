import json
from pathlib import Path

import pytest

from rewards.rec.data import (
    Interaction,
    ItemInfo,
    RecData,
    RecDataError,
    chronological_split,
    item_text,
    k_core,
    leave_one_out,
    load_lcrec,
    load_p5,
    load_table,
    split_order,
    timestamp_split,
)
from tests.helpers import toy_rec_data

SCI = Path(__file__).resolve().parents[4] / "shared" / "data" / "rec" / "amazon2018_scientific"
if not SCI.exists():
    SCI = Path("/work/shared/data/rec/amazon2018_scientific")


@pytest.mark.skipif(not SCI.exists(), reason=f"shared Amazon Scientific data not found at {SCI}")
def test_scientific_counts_and_loo():
    d = load_lcrec(SCI / "Scientific.inter.json")  # item.json found next to it
    assert (d.num_users, d.num_items, d.num_interactions) == (8317, 4344, 58492)
    assert len(d.items) == 4344 and d.items["0"].title.startswith("SUPCO")
    assert d.items["0"].categories[-1] == "Capacitors"
    s = leave_one_out(d)
    assert len(s.valid) == len(s.test) == 8317
    assert sum(len(v) for v in s.train.values()) == 58492 - 2 * 8317
    ex = next(e for e in s.test if e.user == "0")
    assert ex.target.item == "8" and [x.item for x in ex.history] == [str(i) for i in range(8)]
    assert k_core(d, 5).num_interactions == 58492  # already 5-core


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


def test_lcrec_small_and_malformed(tmp_path):
    inter = _write(tmp_path / "T.inter.json", json.dumps({"u1": [1, 2, 3], "u2": [2, 3]}))
    _write(tmp_path / "T.item.json", json.dumps({"1": {"title": "Red pen", "categories": "Office,Pens"}}))
    d = load_lcrec(inter)
    assert d.interactions["u1"][0] == Interaction("u1", "1")
    assert d.items["1"].categories == ["Office", "Pens"] and d.item_text("9") == "item 9"

    bad = _write(tmp_path / "B.inter.json", '{"u1": [1, 2],\n "u2": [3 4]}')
    with pytest.raises(RecDataError, match=r"B\.inter\.json:2: invalid JSON"):
        load_lcrec(bad)
    wrong = _write(tmp_path / "W.inter.json", json.dumps({"u1": [1], "u2": "oops", "u3": [{"x": 1}]}))
    with pytest.raises(RecDataError) as e:
        load_lcrec(wrong)
    assert "2 malformed lines" in str(e.value) and "'u2'" in str(e.value) and "'u3'" in str(e.value)
    d = load_lcrec(wrong, on_error="skip")
    assert d.users == ["u1"] and len(d.report.bad) == 2


def test_p5_and_malformed(tmp_path):
    seq = _write(tmp_path / "user_sequence.txt", "1 10 11 12\n2 11 12\n\n3\n2 13\n")
    texts = _write(tmp_path / "item_texts.txt", "10 Blue widget\n11 Green gadget\n12\n")
    with pytest.raises(RecDataError) as e:
        load_p5(seq, texts)
    msg = str(e.value)
    assert "user_sequence.txt:4: user '3' has no items" in msg
    assert "user_sequence.txt:5: user '2' appears on an earlier line" in msg
    assert "item_texts.txt:3: item '12' has no text" in msg
    d = load_p5(seq, texts, on_error="skip")
    assert [x.item for x in d.interactions["1"]] == ["10", "11", "12"]
    assert d.items["11"].title == "Green gadget" and len(d.report.bad) == 3
    assert d.item_ids == ["10", "11", "12"]


ROWS = [
    {"user": "a", "item": "x", "timestamp": 3, "rating": 5, "review": "great"},
    {"user": "a", "item": "y", "timestamp": 1, "rating": 4},
    {"user": "b", "item": "x", "timestamp": 2},
    {"user": "a", "item": "z", "timestamp": 5},
]


def _check_table(d: RecData):
    assert [x.item for x in d.interactions["a"]] == ["y", "x", "z"]  # sorted by time
    assert d.interactions["a"][1].rating == 5.0 and d.interactions["a"][1].review == "great"
    assert d.interactions["b"][0].rating is None


def test_table_formats(tmp_path):
    import pandas as pd

    jl = _write(tmp_path / "t.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS))
    _check_table(load_table(jl))
    pd.DataFrame(ROWS).to_csv(tmp_path / "t.csv", index=False)
    _check_table(load_table(tmp_path / "t.csv"))
    pd.DataFrame(ROWS).to_parquet(tmp_path / "t.parquet")
    _check_table(load_table(tmp_path / "t.parquet"))


def test_table_malformed_lines(tmp_path):
    # a syntax error: datasets refuses the file, the fallback scan names every bad line
    jl = _write(tmp_path / "bad.jsonl", '{"user": "a", "item": "x", "timestamp": 1}\n{"user": "a", "item": \n\n[1]\n')
    with pytest.raises(RecDataError) as e:
        load_table(jl)
    assert "bad.jsonl:2: invalid JSON" in str(e.value) and "bad.jsonl:4: expected a JSON object" in str(e.value)
    assert load_table(jl, on_error="skip").num_interactions == 1
    csvp = _write(tmp_path / "bad.csv", "user,item,timestamp\na,x,1\na,y,2,9\nb,,3\nb,x,soon\n")
    with pytest.raises(RecDataError) as e:
        load_table(csvp)
    msg = str(e.value)
    assert "bad.csv:3: 4 fields" in msg and "bad.csv:4: missing item" in msg and "bad.csv:5: timestamp='soon'" in msg
    # well-formed syntax, bad values: reported from the datasets path with physical lines
    csv2 = _write(tmp_path / "vals.csv", "user,item,timestamp\na,x,1\n,y,2\nb,x,later\n")
    with pytest.raises(RecDataError) as e:
        load_table(csv2)
    assert "vals.csv:3: missing user" in str(e.value) and "vals.csv:4: timestamp='later'" in str(e.value)
    # integer ids with a gap stay "7", not "7.0"
    ints = _write(tmp_path / "ints.csv", "user,item,timestamp\n1,7,1\n,8,2\n2,9,3\n")
    assert load_table(ints, on_error="skip").interactions["1"][0].item == "7"


def test_leave_one_out():
    s = leave_one_out(toy_rec_data())
    assert [x.item for x in s.train["u1"]] == ["a", "b"] and [x.item for x in s.train["u2"]] == ["a"]
    assert [x.item for x in s.train["u3"]] == ["b"]
    assert [(e.user, e.target.item, [x.item for x in e.history]) for e in s.valid] == [("u1", "c", ["a", "b"])]
    assert [(e.user, e.target.item, len(e.history)) for e in s.test] == [("u1", "d", 3), ("u2", "c", 1)]


def test_timestamp_split():
    s = timestamp_split(toy_rec_data(), valid_start=4, test_start=6)
    assert {u: [x.item for x in v] for u, v in s.train.items()} == {"u1": ["a", "b", "c"]}
    assert [(e.user, e.target.item, len(e.history)) for e in s.valid] == [("u1", "d", 3), ("u2", "a", 0)]
    assert [(e.user, e.target.item, len(e.history)) for e in s.test] == [("u2", "c", 1), ("u3", "b", 0)]
    q = timestamp_split(toy_rec_data(), valid_quantile=0.5, test_quantile=0.5)  # median of 1..7 = 4
    assert not q.valid and len(q.test) == 4
    with pytest.raises(ValueError, match="leave_one_out"):
        timestamp_split(RecData({"u": [Interaction("u", "a")]}))


def _view(split):
    return (
        {u: [x.item for x in v] for u, v in split.train.items()},
        [(e.user, e.target.item, [x.item for x in e.history]) for e in split.valid],
        [(e.user, e.target.item, [x.item for x in e.history]) for e in split.test],
    )


def test_chronological_split_by_order_index():
    """No timestamps: interactions sorted by (position in the user's sequence, user order); 10 of them,
    8:1:1 -> the first 8 train, the 9th validates, the 10th tests."""
    seqs = {"u1": "abcde", "u2": "ac", "u3": "bdf"}
    d = RecData({u: [Interaction(u, i) for i in s] for u, s in seqs.items()})
    # order: u1a u2a u3b | u1b u2c u3d | u1c u3f | u1d | u1e
    train, valid, test = _view(chronological_split(d))
    assert train == {"u1": ["a", "b", "c"], "u2": ["a", "c"], "u3": ["b", "d", "f"]}
    assert valid == [("u1", "d", ["a", "b", "c"])]
    assert test == [("u1", "e", ["a", "b", "c", "d"])]
    assert split_order(d).startswith("by per-user order index")


def test_chronological_split_by_timestamp():
    d = toy_rec_data()  # u1: a1 b2 c3 d4, u2: a5 c6, u3: b7
    assert split_order(d) == "by timestamp"
    train, valid, test = _view(chronological_split(d))  # 7 events: 5 train (floor 5.6), 1 valid, 1 test
    assert train == {"u1": ["a", "b", "c", "d"], "u2": ["a"]}
    assert valid == [("u2", "c", ["a"])]
    assert test == []  # u3's only event is held out but has no history: no example
    train, valid, test = _view(chronological_split(d, train=0.5, valid=0.25))  # cuts at floor 3.5, 5.25
    assert train == {"u1": ["a", "b", "c"]}
    assert valid == [("u1", "d", ["a", "b", "c"])]  # u2's "a" (t=5) is held out with no history: dropped
    assert test == [("u2", "c", ["a"])]  # the history holds the earlier held-out event
    with pytest.raises(ValueError, match="train"):
        chronological_split(d, train=0.9, valid=0.2)


def test_k_core_iterative():
    # "z" has 1 interaction -> dropped; then u3 has 1 -> dropped; then "w" has 1 -> dropped ...
    inter = {
        "u1": [Interaction("u1", i) for i in "xyw"],
        "u2": [Interaction("u2", i) for i in "xy"],
        "u3": [Interaction("u3", i) for i in "zw"],
    }
    d = k_core(RecData(inter), 2)
    assert {u: [x.item for x in s] for u, s in d.interactions.items()} == {"u1": ["x", "y"], "u2": ["x", "y"]}


def test_item_text():
    it = ItemInfo(title="Pen", brand="Bic", categories=["Office", "Pens"], description="word " * 200)
    t = item_text(it)
    assert t.startswith("Title: Pen; Brand: Bic; Categories: Office > Pens; Description: word")
    assert t.endswith("...") and len(t) < 400
    assert item_text(it, fields=("title",)) == "Title: Pen"
