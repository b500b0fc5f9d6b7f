"""A run lease: a small JSON document that a live attempt keeps renewing, for destinations that have
no lock of their own (object stores, Iceberg warehouses).

A lease stops counting when it expires, or at once when its holder ran in this process's pid scope
(``pid_scope``: this host's name, boot and PID namespace) and its pid is gone (the process table is
better evidence than the clock for a SIGKILLed attempt).

Where the destination has conditional writes (S3: If-None-Match / If-Match), the lease is taken and
renewed by compare-and-swap, so two attempts can never both hold it: without that, the second
writer overwrites the first's lease, and its diagnosis then sees the first attempt's in-flight
objects with no live lease, i.e. as orphans, and tells the operator to clean them up while they are
being written. Elsewhere it is evidence only. Either way each sink's commit is what guarantees one
publish per run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._errors import DestinationUnavailable, RunInProgress
from ._types import AttemptInfo, Run

log = logging.getLogger("atomic_publish.lease")


class LeaseTaken(Exception):
    """A conditional lease write found another version in place: another attempt got there first."""


# Conditional access to the lease document: read it with its version (an ETag), and write it only if
# the version is still the one read (None: only if there is no document). Returns the new version
# or raises LeaseTaken.
ReadVersioned = Callable[[], "tuple[bytes, str] | None"]
SwapIfUnchanged = Callable[[bytes, "str | None"], str]


@functools.cache
def pid_scope() -> str:
    """Where a pid names one process: a tag of this host's name, its boot and this process's PID
    namespace. Only a process of the same scope can tell from a pid that a process is gone: two
    containers with one hostname (host networking, a sidecar) each number their own processes
    (found from outside: a recover in another PID namespace of the same host took a live publish's
    lease and removed its staging), and so does a host after a reboot."""
    parts = [socket.gethostname()]
    for read in (
        lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        lambda: os.readlink("/proc/self/ns/pid"),
    ):
        try:
            parts.append(read())
        except OSError:
            parts.append("")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


SHORT_SCOPE = 6  # hex characters of a pid scope where room is short (a Postgres application_name)


def is_this_scope(scope: Any) -> bool:
    """Whether ``scope`` (a pid scope, or its first SHORT_SCOPE characters) is this process's own."""
    return isinstance(scope, str) and scope in (pid_scope(), pid_scope()[:SHORT_SCOPE])


def gone_here(scope: Any, pid: Any) -> bool:
    """Whether process ``pid`` of pid scope ``scope`` is provably not running: only when ``scope``
    is this process's own (without one, or another: not provable here; its lease's clock decides)."""
    return is_this_scope(scope) and isinstance(pid, int) and not pid_alive(pid)


def pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` (on this host) is running. A zombie (dead, not yet reaped by its
    parent) is not: it holds nothing and will never do anything again, yet ``kill(pid, 0)``
    succeeds on it, so a killed driver whose parent has not waited for it would look alive."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:  # no /proc (macOS), or gone meanwhile: kill() said it exists
        return True
    # "pid (comm) S ...": the state follows the last ")" (comm may itself contain ")").
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X", b"x")


class Lease:
    """``access`` is how the lease document is read with its version and swapped: conditional
    where the destination can (see ``local_conditional`` and the S3 sink), else ``unconditional``."""

    def __init__(
        self,
        run: Run,
        seconds: int,
        location: str,
        access: tuple[ReadVersioned, SwapIfUnchanged],
        delete: Callable[[], None],
        *,
        purpose: str = "publish",
    ) -> None:
        self.run = run
        self.purpose = purpose  # what holds the run: "publish", or "recover" (written into the lease)
        self.seconds = seconds
        self.location = location
        self._read_versioned, self._swap = access
        self._delete = delete
        self._version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            current = self._read_versioned()
        except OSError:
            return None
        return self._parse(current[0]) if current else None

    def live_holder(self) -> dict[str, Any] | None:
        """The lease document if another attempt holds it and is alive, else None."""
        return self._live(self.read())

    def _live(self, doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if not doc or doc.get("attempt") == self.run.attempt:
            return None
        if dt.datetime.fromisoformat(doc.get("expires_at", "1970-01-01T00:00:00+00:00")) <= dt.datetime.now(dt.UTC):
            return None
        if gone_here(doc.get("pid_scope"), doc.get("pid")):
            return None
        return doc

    def _document(self) -> bytes:
        now = dt.datetime.now(dt.UTC)
        doc = {
            **AttemptInfo.current(self.run.attempt).to_dict(),
            "pid_scope": pid_scope(),
            "purpose": self.purpose,
            "run_id": self.run.run_id,
            "renewed_at": now.isoformat(timespec="seconds"),
            "expires_at": (now + dt.timedelta(seconds=self.seconds)).isoformat(timespec="seconds"),
        }
        return json.dumps(doc).encode()

    def _refuse(self, holder: dict[str, Any]) -> RunInProgress:
        # Found from outside: a recover that lost to another recover named it as an attempt of the run.
        what = "a recover" if holder.get("purpose") == "recover" else "attempt"
        return RunInProgress(
            f"run {self.run.run_id} is RUNNING: {what} {holder.get('attempt')} (pid {holder.get('pid')} on "
            f"{holder.get('host')}) holds its lease until {holder.get('expires_at')}"
        )

    def acquire(self) -> None:
        try:
            current = self._read_versioned()
        except OSError:
            current = None
        doc, version = (self._parse(current[0]), current[1]) if current else (None, None)
        holder = self._live(doc)
        if holder:
            raise self._refuse(holder)
        try:
            # Taken only if nobody wrote it since we read it: of two attempts, one wins.
            self._version = self._swap(self._document(), version)
        except LeaseTaken:
            # The condition failed: someone wrote it, which may be our own write whose answer was
            # lost. Reading it back tells which.
            current = self._read_versioned()
            doc = self._parse(current[0]) if current else None
            if not (current and doc and doc.get("attempt") == self.run.attempt):
                raise self._refuse(doc or {"attempt": "(unknown)"}) from None
            self._version = current[1]
        self._thread = threading.Thread(target=self._renew, name="run-lease", daemon=True)
        self._thread.start()

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any] | None:
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self._version = self._swap(self._document(), self._version)
            except LeaseTaken:
                # Only possible once ours had expired (a stalled process): another attempt holds it
                # now. Our commit is still conditional, so at most one of us publishes.
                log.warning("the lease %s was taken over by another attempt; no longer renewing it", self.location)
                return
            except Exception:  # noqa: S112 - a failed renewal is retried at the next interval
                continue

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours. Never raises: a destination that
        is down leaves the lease to expire (and a dead pid on this host does not count anyway)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            doc = self.read()
            if doc and doc.get("attempt") == self.run.attempt:
                self._delete()
        except Exception as exc:
            log.warning("could not release the lease %s (%s); it expires at its time", self.location, exc)


def unconditional(
    read_bytes: Callable[[], bytes | None], write_bytes: Callable[[bytes], None]
) -> tuple[ReadVersioned, SwapIfUnchanged]:
    """Lease access for a destination without conditional writes: the "swap" overwrites whatever
    is there, so the lease is evidence only."""

    def read_versioned() -> tuple[bytes, str] | None:
        raw = read_bytes()
        return (raw, "") if raw else None

    def swap(data: bytes, expected: str | None) -> str:
        write_bytes(data)
        return ""

    return read_versioned, swap


def local_conditional(path: Path) -> tuple[ReadVersioned, SwapIfUnchanged]:
    """Compare-and-swap for a lease file on a local filesystem: the version is the sha256 of the
    content (it holds its renewal time, so it changes at every write), and the compare and the
    replace run under an flock of the lease's directory, so two processes on the host cannot
    interleave (the directory, not a side file: a guard file would be left behind for good)."""
    import fcntl
    import hashlib

    def read_versioned() -> tuple[bytes, str] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def swap(data: bytes, expected: str | None) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            guard = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot write the run's lease {path}: {exc.strerror or exc}") from exc
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)  # released when the descriptor is closed
            current = read_versioned()
            if (current[1] if current else None) != expected:
                raise LeaseTaken(str(path))
            tmp.write_bytes(data)
            os.replace(tmp, path)  # readers see the old or the new document, never half of one
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()  # a full disk must not leave a temp file behind
            raise DestinationUnavailable(f"cannot write the run's lease {path}: {exc.strerror or exc}") from exc
        finally:
            os.close(guard)
        return hashlib.sha256(data).hexdigest()

    return read_versioned, swap
