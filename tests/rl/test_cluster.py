"""A local cluster Relay starts listens on loopback only (dashboard included) and keeps token auth on."""

from __future__ import annotations

import ipaddress
import os


def _listening(pids: set[int]) -> list[tuple[str, int, str]]:
    import psutil

    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            out.append((conn.laddr.ip, conn.laddr.port, psutil.Process(conn.pid).name()))
    return out


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # [::ffff:127.0.0.1]
    return addr.is_loopback


def test_local_cluster_listens_on_loopback_only(ray_cluster):
    import psutil

    ray = ray_cluster

    @ray.remote(num_cpus=0)
    def pid() -> int:
        return os.getpid()

    worker = ray.get(pid.remote())
    me = psutil.Process()
    # This process (the driver), every process it started (GCS, raylet, agents, workers) and a worker.
    pids = {me.pid, worker} | {p.pid for p in me.children(recursive=True)}
    sockets = _listening(pids)
    assert any(name.startswith("gcs_server") for _, _, name in sockets), sockets  # the check sees Ray's servers
    exposed = [s for s in sockets if not _is_loopback(s[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    assert os.environ.get("RAY_AUTH_MODE") == "token"


def test_a_second_local_cluster_in_the_same_process_gets_its_own_token(tmp_path):
    """Two local clusters one after the other in one process (a bench, a notebook): the first one's token
    (in its deleted temp dir) must not be reused by the second."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "twice.py"
    script.write_text(
        "import os, shutil, ray\n"
        "from rl.cluster import start_or_join, shutdown\n"
        "for i in range(2):\n"
        "    h = start_or_join(None, num_cpus=1)\n"
        "    assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42\n"
        "    shutdown(h)\n"
        "    shutil.rmtree(h.temp_dir, ignore_errors=True)\n"
        "    assert 'RAY_AUTH_TOKEN_PATH' not in os.environ\n"
        "print('ok')\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run([sys.executable, str(script)], cwd=repo, env={**env, "PYTHONPATH": str(repo)},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
