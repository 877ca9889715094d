"""GenEval's rules on hand-made detections, loading, scoring table, reward and ideal rewrites."""

import json
from pathlib import Path

import pytest

from rewards.t2i.detector import Detection
from rewards.t2i.geneval import (
    check,
    clause_results,
    geneval_partial_reward,
    geneval_reward,
    ideal_rewrite,
    load_geneval_metadata,
    parse_completion,
    prompt_seed,
    relative_position,
    score_prompt,
    score_table,
)

EVAL_FILE = (
    Path(__file__).resolve().parents[3] / "envs" / "data" / "geneval" / "evaluation_metadata.jsonl"
)  # bundled copy


def det(cls, x, y, color="red", side=10):
    return Detection(cls, color, (x, y, x + side, y + side), (x + side / 2, y + side / 2))


# ---- relative_position, hand-computed: offset minus 0.1*(both sizes), normalised by |offset|


def test_relative_position_cases():
    assert relative_position((0, 0, 10, 10), (50, 0, 60, 10)) == {"left of"}  # dx=-48/50
    assert relative_position((50, 0, 60, 10), (0, 0, 10, 10)) == {"right of"}
    assert relative_position((0, 0, 10, 10), (0, 50, 10, 60)) == {"above"}  # y grows downwards
    assert relative_position((0, 0, 10, 10), (30, 30, 40, 40)) == {"left of", "above"}  # -28/42.4 each
    assert relative_position((0, 0, 10, 10), (30, 10, 40, 20)) == {"left of"}  # dy=-8/31.6 too small
    assert relative_position((0, 0, 10, 10), (1, 1, 11, 11)) == set()  # within the 10% slack


# ---- include / exclude rules


def test_include_needs_at_least_count():
    meta = {"tag": "counting", "include": [{"class": "cup", "count": 2}]}
    assert check([det("cup", 0, 0)], meta) == (False, "expected cup>=2, found 1")
    assert check([det("cup", 0, 0), det("cup", 20, 0), det("cup", 40, 0)], meta)[0]  # >= without exclude


def test_exclude_makes_counting_exact():
    meta = {"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}]}
    assert check([det("cup", 0, 0), det("cup", 20, 0)], meta) == (True, "")
    ok, reason = check([det("cup", 0, 0), det("cup", 20, 0), det("cup", 40, 0)], meta)
    assert not ok and reason == "expected cup<3, found 3"


def test_other_classes_do_not_matter():
    meta = {"tag": "single_object", "include": [{"class": "dog", "count": 1}]}
    assert check([det("cat", 0, 0), det("dog", 30, 0)], meta)[0]
    assert not check([det("cat", 0, 0)], meta)[0]


def test_color_is_judged_on_first_count_detections_only():
    meta = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "pink"}]}
    assert check([det("car", 0, 0, "pink"), det("car", 30, 0, "blue")], meta)[0]
    ok, reason = check([det("car", 0, 0, "blue"), det("car", 30, 0, "pink")], meta)
    assert not ok and reason.startswith("expected pink car>=1, found 0 pink; and 1 blue")


def test_color_attr_needs_both_colors():
    meta = {
        "tag": "color_attr",
        "include": [{"class": "bus", "count": 1, "color": "green"}, {"class": "cup", "count": 1, "color": "purple"}],
    }
    assert check([det("bus", 0, 0, "green"), det("cup", 30, 0, "purple")], meta)[0]
    assert not check([det("bus", 0, 0, "green"), det("cup", 30, 0, "green")], meta)[0]


def test_position_against_earlier_group():
    meta = {
        "tag": "position",
        "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}],
    }
    assert check([det("teddy bear", 0, 50), det("dog", 80, 50)], meta) == (True, "")
    ok, reason = check([det("teddy bear", 80, 50), det("dog", 0, 50)], meta)
    assert not ok and reason == "expected dog right of target, found left of target"
    ok, reason = check([det("dog", 80, 50)], meta)  # target missing: two failures, as GenEval reports
    assert not ok and reason == "expected teddy bear>=1, found 0\nno target for dog to be right of"


def test_position_needs_every_target_instance():
    meta = {
        "tag": "position",
        "include": [{"class": "cup", "count": 2}, {"class": "vase", "count": 1, "position": ["above", 0]}],
    }
    assert check([det("vase", 50, 0), det("cup", 20, 80), det("cup", 80, 80)], meta)[0]
    assert not check([det("vase", 50, 40), det("cup", 20, 80), det("cup", 80, 0)], meta)[0]


