"""The stall watchdog (``cluster.stall_timeout_s``): a run that makes no progress stops, resumably, with
the Python stacks of everything that could be stuck.

Progress is any tracked remote call finishing (a generation shard, an adapter load, a reward chunk)
or a training step ending. The pools register their remote calls with ``Watchdog.track`` and poll
``Watchdog.check`` while they wait (it is their ``capacity_watch``: it also runs the wrapped
``CapacityWatch``), so every remote call has a deadline. When nothing progressed for
``timeout_s``, a background thread writes ``RUN_DIR/stall-step<N>/``:

- ``stall.json`` / the message: the step, the calls in flight and for how long;
- ``driver.txt``: every thread of the driver (``sys._current_frames``);
- ``actor-<Class>-<pid>.txt``: ``py-spy dump`` of every live actor of the run on this machine
  (actors on other nodes are listed in ``stall.json``, not dumped).

Then the next ``check`` raises ``StallDetected`` (a ``RunStopped``: exit code 3, the latest checkpoint
named, ``relay resume`` continues); if the driver does not get there within ``grace_s`` (stuck outside a
tracked call), its main thread is interrupted and the driver turns that into ``StallDetected``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.atomic import atomic_write_text
from rl.cluster import RunStopped

logger = logging.getLogger(__name__)


class StallDetected(RunStopped):
    """No progress for cluster.stall_timeout_s; the stacks are in ``dump_dir``."""

    remedy = "fix what hung (see the stack dumps), then"

    def __init__(self, message: str, dump_dir: Path | None = None):
        super().__init__(message)
        self.dump_dir = dump_dir


@dataclass
class Call:
    """One remote call in flight; ``update`` refines what it waits on and counts as progress."""

    what: str
    started: float = field(default_factory=time.monotonic)
    watchdog: Any = None

    def update(self, what: str) -> None:
        self.what = what
        if self.watchdog is not None:
            self.watchdog.progress()


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.is_file() else shutil.which("py-spy")


def _run_actors() -> list[dict]:
    """Live actors of this job (class, pid, node address), read from Ray's GCS (no dashboard needed)."""
    import ray

    if not ray.is_initialized():  # never start a cluster just to look at it
        return []
    from ray._private.state import actors

    job = ray.get_runtime_context().get_job_id()
    out = []
    for actor_id, info in actors().items():
        if info.get("State") == "ALIVE" and info.get("JobID") == job:
            out.append({"actor_id": actor_id, "class": info.get("ActorClassName"), "pid": info.get("Pid"),
                        "ip": (info.get("Address") or {}).get("IPAddress")})  # fmt: skip
    return out


def _local_ips() -> set[str]:
    import ray

    ips = {"127.0.0.1"}
    with contextlib.suppress(Exception):
        ips.add(ray.util.get_node_ip_address())
    return ips


def interrupt_main_thread() -> None:
    """Raise KeyboardInterrupt in the main thread at its next Python instruction.

    ``_thread.interrupt_main()`` simulates SIGINT, which does nothing when some library has set SIGINT's
    handler to SIG_IGN or SIG_DFL (measured: it never arrived in the full test suite, after vLLM and Ray had
    run in the process). An asynchronous exception does not depend on the signal handler. Neither one breaks
    a blocking C call; the watchdog's own ``check()`` in every polled call is the main path."""
    import ctypes

    main = ctypes.c_ulong(threading.main_thread().ident)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(main, ctypes.py_object(KeyboardInterrupt))


