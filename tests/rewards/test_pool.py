"""RewardPool on a real local Ray cluster: order, failures, timeouts, invalid output, actor death."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from rewards.pool import RewardError, RewardOutputError, RewardPool, RewardSpec, validate_outputs

FIXTURES = Path(__file__).parent / "fixtures" / "sample_rewards.py"


def spec(fn: str, **kw) -> RewardSpec:
    kw.setdefault("num_cpus", 0.5)  # the session cluster has 4 CPUs; leave room for two-worker pools
    return RewardSpec(name=fn, source=f"{FIXTURES}:{fn}", **kw)


# ---- validate_outputs (no Ray) --------------------------------------------------------------------


def test_validate_outputs_cleans_non_finite():
    clean, n_invalid = validate_outputs("r", [1, 0.5, None, float("nan"), math.inf, "x", True], 7)
    assert clean == [1.0, 0.5, None, None, None, None, 1.0]
    assert n_invalid == 3


def test_validate_outputs_wrong_count_names_function():
    with pytest.raises(RewardOutputError, match=r"reward 'r' returned 2 values for 3 completions"):
        validate_outputs("r", [1.0, 2.0], 3)
    with pytest.raises(RewardOutputError, match=r"reward 'r' returned a float, not a list"):
        validate_outputs("r", 1.0, 3)


def test_spec_problems_are_all_reported():
    with pytest.raises(ValueError) as info:
        RewardPool(RewardSpec(name="x", source="exact_match", num_workers=0, max_retries=-1, batch_size=0))
    message = str(info.value)
    assert "num_workers (0)" in message and "max_retries (-1)" in message and "batch_size (0)" in message


# ---- the pool on Ray -----------------------------------------------------------------------------


def test_scores_across_two_actors_in_order(ray_cluster):
    n = 10
    with RewardPool(spec("echo_column", num_workers=2, batch_size=3)) as pool:
        result = pool.score(["p"] * n, ["c"] * n, value=list(range(n)))
        assert result.values == [float(i) for i in range(n)]
        assert (result.n_failed, result.n_timeout, result.n_invalid, result.n_retried) == (0, 0, 0, 0)
    with RewardPool(spec("with_pid", num_workers=2)) as pool:
        values = pool.score(["p"] * 4, ["c"] * 4).values
        assert values[0] == values[1] and values[2] == values[3]  # even split: two contiguous chunks
        assert {int(v) for v in values} == set(pool.pids()) and len(set(values)) == 2


def test_async_function_and_chat_columns(ray_cluster):
    with RewardPool(spec("async_len")) as pool:
        assert pool.score(["p", "p"], ["ab", "abc"]).values == [2.0, 3.0]


def test_builtin_by_name_with_kwargs(ray_cluster):
    with RewardPool(RewardSpec(name="lp", source="length_penalty", kwargs={"max_length": 2}, num_cpus=0.5)) as pool:
        assert pool.score(["p", "p"], ["ab", "abcd"]).values == [0.0, -1.0]


def test_trainer_only_and_unpicklable_columns_are_dropped(ray_cluster):
    with RewardPool(spec("echo_column")) as pool:
        result = pool.score(
            ["p", "p"], ["a", "b"], value=[3, 4], trainer_state=object(), log_metric=print, lock=[threading.Lock()] * 2
        )
        assert result.values == [3.0, 4.0]


def test_raising_function_scores_none_and_is_counted(ray_cluster):
    completions = ["ok", "ok", "bad", "ok"]
    with RewardPool(spec("raises_on_bad", batch_size=2)) as pool:
        result = pool.score(["p"] * 4, completions)
        assert result.values == [1.0, 1.0, None, None]
        assert result.n_failed == 2 and result.n_timeout == 0
        assert any("raises_on_bad" in e and "cannot score 'bad'" in e for e in result.errors)
    with RewardPool(spec("raises_on_bad", batch_size=2), on_failure="fail_fast") as pool:
        with pytest.raises(RewardError, match=r"reward 'raises_on_bad' raised on samples 2-3: ValueError"):
            pool.score(["p"] * 4, completions)


def test_hanging_function_times_out_and_worker_recovers(ray_cluster):
    start = time.monotonic()
    with RewardPool(spec("hangs_on_slow", batch_size=2, timeout_s=1.0)) as pool:
        result = pool.score(["p"] * 4, ["slow", "ok", "ok", "ok"])
        assert result.values == [None, None, 1.0, 1.0]  # the restarted worker scored the second chunk
        assert result.n_timeout == 2 and result.n_failed == 0
        assert "timed out after 1.0s" in result.errors[0] and "hangs_on_slow" in result.errors[0]
        assert pool.score(["p"], ["ok"]).values == [1.0]
    assert time.monotonic() - start < 20


def test_non_finite_outputs_are_invalid(ray_cluster):
    with RewardPool(spec("non_finite")) as pool:
        result = pool.score(["p"] * 4, ["nan", "ok", "inf", "str"])
        assert result.values == [None, 1.0, None, None]
        assert result.n_invalid == 3 and result.n_failed == 0


def test_wrong_output_count_is_invalid_or_raises(ray_cluster):
    with RewardPool(spec("one_short")) as pool:
        result = pool.score(["p"] * 3, ["a", "b", "c"])
        assert result.values == [None] * 3 and result.n_invalid == 3
        assert "reward 'one_short' returned 2 values for 3 completions" in result.errors[0]
    with RewardPool(spec("one_short"), on_failure="fail_fast") as pool:
        with pytest.raises(RewardError, match=r"'one_short' returned 2 values for 3 completions"):
            pool.score(["p"] * 3, ["a", "b", "c"])


def test_unknown_reward_fails_at_pool_start(ray_cluster):
    with pytest.raises(
        RewardError, match=r"failed to load in its worker: rl.registry.RegistryError: unknown reward function 'nope'"
    ):
        RewardPool(RewardSpec(name="x", source="nope", num_cpus=0.5))


def test_ascore_does_not_block_the_event_loop(ray_cluster):
    """As TRL runs it: an async reward function inside a running loop on a daemon thread."""
    with RewardPool(spec("sleepy", num_workers=1)) as pool:
        reward = pool.as_reward_func()
        assert reward.__name__ == "sleepy"
        ticks = 0

        async def ticker():
            nonlocal ticks
            for _ in range(8):
                await asyncio.sleep(0.05)
                ticks += 1

        async def main():
            values, _ = await asyncio.gather(reward(["p"], ["c"], None), ticker())
            return values

        out: dict = {}
        thread = threading.Thread(target=lambda: out.update(values=asyncio.run(main())), daemon=True)
        thread.start()
        thread.join(30)
        assert out["values"] == [1.0]
        assert ticks == 8
        assert pool.last_result is not None and pool.last_result.n_scored == 1


@pytest.mark.parametrize("how", ["sigkill", "ray_kill"])
def test_killed_actor_is_restarted_and_chunk_scored_once(ray_cluster, tmp_path, how):
    import ray

    n = 8
    s = spec("recorded", num_workers=2, batch_size=2, timeout_s=60.0, kwargs={"log_dir": str(tmp_path)})
    with RewardPool(s) as pool:
        actor_by_pid = dict(zip(pool.pids(), pool.actors, strict=True))
        out: dict = {}
        thread = threading.Thread(
            target=lambda: out.update(result=pool.score(["p"] * n, ["c"] * n, idx=list(range(n))))
        )
        thread.start()
        marker = tmp_path / "marker"
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(marker.read_text())
        if how == "sigkill":
            os.kill(pid, signal.SIGKILL)
        else:
            ray.kill(actor_by_pid[pid], no_restart=False)
        thread.join(60)
        result = out["result"]
        assert result.values == [float(i) for i in range(n)]
        assert result.n_retried == 2 and result.n_failed == 0 and result.n_timeout == 0
        calls = sorted(int(line) for line in (tmp_path / "calls").read_text().split())
        assert calls == list(range(n))  # every sample scored exactly once
        assert pid not in pool.pids()  # the actor was restarted in a new process


def test_reward_importable_only_inside_its_runtime_env_scores(ray_cluster, tmp_path):
    """`rewards.functions[*].runtime_env`: a module that exists only in the actor's py_modules loads and
    scores there; Relay's propagated env vars sit under the runtime env's own; a module missing from the
    runtime env fails at pool start naming the reward, its source and the runtime env."""
    import importlib

    from rewards.pool import RewardLoadError

    pkg = tmp_path / "mods" / "relay_rtenv_reward"  # not on sys.path: reachable only through py_modules
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import os\n\n\ndef score(prompts, completions, **columns):\n"
        "    bonus = float(os.environ['RT_BONUS']) + float(os.environ['RT_BASE'])\n"
        "    return [len(c) + bonus for c in completions]\n"
    )
    with pytest.raises(ImportError):
        importlib.import_module("relay_rtenv_reward")
    runtime_env = {"py_modules": [str(pkg)], "env_vars": {"RT_BONUS": "10"}}
    rt = RewardSpec(name="rt", source="relay_rtenv_reward:score", num_cpus=0.5, runtime_env=runtime_env)
    with RewardPool(rt, env_vars={"RT_BONUS": "0", "RT_BASE": "1"}) as pool:  # the runtime env's RT_BONUS wins
        assert pool.score(["p", "p"], ["ab", "abcd"]).values == [13.0, 15.0]
    missing = RewardSpec(name="rt2", source="relay_rtenv_nothere:score", num_cpus=0.5, runtime_env=runtime_env)
    with pytest.raises(RewardLoadError) as info:
        RewardPool(missing)
    message = str(info.value)
    assert "reward 'rt2' (relay_rtenv_nothere:score) failed to load in its worker" in message
    assert "(runtime_env ['env_vars', 'py_modules'])" in message
    assert "cannot import module 'relay_rtenv_nothere'" in message
