"""A run lease: a small JSON document that a live attempt keeps renewing, for destinations that have
no lock of their own (object stores, Iceberg warehouses).

It is RUNNING evidence for a diagnosis, not mutual exclusion: each sink's commit is what guarantees
one publish per run. A lease stops counting when it expires, or at once when its holder ran on this
host and its pid is gone (the process table is better evidence than the clock for a SIGKILLed
attempt).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from ._errors import RunInProgress
from ._types import AttemptInfo, Run


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    def __init__(
        self,
        run: Run,
        seconds: int,
        location: str,
        read_bytes: Callable[[], bytes | None],
        write_bytes: Callable[[bytes], None],
        delete: Callable[[], None],
    ) -> None:
        self.run = run
        self.seconds = seconds
        self.location = location
        self._read, self._write_bytes, self._delete = read_bytes, write_bytes, delete
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            raw = self._read()
            return json.loads(raw) if raw else None
        except (OSError, ValueError):
            return None

    def live_holder(self) -> dict[str, Any] | None:
        """The lease document if another attempt holds it and is alive, else None."""
        doc = self.read()
        if not doc or doc.get("attempt") == self.run.attempt:
            return None
        if dt.datetime.fromisoformat(doc.get("expires_at", "1970-01-01T00:00:00+00:00")) <= dt.datetime.now(dt.UTC):
            return None
        if doc.get("host") == socket.gethostname() and not pid_alive(doc.get("pid")):
            return None
        return doc

    def _write(self) -> None:
        now = dt.datetime.now(dt.UTC)
        doc = {
            **AttemptInfo.current(self.run.attempt).to_dict(),
            "run_id": self.run.run_id,
            "renewed_at": now.isoformat(timespec="seconds"),
            "expires_at": (now + dt.timedelta(seconds=self.seconds)).isoformat(timespec="seconds"),
        }
        self._write_bytes(json.dumps(doc).encode())

    def acquire(self) -> None:
        holder = self.live_holder()
        if holder:
            raise RunInProgress(
                f"run {self.run.run_id} is RUNNING: attempt {holder.get('attempt')} (pid {holder.get('pid')} on "
                f"{holder.get('host')}) holds its lease until {holder.get('expires_at')}"
            )
        self._write()
        self._thread = threading.Thread(target=self._renew, name="run-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            with contextlib.suppress(Exception):
                self._write()

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        doc = self.read()
        if doc and doc.get("attempt") == self.run.attempt:
            with contextlib.suppress(Exception):
                self._delete()
