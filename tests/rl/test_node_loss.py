"""Nodes leaving a multi-node ``ray.cluster_utils.Cluster`` mid-run, through the real CLI.

The cluster and its driver live in a subprocess (this session already has its own Ray driver):
a head holding the reward actor and worker nodes holding the rollout actor, pinned there by custom
resources from the config. One run loses the rollout node while another can hold the actor: it
finishes. The other loses its only rollout node: it stops at its latest checkpoint with exit code 3
and a message saying so, and `relay resume` finishes it once a new node joins.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.helpers import run_cluster_script

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "faulty_rewards.py"

_SCRIPT = textwrap.dedent(
    """
    import json, subprocess, sys, time
    from pathlib import Path
    import ray
    from ray._private import state
    from ray.cluster_utils import Cluster

    work, fixtures = Path(sys.argv[2]), sys.argv[3]  # argv[1]: Ray's temp root
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"reward_slot": 1}})
    workers = [cluster.add_node(num_cpus=1, resources={"rollout_slot": 1}) for _ in range(2)]
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    rewards = [{"name": "slow", "source": f"{fixtures}:slow_letter_fraction", "kwargs": {"delay_s": 0.6},
                "resources": {"reward_slot": 1}}]
    procs = []

    def relay(*args):
        procs.append(subprocess.Popen([sys.executable, "-m", "rl", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
        return procs[-1]

    def train(run_dir):
        return relay("train", "--run-dir", str(run_dir), "configs/letters.yaml", f"cluster.address={cluster.address}",
                     "learner.max_steps=6", "checkpoint.every_steps=2", "cluster.node_loss_wait_s=3",
                     "rollout.max_new_tokens=8", "logging.progress_bar=false", "logging.tensorboard=false",
                     "rollout.resources={rollout_slot: 1}", f"rewards.functions={json.dumps(rewards)}")

    def steps(run_dir):
        path = run_dir / "metrics.jsonl"
        return [json.loads(l)["step"] for l in path.read_text().splitlines()] if path.exists() else []

    def remove_rollout_node_after(run_dir, step, proc):
        while max(steps(run_dir), default=0) < step:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        free = state.available_resources_per_node()
        # The node whose rollout_slot the (only) rollout actor holds.
        node = next(n for n in workers if n in cluster.worker_nodes and free.get(n.node_id, {}).get("rollout_slot", 0) < 1)
        cluster.remove_node(node)

    def finish(proc, run_dir):
        log = proc.communicate(timeout=300)[0]
        return {"code": proc.returncode, "steps": steps(run_dir), "tail": log[-2500:]}

    out = {}
    try:
        # 1. A second rollout node can hold the actor: the run finishes.
        run = work / "finish"
        proc = train(run)
        remove_rollout_node_after(run, 2, proc)
        out["finish"] = finish(proc, run)
        # 2. The remaining rollout node leaves too: stop at the latest checkpoint, exit 3.
        run = work / "stop"
        proc = train(run)
        remove_rollout_node_after(run, 3, proc)
        out["stop"] = finish(proc, run)
        out["stop"]["checkpoints"] = sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*"))
        # 3. A new node joins: resume finishes the run.
        cluster.add_node(num_cpus=1, resources={"rollout_slot": 1})
        cluster.wait_for_nodes()
        out["resume"] = finish(relay("resume", str(run), f"cluster.address={cluster.address}"), run)
    finally:
        for p in procs:
            p.kill()
        ray.shutdown()
        cluster.shutdown()
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.long
def test_runs_survive_or_stop_cleanly_when_nodes_leave(tmp_path):
    out = run_cluster_script(_SCRIPT, tmp_path, str(tmp_path), str(FIXTURES), timeout=600)

    finish = out["finish"]
    assert finish["code"] == 0, finish["tail"]
    # The removed node held the only rollout actor (its rollout_slot was in use), so steps 3-6 ran on
    # the actor Ray restarted on the other node.
    assert finish["steps"] == [1, 2, 3, 4, 5, 6]

    stop = out["stop"]
    assert stop["code"] == 3, stop["tail"]
    assert "can no longer hold the run's actors" in stop["tail"] and "rollout_slot" in stop["tail"], stop["tail"]
    assert "latest checkpoint is checkpoint-2" in stop["tail"] or "latest checkpoint is checkpoint-4" in stop["tail"]
    assert "relay resume" in stop["tail"]
    assert stop["checkpoints"] and all(c in ("checkpoint-2", "checkpoint-4") for c in stop["checkpoints"])

    resume = out["resume"]
    assert resume["code"] == 0, resume["tail"]
    assert resume["steps"] == [1, 2, 3, 4, 5, 6]
