"""SIGTERM handling: an orchestrator's SIGTERM unwinds the attempt so it removes its own staging,
except inside the commit, which is short and must not be cut between its steps (a half-done file
commit is exactly the state that needs an operator). SIGTERM there is held until the commit ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from ._errors import Terminated

_in_critical = {"depth": 0}


def _handler(signum: int, frame: FrameType | None) -> None:
    if _in_critical["depth"]:
        # Inside the commit: ignored. The commit finishes, and with it the attempt, which then
        # ends on its own a moment later; raising afterwards would report a published run as failed.
        return
    raise Terminated(f"received signal {signum}; removing this attempt's staging and stopping")


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into a Terminated exception in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def critical_section() -> Iterator[None]:
    """Hold SIGTERM off while the block runs (see _handler)."""
    _in_critical["depth"] += 1
    try:
        yield
    finally:
        _in_critical["depth"] -= 1