def test_clause_results_lists_include_then_exclude():
    meta = {"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}]}
    assert [ok for ok, _ in clause_results([det("cup", 0, 0)], meta)] == [False, True]


# ---- score table


def test_score_table_is_mean_over_tags():
    results = [
        {"tag": "single_object", "correct": True},
        {"tag": "single_object", "correct": True},
        {"tag": "counting", "correct": False},
        {"tag": "counting", "correct": True},
        {"tag": "position", "correct": False},
    ]
    table = score_table(results)
    assert table["single_object"] == 1.0 and table["counting"] == 0.5 and table["position"] == 0.0
    assert table["colors"] is None and table["overall"] == pytest.approx(0.5)  # (1 + .5 + 0) / 3
    assert score_table([])["overall"] is None


# ---- loading


def test_load_reports_file_line_and_field(tmp_path):
    good = {"tag": "single_object", "include": [{"class": "cow", "count": 1}], "prompt": "a photo of a cow"}
    path = tmp_path / "meta.jsonl"
    path.write_text(
        json.dumps(good)
        + "\n\n"
        + "{not json\n"
        + json.dumps({**good, "include": [{"class": "unicorn", "count": 0}]})
        + "\n"
    )
    with pytest.raises(ValueError) as err:
        load_geneval_metadata(path)
    text = str(err.value)
    assert f"{path}:3: not valid JSON" in text
    assert f"{path}:4.include[0].class ('unicorn')" in text and f"{path}:4.include[0].count (0)" in text
    path.write_text(json.dumps(good) + "\n")
    assert load_geneval_metadata(path) == [good]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_geneval_metadata(tmp_path / "nope.jsonl")


def test_load_rejects_bad_position_reference(tmp_path):
    bad = {"tag": "position", "prompt": "p", "include": [{"class": "cow", "count": 1, "position": ["above", 0]}]}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"m.jsonl:1.include\[0\].position"):
        load_geneval_metadata(path)


# ---- reward

POS_META = {
    "tag": "position",
    "prompt": "a photo of a dog right of a teddy bear",
    "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}],
}


def test_reward_renders_answer_and_judges_original_metadata():
    good = " plan </think>\n<answer>" + ideal_rewrite(POS_META) + "</answer>"
    prompts = [[{"role": "user", "content": POS_META["prompt"]}]] * 3
    completions = [
        [{"role": "assistant", "content": good}],
        "no tags at all",
        "x</think><answer>a photo of a cow</answer>",
    ]
    rewards = geneval_reward(prompts, completions, metadata=[json.dumps(POS_META), POS_META, POS_META])
    assert rewards == [1.0, 0.0, 0.0]
    partial = geneval_partial_reward(prompts, completions, metadata=[POS_META] * 3)
    assert partial == [1.0, 0.0, 0.0]  # the cow prompt matches no clause
    half = geneval_partial_reward(
        ["p"],
        ["</think><answer>A simple picture: one teddy bear, nothing else.</answer>"],
        metadata=[POS_META],
        seed=[0],
    )
    assert half == [0.5]


def test_reward_is_deterministic_and_checks_lengths():
    args = (["a photo of two clocks"] * 2, ["</think><answer>two clocks</answer>"] * 2)
    meta = [
        {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]}
    ] * 2
    first = geneval_reward(*args, metadata=meta)
    assert first == geneval_reward(*args, metadata=meta) and first[0] == first[1]
    with pytest.raises(ValueError, match="metadata has 1 values for 2 completions"):
        geneval_reward(*args, metadata=meta[:1])


def test_prompt_seed_is_stable():
    assert prompt_seed("a photo of a cow") == prompt_seed("a photo of a cow") != prompt_seed("a photo of a cat")


def test_parse_completion_reexported_behaviour():
    assert parse_completion("r</think><answer>x</answer>").answer == "x"


# ---- raw vs ideal on GenEval's prompts


@pytest.mark.skipif(not EVAL_FILE.is_file(), reason=f"GenEval metadata not present at {EVAL_FILE}")
def test_ideal_rewrites_beat_raw_prompts_on_geneval():
    metas = load_geneval_metadata(EVAL_FILE)[::3]  # a third of the 553 keeps the test fast
    raw = score_table(
        {"tag": m["tag"], "correct": score_prompt(m["prompt"], m, prompt_seed(m["prompt"]))[0]} for m in metas
    )
    ideal = score_table(
        {"tag": m["tag"], "correct": score_prompt(ideal_rewrite(m), m, prompt_seed(m["prompt"]))[0]} for m in metas
    )
    assert 0.3 <= raw["overall"] <= 0.6 and raw["position"] < 0.35
    assert ideal["overall"] >= 0.95
    assert all(15 < len(ideal_rewrite(m).split()) < 77 for m in metas)
