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
