"""SIGTERM and SIGINT: an orchestrator's stop (or Ctrl-C) unwinds an attempt that has not reached its
commit, so it removes its own staging and ends with 143 (130 for SIGINT). From the commit on, a
signal is held, not obeyed: cutting a commit between its steps is exactly the state that needs an
operator, and a commit that landed must be reported as published. The attempt finishes the commit
(or learns that its outcome is unknown), and the caller reads ``pending()`` to say so.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from ._errors import Terminated

_state: dict[str, int] = {"depth": 0, "pending": 0, "received": 0, "scopes": 0}
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["depth"]:
        _state["pending"] = _state["pending"] or signum
        return
    _state["received"] = _state["received"] or signum
    raise stopped(signum)


def stopped(signum: int, cause: str = "") -> Terminated:
    """The Terminated of a stop by ``signum`` before the commit point (``cause``: what it cut)."""
    name = signal.Signals(signum).name
    return Terminated(f"received {name}; stopped before the commit point" + (f" ({cause})" if cause else ""), signum)


def received() -> int:
    """The signal that was turned into Terminated in this block (0 if none). It stays set: the
    exception can be caught and lost on its way up (by a library's ``except Exception``, inside an
    import, in a callback from C), and the stop must still be obeyed and reported as one."""
    return _state["received"]


def stopping() -> int:
    """``received()`` while a ``terminate_on_signals`` block is open, else 0: a stop belongs to the
    block it arrived in. (A library publish after that block ended, with no block of its own, is
    not stopped by it; found by a test that ran after one that had been stopped.)"""
    return _state["received"] if _state["scopes"] else 0


def stop_if_received() -> None:
    """Raise Terminated again if a signal arrived before this point, whatever became of the first
    one: called before a commit starts, so a stop that someone swallowed never ends in a commit.
    Inside a critical section (a group's commits after its decision) it does nothing: from there
    on, a signal waits for the end."""
    if (signum := stopping()) and not _state["depth"]:
        raise stopped(signum)


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into a Terminated exception in the main thread while the block runs
    (outside a critical section). Nested use is harmless."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _state["scopes"]:
        _state["received"] = 0
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    _state["scopes"] += 1
    try:
        yield
    finally:
        _state["scopes"] -= 1
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def critical_section() -> Iterator[None]:
    """Hold SIGTERM and SIGINT while the block runs: a signal that arrives is remembered (see
    ``pending``) and obeyed by nobody; the block runs to its end."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1


def pending() -> int:
    """The signal that arrived inside a critical section (0 if none); the caller reports it."""
    return _state["pending"]


def clear_pending() -> None:
    _state["pending"] = 0


pending_signal = pending  # the SDK's names for them
received_signal = received
