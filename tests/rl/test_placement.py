"""Placement: bundles from role requests, fit checks naming what is missing, and real placement groups
on a two-raylet ``ray.cluster_utils.Cluster`` (run in a subprocess: it needs its own Ray driver)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rl.placement import (
    PlacementPlan,
    ResourceRequest,
    check_fits,
    learner_role,
    plan_placement,
    reward_role,
    rollout_role,
)
from tests.helpers import run_cluster_script

REPO = Path(__file__).resolve().parents[2]


def _request(strategy="PACK", tp=1, engines=2, reward_gpus=0.5):
    return ResourceRequest(
        (
            rollout_role(engines, gpus_per_engine=1, tensor_parallel_size=tp, cpus_per_engine=2),
            reward_role("image", 2, gpus=reward_gpus),
            learner_role(gpus=1),
        ),
        strategy,
    )


def test_bundles_role_major_with_tensor_parallel_gpus():
    plan = plan_placement(_request(tp=2))
    assert plan.strategy == "PACK"
    assert plan.bundles[:2] == [{"CPU": 2.0, "GPU": 2.0}] * 2
    assert plan.bundles[2:4] == [{"CPU": 1.0, "GPU": 0.5}] * 2
    assert plan.bundles[4] == {"CPU": 1.0, "GPU": 1.0}
    assert plan.role_bundles == {"rollout": [0, 1], "reward:image": [2, 3], "learner": [4]}


def test_bad_requests_list_every_problem():
    bad = ResourceRequest((reward_role("x", 1, gpus=1.5),), "DIAGONAL")
    with pytest.raises(ValueError) as err:
        plan_placement(bad)
    assert "DIAGONAL" in str(err.value) and "whole" in str(err.value)
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        rollout_role(1, tensor_parallel_size=0)


def test_fits_on_two_gpu_nodes():
    nodes = [{"CPU": 8, "GPU": 4}, {"CPU": 8, "GPU": 4}]
    assert check_fits(_request(tp=2), nodes) == []
    assert check_fits(_request(tp=2, strategy="SPREAD"), nodes) == []


def test_missing_gpus_are_named_with_amounts_and_roles():
    problems = check_fits(_request(tp=2), [{"CPU": 16, "GPU": 4}])
    assert problems[0].startswith("GPU: the request needs 6 (rollout 4, reward:image 1, learner 1)")
    assert "missing 2 GPU" in problems[0]
    assert "rollout.tensor_parallel_size" in problems[-1]  # which fields to change
    # totals only (a dict): the same message
    assert check_fits(_request(tp=2), {"CPU": 16, "GPU": 4})[0] == problems[0]


def test_bundle_larger_than_any_node():
    problems = check_fits(_request(tp=4, engines=1), [{"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 2}])
    assert any(p.startswith("rollout: each actor needs 2 CPU, 4 GPU on one node") for p in problems), problems


def test_totals_fit_but_fragmented():
    req = ResourceRequest((rollout_role(2, gpus_per_engine=1, tensor_parallel_size=2),), "PACK")
    problems = check_fits(req, [{"CPU": 4, "GPU": 3}, {"CPU": 4, "GPU": 1}])
    assert problems and "do not pack onto the nodes" in problems[0]


def test_strict_strategies():
    req = ResourceRequest((reward_role("r", 3, cpus=1),), "STRICT_SPREAD")
    assert "3 actors on its own node but the cluster has 2 nodes" in check_fits(req, [{"CPU": 8}, {"CPU": 8}])[0]
    req = ResourceRequest((reward_role("r", 3, cpus=2),), "STRICT_PACK")
    assert "STRICT_PACK" in check_fits(req, [{"CPU": 4}, {"CPU": 4}])[0]
    assert check_fits(req, [{"CPU": 6}, {"CPU": 1}]) == []


def test_custom_resources_checked():
    req = ResourceRequest((reward_role("r", 1, cpus=1, resources={"accelerator_type:H100": 1}),))
    assert "accelerator_type:H100" in check_fits(req, [{"CPU": 8, "GPU": 8}])[0]
    assert check_fits(plan_placement(req), [{"CPU": 8, "accelerator_type:H100": 1}]) == []
    assert isinstance(plan_placement(req), PlacementPlan)


_CLUSTER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray.cluster_utils import Cluster
    from rl.placement import (ResourceRequest, RoleRequest, bundle_strategy, check_fits, create_placement_group,
                              node_resources, plan_placement)
    from rl.actors import spawn

    class Where:
        def node(self):
            return ray.get_runtime_context().get_node_id()

    temp = sys.argv[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"node_a": 2}})
    cluster.add_node(num_cpus=2, resources={"node_b": 2})
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    ids = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    node_a = next(i for i, r in ids.items() if "node_a" in r)
    node_b = next(i for i, r in ids.items() if "node_b" in r)
    out = {}
    for strategy in ("SPREAD", "PACK"):
        req = ResourceRequest((RoleRequest("rollout", 1, 1, 0, {"node_a": 1}),
                               RoleRequest("reward:r", 2, 0.5, 0, {"node_b": 1})), strategy)
        plan = plan_placement(req)
        pg = create_placement_group(plan, timeout_s=60)
        actors = [spawn(Where, num_cpus=0, scheduling_strategy=bundle_strategy(pg, i)) for i in range(3)]
        out[strategy] = [ray.get(a.node.remote()) for a in actors]
        for a in actors:
            ray.kill(a)
        ray.util.remove_placement_group(pg)
    too_big = plan_placement(ResourceRequest((RoleRequest("rollout", 3, 1, 0, {"node_a": 1}),)))
    out["too_big_problems"] = check_fits(too_big, node_resources())
    try:
        create_placement_group(too_big, timeout_s=5)
        out["too_big_error"] = None
    except RuntimeError as exc:
        out["too_big_error"] = str(exc)
    out["node_a"], out["node_b"] = node_a, node_b
    ray.shutdown()
    cluster.shutdown()
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.slow
def test_placement_groups_land_actors_on_requested_nodes(tmp_path):
    out = run_cluster_script(_CLUSTER_SCRIPT, tmp_path, timeout=240)
    a, b = out["node_a"], out["node_b"]
    assert out["SPREAD"] == [a, b, b] and out["PACK"] == [a, b, b]
    assert out["too_big_problems"][0].startswith("node_a: the request needs 3 (rollout 3) but the cluster has 2")
    assert "node_a" in out["too_big_error"]


def test_capacity_watch_raises_only_after_a_lasting_shortfall():
    from rl.cluster import ClusterCapacityLost
    from rl.placement import CapacityWatch

    now = [0.0]
    nodes = [[{"CPU": 1, "reward_slot": 1}, {"CPU": 1, "rollout_slot": 1}]]
    req = ResourceRequest(
        (rollout_role(1, resources={"rollout_slot": 1}), reward_role("r", 1, resources={"reward_slot": 1}))
    )
    watch = CapacityWatch(req, wait_s=10, nodes=lambda: nodes[0], clock=lambda: now[0])
    watch.check()  # fits
    nodes[0] = [{"CPU": 1, "reward_slot": 1}]  # the rollout node left
    watch.check()  # shortfall starts: no error yet
    now[0] = 9.0
    watch.check()
    nodes[0] = [{"CPU": 1, "reward_slot": 1}, {"CPU": 1, "rollout_slot": 1}]  # a node came back
    now[0] = 15.0
    watch.check()  # the clock was reset
    nodes[0] = [{"CPU": 1, "reward_slot": 1}]
    watch.check()
    now[0] = 25.0
    with pytest.raises(ClusterCapacityLost) as err:
        watch.check()
    assert "rollout_slot: the request needs 1 (rollout 1) but the cluster has 0" in str(err.value)
    assert "waited 10s" in str(err.value)


@pytest.mark.slow
def test_run_places_its_actors_in_one_placement_group(tmp_path, ray_cluster):
    """cluster.placement_strategy: the driver reserves a bundle per actor and the actors run inside it."""
    import ray
    from transformers import TrainerCallback

    from rl.config import load_config
    from rl.driver import train

    seen: list[dict] = []

    class RecordPlacement(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            for pg in ray.util.placement_group_table().values():
                if pg["state"] == "CREATED":
                    seen.append({"strategy": pg["strategy"], "bundles": list(pg["bundles"].values())})

    cfg = load_config(
        REPO / "configs" / "letters.yaml",
        ["learner.max_steps=1", "rollout.max_new_tokens=4", "logging.progress_bar=false",
         "cluster.placement_strategy=SPREAD", "rollout.num_cpus_per_worker=1"],
    )  # fmt: skip
    train(cfg, tmp_path / "run", callbacks=[RecordPlacement()])
    # One rollout actor + one reward actor (letters' letter_fraction): two 1-CPU bundles, SPREAD.
    assert {"strategy": "SPREAD", "bundles": [{"CPU": 1.0}, {"CPU": 1.0}]} in seen, seen
    # Removed with the pools when the run ends.
    assert not [pg for pg in ray.util.placement_group_table().values() if pg["state"] == "CREATED"]
