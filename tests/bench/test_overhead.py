"""bench/overhead.py: runner parsing, section names, and the timing/breakdown tables from fake records."""

from __future__ import annotations

import pytest

from bench.overhead import (
    LETTERS,
    RUNNERS,
    TINY_TITLE,
    RunnerResult,
    UsageError,
    base_overrides,
    breakdown,
    breakdown_table,
    build_parser,
    report,
    resolve_model,
    run_order,
    runner_overrides,
    section_title,
    timing_table,
    workload_problems,
)


def _records(n: int, **values) -> list[dict]:
    return [{"reward": 0.5, **values} for _ in range(n)]


_RELAY_METRICS = {
    "rollout/generate_seconds": 0.05,
    "rollout/sync_seconds": 0.01,
    "rollout/sync_bytes": 131072,
    "rewards/letter_fraction/seconds": 0.002,
}


def _relay_sync() -> RunnerResult:
    recs = _records(5, **_RELAY_METRICS, **{"rollout/staleness_mean": 0.0, "completions/mean_length": 20.0})
    # two slow warm-up steps, then 0.12 s steps; repeats: 0.12 and 0.13 s/step
    return RunnerResult(RUNNERS["relay-hf-sync"], [0.12, 0.13], [1.0, 1.0, 0.12, 0.12, 0.12], recs)


def _relay_async() -> RunnerResult:
    async_metrics = {"rollout/wait_seconds": 0.001, "rollout/staleness_mean": 1.0, "completions/mean_length": 22.0}
    recs = _records(5, **_RELAY_METRICS, **async_metrics)
    return RunnerResult(RUNNERS["relay-vllm-async"], [0.09, 0.11], [2.0, 1.0, 0.1, 0.1, 0.1], recs)


def _plain() -> RunnerResult:
    return RunnerResult(
        RUNNERS["trl"], [0.1, 0.1], [0.5, 0.5, 0.1, 0.1, 0.1], _records(5, **{"completions/mean_length": 21.0})
    )


