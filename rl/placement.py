"""Resource requests per role -> Ray placement-group bundles, and a fit check before anything starts.

Pure functions (no Ray import at module level): ``plan_placement`` turns what the config asks for
(rollout engines, reward pools, the learner) into bundles plus a strategy; ``check_fits`` compares
a request with the cluster's nodes and names what is missing; ``create_placement_group`` and
``bundle_strategy`` are the only Ray-touching helpers.

One bundle per actor. A vLLM engine with tensor parallelism ``tp`` is one bundle of ``tp`` GPUs, so its
shards land on one node (a bundle never spans nodes). Strategies are Ray's: PACK (fill nodes, fewest
nodes), SPREAD (round-robin over nodes), and their STRICT_ forms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
_EPS = 1e-9


@dataclass(frozen=True)
class RoleRequest:
    """``count`` identical actors of one role, each needing ``cpus``, ``gpus`` and custom resources."""

    role: str  # "rollout", "reward:<name>", "learner": named in every problem message
    count: int
    cpus: float = 1.0
    gpus: float = 0.0  # per actor; fractions allowed below 1 (several reward actors share a GPU)
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources, e.g. {"node_a": 1}
    field_hint: str = ""  # the config fields that set this role, for the fix in messages

    def bundle(self) -> dict[str, float]:
        b = {"CPU": float(self.cpus)} if self.cpus else {}
        if self.gpus:
            b["GPU"] = float(self.gpus)
        b.update({k: float(v) for k, v in self.resources.items() if v})
        return b


@dataclass(frozen=True)
class ResourceRequest:
    roles: tuple[RoleRequest, ...]
    strategy: str = "PACK"


@dataclass(frozen=True)
class PlacementPlan:
    bundles: list[dict[str, float]]  # one per actor, role-major
    strategy: str
    role_bundles: dict[str, list[int]]  # role -> indices into bundles


def rollout_role(
    num_engines: int,
    gpus_per_engine: float = 0.0,
    tensor_parallel_size: int = 1,
    cpus_per_engine: float = 1.0,
    resources: dict[str, float] | None = None,
) -> RoleRequest:
    """Rollout engines. With tensor parallelism each engine needs ``tp * max(gpus_per_engine, 1)`` GPUs on one node."""
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size ({tensor_parallel_size}) must be >= 1")
    gpus = gpus_per_engine
    if tensor_parallel_size > 1:
        gpus = float(tensor_parallel_size) * max(gpus_per_engine, 1.0)
    return RoleRequest(
        "rollout",
        num_engines,
        cpus_per_engine,
        gpus,
        dict(resources or {}),
        "rollout.num_workers, rollout.num_gpus_per_worker, rollout.tensor_parallel_size",
    )


def reward_role(
    name: str, num_workers: int, gpus: float = 0.0, cpus: float = 1.0, resources: dict[str, float] | None = None
) -> RoleRequest:
    return RoleRequest(
        f"reward:{name}",
        num_workers,
        cpus,
        gpus,
        dict(resources or {}),
        f"rewards.functions[{name}].num_workers/num_gpus/num_cpus",
    )


def learner_role(
    gpus: float = 0.0, cpus: float = 1.0, resources: dict[str, float] | None = None, count: int = 1
) -> RoleRequest:
    """The learner: ``count`` Ray Train workers (learner.num_workers), or the driver process when 1."""
    return RoleRequest("learner", count, cpus, gpus, dict(resources or {}), "learner.num_workers/learner.device")


def plan_placement(request: ResourceRequest) -> PlacementPlan:
    """Bundles (one per actor, role-major) and the strategy; rejects bad requests with every problem."""
    problems = []
    if request.strategy not in STRATEGIES:
        problems.append(f"placement strategy {request.strategy!r} is not one of {', '.join(STRATEGIES)}")
    for r in request.roles:
        if r.count < 0:
            problems.append(f"{r.role}: count ({r.count}) must be >= 0")
        if r.gpus > 1 and abs(r.gpus - round(r.gpus)) > _EPS:
            problems.append(f"{r.role}: {r.gpus:g} GPUs per actor; above 1 a GPU count must be whole")
        if r.count and not r.bundle():
            problems.append(f"{r.role}: an actor needs at least some CPU, GPU or custom resource")
    if problems:
        raise ValueError("invalid resource request: " + "; ".join(problems))
    bundles: list[dict[str, float]] = []
    role_bundles: dict[str, list[int]] = {}
    for r in request.roles:
        idx = list(range(len(bundles), len(bundles) + r.count))
        role_bundles.setdefault(r.role, []).extend(idx)
        bundles.extend(r.bundle() for _ in range(r.count))
    return PlacementPlan(bundles, request.strategy, role_bundles)


def _fmt(res: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(res.items())) or "nothing"


def _fits(bundle: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(k, 0.0) + _EPS >= v for k, v in bundle.items())


def _take(bundle: dict[str, float], free: dict[str, float]) -> None:
    for k, v in bundle.items():
        free[k] = free.get(k, 0.0) - v


def _first_fit(bundles: list[tuple[int, dict[str, float]]], nodes: list[dict[str, float]], spread: bool) -> list[int]:
    """Place bundles (largest first) on node capacities; returns the indices of those that did not fit."""
    free = [dict(n) for n in nodes]
    used: list[set[int]] = [set() for _ in nodes]
    unplaced = []
    order = sorted(bundles, key=lambda ib: (-ib[1].get("GPU", 0.0), -ib[1].get("CPU", 0.0)))
    for i, b in order:
        candidates = range(len(free))
        if spread:  # STRICT_SPREAD: at most one bundle per node
            candidates = [n for n in candidates if not used[n]]
        node = next((n for n in candidates if _fits(b, free[n])), None)
        if node is None:
            unplaced.append(i)
        else:
            _take(b, free[node])
            used[node].add(i)
    return unplaced


def check_fits(
    request: ResourceRequest | PlacementPlan, cluster_resources: dict[str, float] | list[dict[str, float]]
) -> list[str]:
    """Problems (empty = fits). ``cluster_resources``: per-node totals (a list), or cluster totals (a dict,
    then only totals are checked). Each problem names the role, what it needs and what is missing."""
    plan = request if isinstance(request, PlacementPlan) else plan_placement(request)
    nodes = cluster_resources if isinstance(cluster_resources, list) else [dict(cluster_resources)]
    per_node_known = isinstance(cluster_resources, list)
    role_of = {i: role for role, idx in plan.role_bundles.items() for i in idx}
    hints = {r.role: r.field_hint for r in request.roles} if isinstance(request, ResourceRequest) else {}
    problems: list[str] = []

    # 1. totals, per resource
    need: dict[str, float] = {}
    for b in plan.bundles:
        for k, v in b.items():
            need[k] = need.get(k, 0.0) + v
    have = {k: sum(n.get(k, 0.0) for n in nodes) for k in need}
    for k in sorted(need):
        if need[k] > have[k] + _EPS:
            by_role: dict[str, float] = {}
            for i, b in enumerate(plan.bundles):
                if k in b:
                    by_role[role_of[i]] = by_role.get(role_of[i], 0.0) + b[k]
            parts = ", ".join(f"{role} {v:g}" for role, v in by_role.items())
            problems.append(
                f"{k}: the request needs {need[k]:g} ({parts}) but the cluster has {have[k]:g}; "
                f"missing {need[k] - have[k]:g} {k}"
            )
    if problems or not per_node_known:
        return problems + _hints(problems, hints)

    # 2. every bundle must fit on one node (a bundle never spans nodes)
    for role, idx in plan.role_bundles.items():
        if not idx:
            continue
        b = plan.bundles[idx[0]]
        if not any(_fits(b, n) for n in nodes):
            biggest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)))
            problems.append(
                f"{role}: each actor needs {_fmt(b)} on one node, but no node has that much "
                f"(largest: {_fmt({k: biggest.get(k, 0.0) for k in b})}); add a bigger node or shrink the actor"
            )
    if problems:
        return problems + _hints(problems, hints)

    # 3. all bundles together, under the strategy
    indexed = list(enumerate(plan.bundles))
    if plan.strategy == "STRICT_PACK":
        if not any(_fits(need, n) for n in nodes):
            problems.append(
                f"STRICT_PACK puts every actor on one node, needing {_fmt(need)}; no node has that; "
                "use PACK or a bigger node"
            )
    elif plan.strategy == "STRICT_SPREAD" and len(plan.bundles) > len(nodes):
        problems.append(
            f"STRICT_SPREAD puts each of the {len(plan.bundles)} actors on its own node but the cluster has "
            f"{len(nodes)} nodes; add nodes or use SPREAD"
        )
    else:
        unplaced = _first_fit(indexed, nodes, spread=plan.strategy == "STRICT_SPREAD")
        if unplaced:
            roles = sorted({role_of[i] for i in unplaced})
            problems.append(
                f"the actors' totals fit but they do not pack onto the nodes ({len(unplaced)} actor(s) of "
                f"{', '.join(roles)} left over: resources are split across nodes); add a node or shrink those actors"
            )
    return problems + _hints(problems, hints)


def _hints(problems: list[str], hints: dict[str, str]) -> list[str]:
    named = [h for role, h in hints.items() if h and any(role in p for p in problems)]
    return [f"fields that set these amounts: {'; '.join(dict.fromkeys(named))}"] if named else []


class CapacityWatch:
    """Tells a pool waiting for a dead actor when to give up because nodes left the cluster.

    ``check()`` compares the run's request with the live nodes (``check_fits``). A shortfall that
    lasts ``wait_s`` (time for an autoscaler or a restarted node to come back) raises
    ``ClusterCapacityLost`` naming what is missing; capacity coming back resets the clock.
    """

    def __init__(
        self,
        request: ResourceRequest,
        wait_s: float = 60.0,
        nodes: Callable[[], list[dict[str, float]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.request = request
        self.wait_s = wait_s
        self._nodes = nodes or node_resources
        self._clock = clock
        self._short_since: float | None = None

    def check(self) -> None:
        from rl.cluster import ClusterCapacityLost

        problems = check_fits(self.request, self._nodes())
        if not problems:
            self._short_since = None
            return
        now = self._clock()
        if self._short_since is None:
            self._short_since = now
        if now - self._short_since >= self.wait_s:
            raise ClusterCapacityLost(problems, waited_s=now - self._short_since)


# ---- Ray side ------------------------------------------------------------------------------------


def node_resources() -> list[dict[str, float]]:
    """Per-node totals of the connected cluster's live nodes."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def create_placement_group(plan: PlacementPlan, timeout_s: float = 60.0, name: str = "") -> Any:
    """Reserve the plan's bundles; raises with ``check_fits``' problems when it cannot be placed."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    problems = check_fits(plan, node_resources())
    if problems:
        raise RuntimeError("the cluster cannot hold this request:\n" + "\n".join(f"  - {p}" for p in problems))
    pg = placement_group(plan.bundles, strategy=plan.strategy, name=name)
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        raise RuntimeError(
            f"placement group of {len(plan.bundles)} bundles ({plan.strategy}) not ready after {timeout_s:.0f}s; "
            "other jobs may hold the resources (ray status shows what is in use)"
        ) from None
    return pg


def bundle_strategy(pg: Any, bundle_index: int) -> Any:
    """The scheduling_strategy that puts an actor into bundle ``bundle_index`` (pass it to rl.actors.spawn)."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(
        placement_group=pg, placement_group_bundle_index=bundle_index, placement_group_capture_child_tasks=True
    )
