"""The staging hash runs on a second thread; a signal's exception (Terminated) can land anywhere in
the main thread, and the error path then asks the hasher to stop again. Found under load by
tests/unit/test_pipeline.py: SIGTERM during staging hung the publish for good."""

from __future__ import annotations

import hashlib
import threading

import pytest

from atomic_publish.publishers._fs import BackgroundSha256


class Interrupted(BaseException):
    """Stands in for the Terminated a signal handler raises."""


def _returns_within(fn, seconds: float = 10.0):  # type: ignore[no-untyped-def]
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "hexdigest() never returned: the hashing thread was never told to stop"
    return out[0]


def test_a_stop_interrupted_before_it_was_queued_is_sent_again():
    hasher = BackgroundSha256()
    hasher.update(b"abc")
    real_put, calls = hasher._queue.put, []

    def put(item, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(item)
        if item is None and calls.count(None) == 1:
            raise Interrupted  # the signal lands just before the end mark is queued
        return real_put(item, *args, **kwargs)

    hasher._queue.put = put  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        hasher.hexdigest()
    assert _returns_within(hasher.hexdigest) == hashlib.sha256(b"abc").hexdigest()


def test_a_lost_wake_up_does_not_hang_the_hasher():
    """An exception in the middle of Queue.put can leave an item queued with its notify() lost (what
    hung the publish under SIGTERM). Simulated exactly: the end mark goes into the queue's deque
    with no notify. The hashing thread must still find it, and hexdigest() return."""
    hasher = BackgroundSha256()
    hasher.update(b"abc")
    import time

    time.sleep(0.3)  # the hashing thread has taken b"abc" and waits on the empty queue
    with hasher._queue.mutex:
        hasher._queue.queue.append(None)  # queued, never notified
    hasher._thread.join(10)  # what hexdigest() then waits for
    assert not hasher._thread.is_alive(), "the hashing thread waits for a wake-up that was lost"
    assert hasher._digest.hexdigest() == hashlib.sha256(b"abc").hexdigest()
