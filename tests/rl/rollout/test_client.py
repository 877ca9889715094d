"""RolloutClient's own logic (rl.rollout.client): adapter shipped only when its version moved, seeds by
(step, global position, sample), colocated wake/sleep, the data-parallel sync. The pool here records
calls; the client on real pools is exercised by every training test (sync, async, PPO)."""

from __future__ import annotations

import torch

from rl.rollout.client import RolloutClient, rollout_metrics
from rl.rollout.sampling import sample_seed
from rl.rollout.types import Rollout, SamplingParams

SAMPLING = SamplingParams(max_new_tokens=4)


class RecordingPool:
    def __init__(self):
        self.calls: list[tuple] = []

    def sync_adapter(self, version, tensors):
        self.calls.append(("sync", version))

    def adopt_adapter(self, version, tensors):
        self.calls.append(("adopt", version))

    def wake_up(self):
        self.calls.append(("wake",))

    def sleep(self):
        self.calls.append(("sleep",))

    def generate(self, prompts, n, sampling, seeds, expected_version):
        self.calls.append(("generate", expected_version, tuple(seeds)))
        return [Rollout(i, j, [1], [2, 3], [-0.5, -0.25], "x", expected_version, "length")
                for i in range(len(prompts)) for j in range(n)]  # fmt: skip


class Accelerator:
    def __init__(self, rank: int, world: int):
        self.process_index, self.num_processes, self.is_main_process = rank, world, rank == 0

    def wait_for_everyone(self):
        pass


TENSORS = {"a.lora_A.weight": torch.zeros(2, 2)}


def test_ships_only_when_the_version_moves_and_seeds_by_step_and_position():
    pool = RecordingPool()
    client = RolloutClient(pool, SAMPLING, num_generations=2, base_seed=7)
    moved = client.sync(0, TENSORS)
    assert moved["rollout/sync_bytes"] == 16 and client.sync(0, TENSORS) == {}
    rollouts, seconds = client.generate(["p", "q"], 0, offset=4)
    assert len(rollouts) == 4 and seconds >= 0
    expected = tuple(sample_seed(7, 0, 4 + i, j) for i in range(2) for j in range(2))
    assert pool.calls == [("sync", 0), ("generate", 0, expected)]
    client.generate(["p"], 1, seed_step=9)  # async: seeded by the batch, sampled from version 1
    assert pool.calls[-1] == ("generate", 1, (sample_seed(7, 9, 0, 0), sample_seed(7, 9, 0, 1)))


def test_colocated_engines_wake_before_and_sleep_after_only_on_rank_0():
    pool = RecordingPool()
    client = RolloutClient(pool, SAMPLING, 1, 0, colocate=True)
    assert "rollout/wake_seconds" in client.wake_up(Accelerator(0, 2))
    client.sleep(Accelerator(0, 2))
    client.wake_up(Accelerator(1, 2))
    client.sleep(Accelerator(1, 2))
    assert pool.calls == [("wake",), ("sleep",)]
    assert RolloutClient(pool, SAMPLING, 1, 0).wake_up() == {}  # not colocated: nothing to do


def test_data_parallel_rank_0_ships_and_the_others_adopt():
    pool = RecordingPool()
    RolloutClient(pool, SAMPLING, 1, 0).sync(3, TENSORS, Accelerator(0, 2))
    RolloutClient(pool, SAMPLING, 1, 0).sync(3, TENSORS, Accelerator(1, 2))
    assert pool.calls == [("sync", 3), ("adopt", 3)]


def test_rollout_metrics_name_staleness_and_tokens():
    rs = [Rollout(0, 0, [1], [2, 3], [-1.0, -1.0], "x", 2, "stop"), Rollout(0, 1, [1], [4], [-1.0], "y", 3, "stop")]
    m = rollout_metrics(rs, step=3, generate_seconds=0.5)
    assert m["rollout/tokens"] == 3 and m["rollout/tokens_per_second"] == 6.0
    assert (m["rollout/staleness_mean"], m["rollout/staleness_max"], m["rollout/adapter_version"]) == (0.5, 1, 2)


def test_rollout_sampling_carries_the_rollout_section_beam_search_included():
    from rl.config import REPO_ROOT, load_config
    from rl.rollout.client import rollout_sampling

    genrec = REPO_ROOT / "configs" / "genrec.yaml"
    shipped = rollout_sampling(load_config(genrec).rollout)
    assert shipped == SamplingParams(max_new_tokens=5, temperature=1.0)  # the recipe samples by default
    beams = rollout_sampling(load_config(genrec, ["rollout.beam_search=true"]).rollout)
    assert beams == SamplingParams(max_new_tokens=5, beam_search=True)
    cfg = load_config(None, ["rollout.temperature=0.7", "rollout.top_k=5", "rollout.top_p=0.9"])
    assert rollout_sampling(cfg.rollout) == SamplingParams(cfg.rollout.max_new_tokens, 0.7, 0.9, 5)
