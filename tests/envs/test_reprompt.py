"""RePrompt env pure parts: messages, parsing, format/length rewards, prompt sources and generator."""

import json
from collections import Counter
from pathlib import Path

import pytest

from envs.reprompt import (
    ASSISTANT_PREFILL,
    SYSTEM_PROMPT,
    Parsed,
    build_messages,
    build_rows,
    format_reward,
    generate_training_prompts,
    length_reward,
    load_geneval_prompts,
    load_text_prompts,
    parse_completion,
    sft_completion,
)
from rewards.t2i.geneval import TAGS, validate_metadata

EVAL_FILE = (
    Path(__file__).resolve().parents[2] / "envs" / "data" / "geneval" / "evaluation_metadata.jsonl"
)  # bundled copy


def test_messages_and_prefill():
    msgs = build_messages("  a photo of a cow ")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == SYSTEM_PROMPT and msgs[1]["content"] == "a photo of a cow"
    assert "<think>" in SYSTEM_PROMPT and "<answer>" in SYSTEM_PROMPT
    assert ASSISTANT_PREFILL == "Let me solve this step by step.\n<think>"
    with pytest.raises(ValueError, match="empty"):
        build_messages("   ")


@pytest.mark.parametrize(
    "text, think, answer, well_formed",
    [
        ("plan</think><answer>a red cup</answer>", "plan", "a red cup", True),
        ("\nline 1\nline 2\n</think>\n\n<answer>\na red\ncup\n</answer>\n", "line 1\nline 2", "a red\ncup", True),
        ("<think>plan</think><answer>x</answer>", "plan", "x", True),  # repeated opener tolerated
        ("</think><answer>x</answer>", "", "x", True),  # empty reasoning is still the right shape
        ("plan</think><answer>  \n </answer>", "plan", None, False),  # empty answer
        ("plan</think>", "plan", None, False),  # missing answer
        ("plan</think><answer>cut off", "plan", None, False),  # truncated
        ("no tags at all", None, None, False),
        ("<answer>x</answer>", None, "x", False),  # no reasoning block
        ("a<think>b</think><answer>x</answer>", "ab", "x", False),  # nested think
        ("a</think><answer>x<answer>y</answer></answer>", "a", "x<answer>y", False),  # nested answer
        ("a</think><answer>x</answer><answer>y</answer>", "a", "x", False),  # two answers
        ("a</think><answer>x</answer> and more", "a", "x", False),  # text after the answer
        ("a</think>b</think><answer>x</answer>", "a", "x", False),  # two closers
    ],
)
def test_parse_completion(text, think, answer, well_formed):
    assert parse_completion(text) == Parsed(think, answer, well_formed)


def test_format_and_length_rewards_accept_strings_and_messages():
    long_answer = " ".join(["word"] * 20)
    completions = [
        f"p</think><answer>{long_answer}</answer>",
        [{"role": "assistant", "content": "p</think><answer>too short</answer>"}],
        "p</think>",
        "p</think><answer>" + " ".join(["w"] * 77) + "</answer>",
        "p</think><answer>" + " ".join(["w"] * 16) + "</answer>",
        "p</think><answer>" + " ".join(["w"] * 15) + "</answer>",
    ]
    prompts = ["x"] * len(completions)
    assert format_reward(prompts, completions) == [1.0, 1.0, -1.0, 1.0, 1.0, 1.0]
    assert length_reward(prompts, completions) == [1.0, -1.0, 0.0, -1.0, 1.0, -1.0]


def test_load_text_prompts(tmp_path):
    path = tmp_path / "color_val.txt"
    path.write_text("a red apple\n\n  \n a blue car \n")
    assert load_text_prompts(path) == ["a red apple", "a blue car"]
    path.write_text("\n \n")
    with pytest.raises(ValueError, match="color_val.txt holds no prompts"):
        load_text_prompts(path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_text_prompts(tmp_path / "missing.txt")


def test_load_geneval_prompts(tmp_path):
    meta = {
        "tag": "colors",
        "include": [{"class": "car", "count": 1, "color": "pink"}],
        "prompt": "a photo of a pink car",
    }
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(meta) + "\n")
    assert load_geneval_prompts(path) == [{"prompt": "a photo of a pink car", "metadata": meta}]


