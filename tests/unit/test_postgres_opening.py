"""The Postgres bulk load's connection, opened on a thread while the run is locked and checked
(postgres._OpeningLoad): what happens to it when nobody takes it. With a stand-in for ADBC's
connection (the real one is tested against the server: test_postgres_sink)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from atomic_publish.publishers import postgres


class SlowConnection:
    """Opens in ``seconds``; records its closing."""

    opened: list[SlowConnection] = []

    def __init__(self, uri: str, seconds: float = 0.3) -> None:
        time.sleep(seconds)
        self.closed = threading.Event()
        SlowConnection.opened.append(self)

    def __exit__(self, *exc: object) -> None:
        self.closed.set()


@pytest.fixture
def slow(monkeypatch):
    SlowConnection.opened = []
    monkeypatch.setattr(postgres, "_AdbcLoad", SlowConnection)
    return SlowConnection.opened


def _wait_for(opened: list[SlowConnection]) -> SlowConnection:
    deadline = time.monotonic() + 5
    while not opened and time.monotonic() < deadline:
        time.sleep(0.01)
    (conn,) = opened
    return conn


def test_abandoned_while_it_opens_it_is_closed_once_it_opens(slow):
    opening = postgres._OpeningLoad("postgresql://", "attempt", 60)
    opening.abandon()  # the lock released (RUNNING, DONE, an error) before the connection opened
    assert _wait_for(slow).closed.wait(5)


def test_abandoned_after_it_opened_it_is_closed_at_once(slow):
    opening = postgres._OpeningLoad("postgresql://", "attempt", 60)
    conn = _wait_for(slow)
    assert opening._settled.wait(5)
    assert not conn.closed.is_set()
    opening.abandon()
    assert conn.closed.is_set()


def test_a_signal_while_the_load_waits_for_it_leaves_nothing_open(slow):
    """The load waits for the connection (take); a signal's exception ends the wait: the load's
    caller abandons it (as _bulk_load does), and the thread closes it when it opens."""

    class Stop(Exception):
        pass

    def stop(signum, frame):  # type: ignore[no-untyped-def]
        raise Stop

    previous = signal.signal(signal.SIGALRM, stop)
    opening = postgres._OpeningLoad("postgresql://", "attempt", 60)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Stop):
            opening.take(besides=set())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        opening.abandon()
    assert _wait_for(slow).closed.wait(5)


def test_a_connection_that_failed_raises_in_the_load(monkeypatch):
    def refuse(uri: str) -> None:
        raise ConnectionRefusedError("no server")

    monkeypatch.setattr(postgres, "_AdbcLoad", refuse)
    opening = postgres._OpeningLoad("postgresql://", "attempt", 60)
    with pytest.raises(ConnectionRefusedError, match="no server"):
        opening.take(besides=set())
    opening.abandon()  # nothing to close


def test_not_taken_within_its_keep_time_it_is_closed_and_the_load_opens_its_own(slow):
    """A process that holds the lock and loads nothing itself (a Spark job's holder, a group's
    roll-forward) keeps no idle session: the thread closes it, and a load after that gets None."""
    opening = postgres._OpeningLoad("postgresql://", "attempt", 0.2)
    conn = _wait_for(slow)
    assert not conn.closed.wait(0.05)  # kept meanwhile
    assert conn.closed.wait(5)
    assert opening.take(besides=set()) is None
    opening._thread.join(5)
    assert not opening._thread.is_alive()


def test_taken_in_time_it_stays_open_past_its_keep_time(slow):
    opening = postgres._OpeningLoad("postgresql://", "attempt", 0.2)
    taken = opening.take(besides=set())
    assert taken is not None
    conn, _ = taken
    opening._thread.join(5)
    assert not opening._thread.is_alive()  # the thread ends once it is taken
    assert not conn.closed.wait(0.4)