def test_runners_parse_in_the_given_order_and_default_to_trl_and_relay_hf_sync():
    parser = build_parser()
    assert [r.name for r in parser.parse_args([]).runners] == ["trl", "relay-hf-sync"]
    opts = parser.parse_args(["--runners", "relay-vllm-async, trl,relay-hf-sync"])
    assert [r.name for r in opts.runners] == ["relay-vllm-async", "trl", "relay-hf-sync"]
    assert [r.name for r in run_order(opts.runners, 1)] == ["relay-hf-sync", "trl", "relay-vllm-async"]
    assert run_order(opts.runners, 2) == opts.runners


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("trl,relay-gpu", "unknown runner(s) relay-gpu; valid names: trl, relay-hf-sync, relay-hf-async, "),
        ("relay-hf-sync,relay-vllm-async", "list trl (the baseline every ratio is to)"),
        ("trl", "and at least one Relay runner"),
        ("trl,relay-hf-sync,trl", "names a runner twice"),
    ],
)
def test_a_bad_runner_list_is_refused_naming_the_option_and_the_valid_names(value, says, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--runners", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --runners:" in err
    assert says in err
    assert "relay-vllm-async" in err  # the valid names are always listed


def test_workload_problems_name_the_option_and_the_fix():
    opts = build_parser().parse_args(["--batch-size", "10", "--num-generations", "4"])
    assert workload_problems(opts) == [
        "--batch-size (10) must be a multiple of --num-generations (4); e.g. --batch-size 8"
    ]
    assert workload_problems(build_parser().parse_args(["--steps", "0"])) == ["--steps (0) must be >= 1"]
    assert workload_problems(build_parser().parse_args([])) == []


def test_a_missing_model_directory_is_refused_naming_model(tmp_path):
    with pytest.raises(UsageError, match=r"--model .*nowhere: not 'tiny', a packaged model \(smollm2-135m-instruct\)"):
        resolve_model(str(tmp_path / "nowhere"), tmp_path, for_vllm=False)


def test_the_tiny_model_keeps_todays_section_and_other_models_get_their_own():
    assert section_title("tiny") == TINY_TITLE == "Relay vs plain TRL (bench/overhead.py)"
    assert section_title("smollm2-135m-instruct") == "Relay vs plain TRL on SmolLM2-135M-Instruct (bench/overhead.py)"
    assert section_title("/models/qwen-0.5b/") == "Relay vs plain TRL on qwen-0.5b (bench/overhead.py)"


def test_sync_breakdown_counts_generation_and_sync_as_waiting():
    b = breakdown(_relay_sync())
    assert b["step"] == pytest.approx(0.12)
    assert b["waited"] == pytest.approx(0.06)  # generation + adapter sync
    assert b["rest"] == pytest.approx(0.12 - 0.06 - 0.002)
    assert b["sync_kib"] == pytest.approx(128)


def test_async_breakdown_counts_only_the_learners_wait():
    b = breakdown(_relay_async())
    assert b["waited"] == pytest.approx(0.001)
    assert b["rest"] == pytest.approx(0.1 - 0.001 - 0.002)
    assert b["staleness"] == pytest.approx(1.0)


def test_timing_table_has_each_runner_its_ratio_per_run_and_its_goal():
    lines = timing_table([_plain(), _relay_sync(), _relay_async()], repeats=2).splitlines()
    assert lines[0].startswith(
        "| runner | s/step (median of 2 runs) | each run | ratio to plain TRL (each run) | goal |"
    )
    assert lines[2] == (
        "| plain TRL GRPOTrainer, in-process generation (`trl`) | 0.100 | 0.100, 0.100 | 1.00x (baseline) | — | 21.0 |"
    )
    assert lines[3] == (
        "| Relay, hf rollout actor, sync (`relay-hf-sync`) | 0.125 | 0.120, 0.130 | **1.25x** (1.20, 1.30) | "
        "<= 1.05x: missed | 20.0 |"
    )
    assert lines[4] == (
        "| Relay, vLLM rollout actor, async (`relay-vllm-async`) | 0.100 | 0.090, 0.110 | **1.00x** (0.90, 1.10) | "
        "< 1.00x: missed | 22.0 |"
    )


def test_breakdown_table_has_one_row_per_relay_runner():
    lines = breakdown_table([_plain(), _relay_sync(), _relay_async()]).splitlines()
    assert len(lines) == 4  # header, rule, the two Relay runners
    assert lines[2] == "| `relay-hf-sync` | 0.120 | 0.050 | 0.010 (128 KiB) | 0.0020 | 0.060 | 0.058 | 0.00 |"
    assert lines[3] == (
        "| `relay-vllm-async` | 0.100 | 0.050 (overlapped) | 0.010 (overlapped) (128 KiB) | 0.0020 | 0.0010 | "
        "0.097 | 1.00 |"
    )


def test_split_runner_gives_learner_and_actor_half_the_cores_each():
    """relay-vllm-async-split: learner cores // 2 threads, the actor the rest, winning over --threads; the other
    runners leave the threads to the shared overrides."""
    from rl.config import load_config

    split = RUNNERS["relay-vllm-async-split"]
    assert split.engine == "vllm" and split.mode == "async"
    assert runner_overrides(split, 2)[-2:] == ["learner.torch_threads=1", "rollout.torch_threads=1"]
    assert runner_overrides(split, 5)[-2:] == ["learner.torch_threads=2", "rollout.torch_threads=3"]
    assert not any("threads" in o for o in runner_overrides(RUNNERS["relay-vllm-async"], 2))
    assert runner_overrides(RUNNERS["trl"], 2) == []
    opts = build_parser().parse_args(["--threads", "2", "--rollout-threads", "2"])
    vllm_heads = ["model.tiny.hidden_size=64", "model.tiny.num_attention_heads=2", "model.tiny.num_key_value_heads=1"]
    cfg = load_config(LETTERS, [*base_overrides(opts, "tiny"), *vllm_heads, *runner_overrides(split, 2)])
    assert (cfg.learner.torch_threads, cfg.rollout.torch_threads) == (1, 1)


def test_report_names_the_split_runners_threads_only_when_it_ran(monkeypatch):
    """The section's first line gives the shared threads, and the split runner's own when it is in the table."""
    monkeypatch.setattr("bench.overhead.os.cpu_count", lambda: 2)
    opts = build_parser().parse_args(["--threads", "2"])
    loads = ((1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    a = _relay_async()
    split = RunnerResult(RUNNERS["relay-vllm-async-split"], a.step_medians, a.step_times, a.records)
    without = report(opts, "tiny", [_plain(), a], loads, (2, 2)).splitlines()[0]
    assert "torch threads: learner 2, rollout actor 2. Load" in without
    with_split = report(opts, "tiny", [_plain(), a, split], loads, (2, 2)).splitlines()[0]
    assert "learner 2, rollout actor 2 (the split runner: learner 1, rollout actor 1). Load" in with_split