def test_generator_is_deterministic_valid_and_balanced():
    items = generate_training_prompts(120, seed=3)
    assert items == generate_training_prompts(120, seed=3) != generate_training_prompts(120, seed=4)
    assert Counter(it["metadata"]["tag"] for it in items) == Counter({t: 20 for t in TAGS})
    assert len({it["prompt"] for it in items}) == 120
    for it in items:
        assert validate_metadata(it["metadata"]) == [] and it["metadata"]["prompt"] == it["prompt"]
    counting = next(it for it in items if it["metadata"]["tag"] == "counting")["metadata"]
    assert counting["exclude"][0]["count"] == counting["include"][0]["count"] + 1
    rows = build_rows(items[:2], base_seed=10)
    assert rows[1]["seed"] == 11 and json.loads(rows[0]["metadata"]) == items[0]["metadata"]
    assert rows[0]["prompt"][1]["content"] == items[0]["prompt"]


@pytest.mark.skipif(not EVAL_FILE.is_file(), reason=f"GenEval evaluation prompts not present at {EVAL_FILE}")
def test_generator_never_produces_an_evaluation_prompt():
    eval_prompts = {json.loads(line)["prompt"] for line in EVAL_FILE.read_text().splitlines() if line.strip()}
    assert len(eval_prompts) == 553
    generated = {it["prompt"] for seed in range(3) for it in generate_training_prompts(2000, seed)}
    assert not generated & eval_prompts


def test_eval_protocol_names_the_prompts_seeds_and_decoding():
    from envs.reprompt import RePromptArgs, RePromptEnv

    env = RePromptEnv(RePromptArgs(), seed=0)
    assert env.eval_protocol() == (
        "GenEval rules on shapeworld images; 553 prompts from the bundled GenEval prompts x 4 image seeds; "
        "greedy decoding; 'raw' renders the original prompt"
    )
    assert "24 prompts" in env.eval_protocol(max_prompts=24)


def test_sft_reasoning_names_every_object_with_its_count_and_color():
    meta = {
        "tag": "color_attr",
        "include": [{"class": "umbrella", "count": 1, "color": "blue"}, {"class": "apple", "count": 1, "color": "red"}],
    }
    item = {"prompt": "a drawing of a blue umbrella and a red apple", "metadata": meta}
    think = parse_completion(sft_completion(item, ideal=False)).think
    assert "a blue umbrella, a red apple" in think
    counting = {"tag": "counting", "include": [{"class": "bus", "count": 3}], "exclude": [{"class": "bus", "count": 4}]}
    assert "three buses" in parse_completion(sft_completion({"prompt": "x", "metadata": counting}, ideal=True)).think


def test_reworded_geneval_keeps_the_requirements_and_changes_the_phrasing(tmp_path, capsys):
    from envs.reprompt import _HIDDEN_OPENERS, _OPENERS, main, reword_geneval
    from rewards.t2i.geneval import load_geneval_metadata

    metadata = load_geneval_metadata(EVAL_FILE)
    out = tmp_path / "hidden.jsonl"
    assert main(["reword", str(out), "--seed", "3"]) == 0
    rows = load_geneval_metadata(out)  # loads and validates as GenEval metadata
    assert rows == reword_geneval(metadata, seed=3) != reword_geneval(metadata, seed=4)
    assert "wrote 553 reworded GenEval prompts" in capsys.readouterr().out
    for old, new in zip(metadata, rows, strict=True):
        assert {k: v for k, v in new.items() if k != "prompt"} == {k: v for k, v in old.items() if k != "prompt"}
        assert new["prompt"].startswith(_HIDDEN_OPENERS) and not new["prompt"].startswith(("a photo of", *_OPENERS))
        for req in new["include"]:
            assert req["class"].split()[-1] in new["prompt"] and req.get("color", "") in new["prompt"]
    assert any(r["prompt"].endswith(" a teddy bear with a dog on its right") for r in rows)  # 'a dog right of a ...'
    assert any("exactly four" in r["prompt"] for r in rows if r["tag"] == "counting")


def test_reword_names_a_missing_source_and_exits_2(tmp_path, capsys):
    from envs.reprompt import main

    assert main(["reword", str(tmp_path / "out.jsonl"), "--source", str(tmp_path / "nope.jsonl")]) == 2
    assert "--source" in capsys.readouterr().err and not (tmp_path / "out.jsonl").exists()