class Watchdog:
    """See the module docstring. ``capacity``: a ``CapacityWatch`` whose ``check`` runs first."""

    def __init__(self, run_dir: Path, timeout_s: float, capacity: Any = None, *, poll_s: float = 0.5,
                 grace_s: float = 15.0, dump_timeout_s: float = 20.0):  # fmt: skip
        self.run_dir, self.timeout_s, self.capacity = Path(run_dir), float(timeout_s), capacity
        self.poll_s, self.grace_s, self.dump_timeout_s = poll_s, grace_s, dump_timeout_s
        self._lock = threading.Lock()
        self._calls: dict[int, Call] = {}
        self._ids = itertools.count()
        self._last = time.monotonic()
        self._step = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stalled: StallDetected | None = None
        self.interrupted = False

    # ---- what the pools and the learner call -----------------------------------------------------
    @contextlib.contextmanager
    def track(self, what: str):
        call = Call(what, watchdog=self)
        with self._lock:
            key = next(self._ids)
            self._calls[key] = call
        try:
            yield call
        finally:
            with self._lock:
                self._calls.pop(key, None)
            self.progress()

    def progress(self, step: int | None = None) -> None:
        with self._lock:
            self._last = time.monotonic()
            if step is not None:
                self._step = step

    def check(self) -> None:
        if self.capacity is not None:
            self.capacity.check()
        if self.stalled is not None:
            raise self.stalled

    # ---- the watching thread ---------------------------------------------------------------------
    def start(self, step: int = 0) -> None:
        self.progress(step)
        if self._thread is None and self.timeout_s > 0:
            self._thread = threading.Thread(target=self._watch, name="relay-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                idle = time.monotonic() - self._last
            if idle < self.timeout_s:
                continue
            try:
                self.stalled = self._on_stall(idle)
            except Exception as exc:  # noqa: BLE001 - the run must still stop
                logger.exception("writing the stall dump failed")
                self.stalled = StallDetected(
                    f"no progress for {idle:.0f}s (cluster.stall_timeout_s); dump failed: {exc}"
                )
            logger.error("%s", self.stalled)
            if not self._stop.wait(self.grace_s):  # the driver did not reach a check(): interrupt it
                self.interrupted = True
                interrupt_main_thread()
            return

    def _on_stall(self, idle: float) -> StallDetected:
        now = time.monotonic()
        with self._lock:
            calls = [(c.what, now - c.started) for c in self._calls.values()]
            step = self._step + 1  # the step in progress
        out = self.run_dir / f"stall-step{step}"
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "driver.txt", self._driver_stacks())
        actors = self._dump_actors(out)
        hung = "; ".join(f"{what} (in flight {age:.0f}s)" for what, age in calls) or "no remote call in flight"
        record = {"step": step, "idle_s": round(idle, 1), "stall_timeout_s": self.timeout_s,
                  "in_flight": [{"call": w, "seconds": round(a, 1)} for w, a in calls], "actors": actors}  # fmt: skip
        atomic_write_text(out / "stall.json", json.dumps(record, indent=2) + "\n")
        return StallDetected(
            f"step {step} made no progress for {idle:.0f}s (cluster.stall_timeout_s={self.timeout_s:g}): {hung}; "
            f"stacks of the driver and of every actor are in {out}",
            out,
        )

    @staticmethod
    def _driver_stacks() -> str:
        names = {t.ident: t.name for t in threading.enumerate()}
        parts = [f"driver pid {os.getpid()}\n"]
        for ident, frame in sys._current_frames().items():
            parts.append(f"\nThread {ident} ({names.get(ident, '?')}):\n{''.join(traceback.format_stack(frame))}")
        return "".join(parts)

    def _dump_actors(self, out: Path) -> list[dict]:
        try:
            actors = _run_actors()
        except Exception as exc:  # noqa: BLE001 - Ray itself may be what is stuck
            atomic_write_text(out / "actors-error.txt", f"listing the run's actors failed: {exc!r}\n")
            return []
        spy, local = _py_spy(), _local_ips()
        for a in actors:
            if a["ip"] not in local or not a["pid"]:
                a["dump"] = "on another node: run `py-spy dump --pid PID` there"
                continue
            if spy is None:
                a["dump"] = "py-spy is not installed"
                continue
            name = f"actor-{a['class']}-{a['pid']}.txt"
            try:
                proc = subprocess.run([spy, "dump", "--pid", str(a["pid"])], capture_output=True, text=True,
                                      timeout=self.dump_timeout_s)  # fmt: skip
                text = proc.stdout + (f"\n[py-spy exit {proc.returncode}]\n{proc.stderr}" if proc.returncode else "")
            except subprocess.TimeoutExpired:
                text = f"py-spy dump timed out after {self.dump_timeout_s:g}s\n"
            atomic_write_text(out / name, text)
            a["dump"] = name
        return actors


def tracked(watch: Any, what: str):
    """``watch.track(what)`` when ``watch`` is a ``Watchdog``, else a no-op context (for the pools)."""
    track = getattr(watch, "track", None)
    return track(what) if track is not None else contextlib.nullcontext(Call(what))


def watchdog_callback(watchdog: Watchdog):
    """A TrainerCallback that starts ``watchdog`` when training starts (model loading is not a stall),
    reports each step as progress and stops it at the end."""
    from transformers import TrainerCallback

    class WatchdogCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            watchdog.start(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            watchdog.progress(state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            watchdog.stop()

    return WatchdogCallback()
