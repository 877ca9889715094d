"""The PPO learner on real Ray: a real RolloutPool and RewardPool, the tiny model, the letters env."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rl.checkpoint import checkpoints, problems
from rl.learner.ppo import PPOArgs, combine_rewards, prompt_indices, run_ppo

COMPARED = ("reward", "loss", "kl", "policy_loss", "value_loss", "grad_norm", "rollout/token_hash")


def _cfg(*overrides: str):
    from rl.config import load_config

    base = [
        "logging.progress_bar=false",
        "rollout.num_cpus_per_worker=1",
        "rollout.torch_threads=1",
        "learner.torch_threads=1",
    ]
    return load_config(Path(__file__).resolve().parents[3] / "configs" / "letters.yaml", [*base, *overrides])


def _ppo(cfg, run_dir: Path, model_dir: Path, resume_from: Path | None = None, args: PPOArgs | None = None) -> None:
    """Build the pools with the driver's own helpers, run PPO, close the pools."""
    from rl.adapter import policy_lora_kwargs
    from rl.learner.session import Session
    from rl.preflight import Plan, preflight
    from rl.run_dir import create_run_dir
    from rl.wiring import build_reward_pools, build_rollout_pool

    plan: Plan = preflight(cfg)
    if resume_from is None:
        create_run_dir(run_dir)
        (run_dir / "config.yaml").write_text(json.dumps(cfg.to_dict()))
    torch.set_num_threads(cfg.learner.torch_threads or 1)
    pools = []
    try:
        lora = policy_lora_kwargs(cfg, plan.env, str(model_dir))
        rollout_pool = build_rollout_pool(cfg, str(model_dir), lora=lora)
        pools.append(rollout_pool)
        reward_pools = build_reward_pools(cfg, plan, pools)
        session = Session(plan, run_dir, str(model_dir), rollout_pool, tuple(reward_pools), resume_from, lora=lora)
        run_ppo(session, args=args)
    finally:
        for pool in pools:
            pool.close()


def _metrics(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


# ---- pure pieces -----------------------------------------------------------------------------------


def test_combine_rewards_weights_components_and_marks_any_none_unscored():
    total = combine_rewards([[1.0, None, 0.5], [2.0, 1.0, None]], [1.0, 0.5])
    assert total[0].item() == pytest.approx(2.0)
    assert math.isnan(total[1].item()) and math.isnan(total[2].item())


def test_prompt_indices_cover_each_epoch_once_and_depend_only_on_step():
    n, per = 10, 4
    drawn = [i for step in range(1, 6) for i in prompt_indices(step, per, n, seed=3)]  # 20 = two epochs
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
    assert prompt_indices(4, per, n, seed=3) == drawn[12:16]
    assert prompt_indices(1, per, n, seed=3) != prompt_indices(1, per, n, seed=4)


# ---- real Ray --------------------------------------------------------------------------------------

SHORT = ["learner.batch_size=8", "rollout.max_new_tokens=8", "checkpoint.every_steps=2", "checkpoint.keep=3"]


@pytest.fixture(scope="module")
def four_step_run(tmp_path_factory, ray_cluster, tiny_model_dir, request):
    """4 uninterrupted PPO steps, checkpointing every 2; counts from_pretrained calls of the policy."""
    from transformers import AutoModelForCausalLM

    loads = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, *a, **k):
        loads.append(a[0] if a else k.get("pretrained_model_name_or_path"))
        return original(cls, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    run_dir = tmp_path_factory.mktemp("ppo") / "full"
    try:
        _ppo(_cfg(*SHORT, "learner.max_steps=4"), run_dir, tiny_model_dir)
    finally:
        mp.undo()
    return run_dir, loads


def test_ppo_steps_move_adapter_and_value_head_with_one_model(four_step_run):
    run_dir, loads = four_step_run
    records = _metrics(run_dir)
    assert sorted(records) == [1, 2, 3, 4]
    assert [records[s]["rollout/adapter_version"] for s in (1, 2, 3, 4)] == [0, 1, 2, 3]  # on-policy
    for r in records.values():
        for key in ("reward", "loss", "policy_loss", "value_loss", "kl", "grad_norm", "values/mean"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (key, r[key])
        assert 0.0 <= r["reward"] <= 1.0
        assert r["rewards/letter_fraction/n_failed"] == 0 and r["n_unscored"] == 0
        assert r["rollout/logprob_diff_mean"] < 1e-3  # the learner reproduces the engine's logprobs
        assert r["rollout/logprob_diff_max"] < 1e-2 and 0 <= r["rollout/mismatch_kl"] < 1e-4
    # The reference is the same model with its adapter off: the learner loaded one causal LM.
    assert len(loads) == 1, loads
    assert records[1]["kl"] == pytest.approx(0.0, abs=1e-6)  # adapter starts as identity (lora_B = 0)
    assert records[4]["kl"] > 0.0
    ckpts = dict(checkpoints(run_dir / "checkpoints"))
    assert sorted(ckpts) == [2, 4]
    a2, a4 = (load_file(str(ckpts[s] / "adapter_model.safetensors")) for s in (2, 4))
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in a2.items())  # lora_B starts at 0
    assert any(not torch.equal(a2[k], a4[k]) for k in a2)
    v2, v4 = (load_file(str(ckpts[s] / "value_head.safetensors")) for s in (2, 4))
    assert set(v2) == {"summary.weight", "summary.bias"}
    assert not torch.equal(v2["summary.weight"], v4["summary.weight"])
    final = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(final[k], a4[k]) for k in a4)
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def test_checkpoint_is_marker_valid_and_resume_matches_uninterrupted(four_step_run, tiny_model_dir, tmp_path):
    full_dir, _ = four_step_run
    for _, ckpt in checkpoints(full_dir / "checkpoints"):
        assert problems(ckpt) == []
        for name in ("adapter_model.safetensors", "adapter_config.json", "value_head.safetensors", "optimizer.pt",
                     "scheduler.pt", "rng_state.pth", "trainer_state.json", "relay_config.yaml"):  # fmt: skip
            assert (ckpt / name).is_file(), name

    split = tmp_path / "split"
    _ppo(_cfg(*SHORT, "learner.max_steps=2"), split, tiny_model_dir)
    ckpt = split / "checkpoints" / "checkpoint-2"
    assert problems(ckpt) == []
    _ppo(_cfg(*SHORT, "learner.max_steps=4"), split, tiny_model_dir, resume_from=ckpt)

    full, resumed = _metrics(full_dir), _metrics(split)
    assert sorted(resumed) == [1, 2, 3, 4]  # continued at step 3, not from 1
    for step in (1, 2, 3, 4):
        for key in COMPARED:
            assert resumed[step][key] == full[step][key], (step, key, resumed[step][key], full[step][key])


@pytest.mark.slow
def test_ppo_learns_the_letters_env(tmp_path, ray_cluster, tiny_model_dir):
    """60 PPO steps (4 prompts x 4 samples, lr 5e-3): the last 10 steps' mean reward is clearly above the first 10's."""
    steps = 60
    cfg = _cfg(f"learner.max_steps={steps}", "logging.tensorboard=false")
    _ppo(cfg, tmp_path / "learn", tiny_model_dir, args=PPOArgs(minibatch_size=8))
    records = _metrics(tmp_path / "learn")
    rewards = [records[s]["reward"] for s in sorted(records)]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    print(f"PPO letters env: mean reward first 10 steps {first:.3f}, last 10 steps {last:.3f}")
    assert len(rewards) == steps
    assert last > first + 0.05 and last > 1.5 * first
