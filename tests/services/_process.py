"""Local service processes: started on 127.0.0.1, tied to the test session's life, stopped by PID.

Three layers make sure nothing outlives the session, even when tests fail or pytest is interrupted:
the session fixture's finalizer stops each service; an atexit hook stops whatever is still running;
and every child is started with PR_SET_PDEATHSIG, so the kernel kills it if pytest itself dies
(SIGKILL included), which no Python-level hook can catch.

``scripts/services`` (tests/services/daemon.py) starts the same servers to outlive the command that
starts them: a ``detached=True`` process gets neither PR_SET_PDEATHSIG nor the atexit hook (its
caller records its PID and stops it later), and ``detached_processes()`` makes every process the
harness's ``start_local_*`` functions start inside it detached.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_running: list[ServiceProcess] = []
_lock = threading.Lock()
# Inside detached_processes(): the list that collects every detached process started there.
_detached: contextvars.ContextVar[list[ServiceProcess] | None] = contextvars.ContextVar("detached", default=None)


class ServiceError(RuntimeError):
    """A service could not be started; the message says what is missing and how to get it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _child_setup(uid: int | None, gid: int | None, *, die_with_parent: bool = True) -> Callable[[], None]:
    def setup() -> None:
        os.setsid()  # own process group: stop() signals the whole group
        if gid is not None:
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
        if die_with_parent:
            # After any credential change, which clears it: die with the parent, however it dies.
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


@contextlib.contextmanager
def detached_processes() -> Iterator[list[ServiceProcess]]:
    """Every ``ServiceProcess`` created inside is ``detached`` (unless told otherwise); the list
    yielded collects those started, so that a caller whose start failed half-way can stop them."""
    started: list[ServiceProcess] = []
    token = _detached.set(started)
    try:
        yield started
    finally:
        _detached.reset(token)


def _detached_default() -> bool:
    return _detached.get() is not None


@dataclass
class ServiceProcess:
    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    uid: int | None = None
    gid: int | None = None
    stop_signal: int = signal.SIGTERM
    # A throwaway directory (data, logs) removed once the process is stopped.
    remove_after: Path | None = None
    # Detached: outlives its parent (no PR_SET_PDEATHSIG) and the interpreter (no atexit stop); whoever
    # started it records its PID and stops it. Default: False, or True inside detached_processes().
    detached: bool = field(default_factory=_detached_default)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            list(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            preexec_fn=_child_setup(self.uid, self.gid, die_with_parent=not self.detached),
        )
        if self.detached:
            collecting = _detached.get()
            if collecting is not None:
                collecting.append(self)
        else:
            with _lock:
                _running.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``check`` until it returns True; fail early if the process died. Returns seconds."""
        started = time.monotonic()
        last_error: Exception | None = None
        while time.monotonic() - started < timeout:
            if not self.alive():
                raise ServiceError(
                    f"{self.name} exited while starting ({what}); log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if check():
                    return time.monotonic() - started
            except Exception as exc:  # the service is not ready yet; keep the last reason
                last_error = exc
            time.sleep(0.1)
        self.stop()
        raise ServiceError(
            f"{self.name} was not ready after {timeout:.0f}s ({what}; last error: {last_error}); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Children of the service (if any) share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self._log.close()
        if self.remove_after is not None:
            shutil.rmtree(self.remove_after, ignore_errors=True)
        with _lock:
            if self in _running:
                _running.remove(self)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the whole process group and reap it: a crash, no shutdown at all. Unlike ``stop()``,
        nothing is removed (``remove_after`` stays for a later ``stop()``), so ``start()`` can run
        the same command line again on the same data."""
        if self.proc is None:
            return
        # Stopped first, so that nothing forks while its descendants are listed: Postgres's backends
        # call setsid(), so they are in no group of ours and a killpg alone would leave them running
        # (they exit when they next notice the postmaster gone, which may be after the next start).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGSTOP)
        doomed = _descendants(self.proc.pid)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        # The other processes are reaped by init, not by us: wait until none is left running, so the
        # next start finds no process holding the port or shared memory.
        deadline = time.monotonic() + timeout
        while (_group_members(self.proc.pid) or _running_of(doomed)) and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(Exception):
            self._log.close()
        with _lock:
            if self in _running:
                _running.remove(self)


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children, ...), whatever their group."""
    children: dict[int, list[int]] = {}
    for pid, stat in _stats():
        children.setdefault(int(stat[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running_of(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are not yet dead (zombies do not count)."""
    wanted = set(pids)
    return [pid for pid, stat in _stats() if pid in wanted and stat[0] not in ("Z", "X")]


def _stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, [state, ppid, pgrp, ...]) of every process, from /proc/<pid>/stat."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ")"
        yield int(entry), stat[stat.rfind(")") + 2 :].split()


def _group_members(pgid: int) -> list[int]:
    """The processes of a process group that are not yet dead (zombies do not count)."""
    return [pid for pid, stat in _stats() if len(stat) > 2 and stat[0] not in ("Z", "X") and int(stat[2]) == pgid]


def stop_all() -> None:
    for service in list(reversed(_running)):
        service.stop()


atexit.register(stop_all)
