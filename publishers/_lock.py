"""The file-based run lock: flock(2) on a per-run lock file.

flock is released by the kernel when the holder dies, however it dies (SIGKILL, OOM), so a held
lock is proof of a live attempt and a free lock is proof there is none. The lock file is never
deleted: unlinking a lock file that another process may be about to flock is a classic race.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ._errors import DestinationUnavailable, RunInProgress
from ._types import AttemptInfo
from .taxonomy import LockHolder

# A diagnosis probes the lock with a shared flock for a few microseconds; an attempt that starts
# at that very moment waits this long instead of reporting a spurious RUNNING.
_ACQUIRE_WAIT_SECONDS = 2.0


@contextlib.contextmanager
def hold_flock(path: Path, info: AttemptInfo, run_id: str) -> Iterator[None]:
    """Hold the exclusive run lock at ``path`` for the attempt ``info``, or raise RunInProgress."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DestinationUnavailable(f"cannot open the run lock {path}: {exc.strerror or exc}") from exc
    try:
        deadline = time.monotonic() + _ACQUIRE_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = read_holder(path)
                    who = (
                        f"attempt {holder.attempt} (pid {holder.pid} on {holder.host})" if holder else "another attempt"
                    )
                    raise RunInProgress(f"run {run_id} is RUNNING: {who} holds the lock {path}") from None
                time.sleep(0.05)
        # Holder details are for operators only; the flock itself is the evidence.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info.to_dict()) + "\n").encode(), 0)
        except OSError as exc:  # a full disk (found from outside: exit 1, "unexpected OSError")
            raise DestinationUnavailable(f"cannot write the run lock {path}: {exc.strerror or exc}") from exc
        yield
    finally:
        os.close(fd)  # releases the flock


def read_holder(path: Path) -> LockHolder | None:
    try:
        doc = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        doc = {}
    return LockHolder(
        attempt=doc.get("attempt"),
        pid=doc.get("pid"),
        host=doc.get("host"),
        started_at=doc.get("started_at"),
        location=str(path),
    )


def probe_flock(path: Path) -> LockHolder | None:
    """Return the holder if a live process holds the lock at ``path``, else None. Creates nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
