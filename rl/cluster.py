"""Start or join a Ray cluster, with authentication on and nothing exposed beyond loopback.

The only module (with ``rl/actors.py``) that talks to Ray's cluster API; the logic classes never do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class ClusterHandle:
    """What ``start_or_join`` did, so ``shutdown`` undoes exactly that."""

    started_local: bool
    temp_dir: str | None
    own_token: bool = False  # RAY_AUTH_TOKEN_PATH points at a token Relay wrote in temp_dir


def _private_token(temp_dir: Path) -> bool:
    """Token auth for a local cluster without touching ~/.ray: a fresh token in Ray's temp dir.
    True when it wrote one (``shutdown`` then forgets it again)."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return False  # the user opted out explicitly; respect it
    os.environ["RAY_AUTH_MODE"] = "token"
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        refresh_ray_auth_cache()
        return False
    token_path = temp_dir / "auth_token"
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    refresh_ray_auth_cache()
    return True


def refresh_ray_auth_cache() -> None:
    """Ray caches the auth mode and token per process; re-read them after changing the environment."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # older Ray without token auth: nothing cached
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def _single_machine_mode():
    """Ray turns a node IP of 127.0.0.1 into the machine's external IP, and its gRPC servers (GCS,
    raylet, workers) then listen on all interfaces. In single-machine mode (``ENABLE_RAY_CLUSTER``
    off, what Ray uses on macOS/Windows; env ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) the node IP stays
    127.0.0.1 and every server binds to loopback. A cluster Relay starts itself is one machine by
    definition, so it starts in that mode; the flag is read only while the node starts."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def start_or_join(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    temp_dir: str | None = None,
    dashboard: bool = False,
    runtime_env: dict | None = None,
) -> ClusterHandle:
    """Join ``address`` (or ``RAY_ADDRESS``), else start a local single-node cluster.

    A local cluster gets its own temp dir (short path: Ray's socket names must fit in 107 bytes),
    token authentication, and a dashboard bound to 127.0.0.1 only when asked for.
    """
    import ray

    if ray.is_initialized():
        return ClusterHandle(started_local=False, temp_dir=None)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=True)
        return ClusterHandle(started_local=False, temp_dir=None)
    tmp = Path(temp_dir) if temp_dir else Path(tempfile.mkdtemp(prefix="relay-ray-", dir="/tmp"))
    tmp.mkdir(parents=True, exist_ok=True)
    own_token = _private_token(tmp)
    # Ray starts workers at nice 15 so that its own daemons stay responsive. In a Relay run the rollout
    # and reward actors *are* the workload, on the same cores as the learner (the driver, nice 0): at
    # nice 15 they starve whenever anything else runs. Equal priority unless the user chose otherwise.
    os.environ.setdefault("RAY_worker_niceness", "0")
    with _single_machine_mode():  # every server on loopback only
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            _temp_dir=str(tmp),
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            runtime_env=runtime_env,
            logging_level=logging.WARNING,
            configure_logging=True,
            log_to_driver=True,
        )
    return ClusterHandle(started_local=True, temp_dir=str(tmp), own_token=own_token)


def shutdown(handle: ClusterHandle | None) -> None:
    import ray

    # Only a cluster we started is ours to stop; a joined one keeps running.
    if handle is not None and handle.started_local and ray.is_initialized():
        ray.shutdown()
    if handle is not None and handle.own_token:  # a later local cluster in this process writes its own
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        refresh_ray_auth_cache()


class CapacityError(RuntimeError):
    """The cluster cannot hold the actors the config asks for (the CLI exits with code 2)."""


class RunStopped(RuntimeError):
    """The run stopped mid-way for a reason outside its code (lost nodes, a dead learner worker); its
    latest checkpoint is intact and ``relay resume`` continues it (the CLI exits with code 3)."""

    remedy = ""  # what the user does before resuming (or restarting), said in the stop message


class LearnerWorkerFailed(RunStopped):
    """A data-parallel learner worker (a Ray Train rank) died; the other ranks were stopped with it."""


class ClusterCapacityLost(RunStopped):
    """Mid-run, nodes left and the remaining ones cannot hold the run's actors (the run stops at its
    latest checkpoint; the CLI exits with code 3)."""

    remedy = "add nodes (or lower the actors' resources), then"

    def __init__(self, problems: list[str], waited_s: float = 0.0):
        self.problems = list(problems)
        super().__init__(
            f"the cluster can no longer hold the run's actors (waited {waited_s:.0f}s for capacity to return):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
