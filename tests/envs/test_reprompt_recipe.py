"""The RePrompt recipe, shortened: SFT -> GRPO -> eval through the real driver and Ray pools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr", "overall")


@pytest.mark.slow
def test_reprompt_recipe_shortened(tmp_path, ray_cluster):
    from rl.config import load_config
    from rl.driver import train

    cfg = load_config(
        REPO / "configs" / "quickstart.yaml",
        ["sft.steps=4", "sft.num_examples=64", "learner.max_steps=2", "rollout.max_new_tokens=48",
         "eval.max_prompts=24", "logging.progress_bar=false", "logging.tensorboard=false"],
    )  # fmt: skip
    run_dir = train(cfg, tmp_path / "rp")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for name in ("format", "length", "image"):
        assert f"rewards/{name}/mean" in records[-1]
    result = json.loads((run_dir / "eval.json").read_text())
    assert set(result) == {"raw", "start", "trained"}
    for row in result.values():
        for tag in TAGS:
            assert 0.0 <= row[tag] <= 1.0
    # The raw prompts' table is a property of shapeworld alone: single objects always render right.
    assert result["raw"]["single_object"] == 1.0
    assert (run_dir / "eval_grid.png").stat().st_size > 0
    assert (run_dir / "sft_model" / "config.json").exists()

    # The hidden-prompt check a user runs afterwards goes next to the run's eval.json, never over it.
    from envs.reprompt import main as reprompt_cli
    from rl.evaluate import run_eval

    hidden = tmp_path / "hidden.jsonl"
    assert reprompt_cli(["reword", str(hidden)]) == 0
    before = (run_dir / "eval.json").read_text()
    hidden_result = run_eval(run_dir, [f"env.args.eval_metadata={hidden}"], max_prompts=12)
    assert (run_dir / "eval.json").read_text() == before
    [out] = [d for d in run_dir.glob("eval-*") if d.is_dir()]
    assert json.loads((out / "eval.json").read_text()) == hidden_result
    args = json.loads((out / "eval_args.json").read_text())
    assert args["overrides"] == [f"env.args.eval_metadata={hidden}"] and str(hidden) in args["protocol"]
    assert set(hidden_result) == {"raw", "start", "trained"} and (out / "eval_grid.png").is_file()


@pytest.mark.long
@pytest.mark.timeout(2400)  # `make run` in full: 12 min alone on 2 cores, 30-60 min on a shared machine
def test_quickstart_as_shipped_learns_over_its_start(tmp_path, ray_cluster):
    """`make run` as shipped (only the console and TensorBoard output turned off): on all 553 GenEval prompts
    GRPO raises the overall score over the SFT start by at least 0.10 and above the raw prompts, as
    configs/quickstart.yaml's comment promises (measured over seeds 0-2 on 2 CPU cores: gain +0.201 to +0.313,
    trained 0.673-0.837 against raw 0.496; the bars leave half the smallest margin for another machine's
    trajectory)."""
    from rl.config import load_config
    from rl.driver import train

    cfg = load_config(REPO / "configs" / "quickstart.yaml", ["logging.progress_bar=false", "logging.tensorboard=false"])
    run_dir = train(cfg, tmp_path / "quickstart")
    result = json.loads((run_dir / "eval.json").read_text())
    raw, start, trained = (result[k]["overall"] for k in ("raw", "start", "trained"))
    print(f"quickstart overall: raw {raw:.3f}, start {start:.3f}, trained {trained:.3f}")
    assert trained - start >= 0.10
    assert trained > raw + 0.05


@pytest.mark.long
@pytest.mark.timeout(7200)  # 45 min of training and 25-50 min of eval on 2 cores
def test_smollm2_recipe_as_shipped_beats_raw_and_its_start(tmp_path, ray_cluster, smollm2_dir):
    """configs/reprompt_smollm2.yaml as shipped (the real SmolLM2-135M-Instruct, vLLM's CPU build, async
    rollouts, 40 GRPO steps; only console and TensorBoard output off; the model comes from the session's
    converted copy): on all 553 GenEval prompts the trained policy beats the raw prompts by 0.10 (the
    paper's FLUX gain) and its SFT start by 0.10, as the config's comment promises. Measured by the same
    workload (`relay train` + `relay eval`) on seeds 0 and 1, 2026-12-05: see docs/benchmarks.md."""
    from rl.config import load_config
    from rl.driver import train

    cfg = load_config(
        REPO / "configs" / "reprompt_smollm2.yaml",
        [f"model.cache_dir={smollm2_dir.parent}", "logging.progress_bar=false", "logging.tensorboard=false"],
    )
    run_dir = train(cfg, tmp_path / "smollm2")
    result = json.loads((run_dir / "eval.json").read_text())
    raw, start, trained = (result[k]["overall"] for k in ("raw", "start", "trained"))
    print(f"reprompt_smollm2 overall: raw {raw:.3f}, start {start:.3f}, trained {trained:.3f}")
    assert result["trained"]["format_reward"] == 1.0
    assert trained >= raw + 0.10
    assert trained - start >= 0.10
