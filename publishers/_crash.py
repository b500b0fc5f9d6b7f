"""Named crash points: ``PUBLISH_CRASH_AT=<point>`` SIGKILLs the process exactly there.

SIGKILL, not an exception: nothing unwinds, no finally block runs, no buffer is flushed, which is
what the OOM killer and a power cut do. The contract suite uses these to prove every sink's
diagnosis names the state each point leaves behind.
"""

from __future__ import annotations

import os
import signal
import sys
import time

ENV_VAR = "PUBLISH_CRASH_AT"
# ``PUBLISH_PAUSE_AT=<point>:<seconds>[,<point>:<seconds>...]`` sleeps there instead: tests use it
# to hold an attempt at a known point (to observe RUNNING, race a second attempt, or send SIGTERM
# mid-stage) without relying on timing luck.
PAUSE_ENV_VAR = "PUBLISH_PAUSE_AT"

# Every point, in the order a run passes them. Sinks use the shared ones and may add their own.
POINTS = (
    "after_extract",  # pipeline: inputs read, nothing staged
    "mid_transform",  # pipeline: transform under way, nothing staged
    "after_lock",  # publisher: run lock held and the run checked under it, nothing staged
    "mid_stage",  # publisher: part of the records staged, not yet durable
    "after_stage",  # publisher: everything staged and durable, commit not started
    "after_data_rename",  # file sink: data at its final name, success marker not yet written
    "before_commit",  # postgres: MERGE and ledger row done inside the transaction, COMMIT not sent
    "after_commit",  # publisher: commit point passed, attempt's cleanup not done
    "after_cleanup",  # publisher: everything done, lock still held
    "mid_clean",  # recover/sweep: the first orphan removed, the others not yet
)


def crash_point_armed(name: str) -> bool:
    """True if a test asked to crash or pause at ``name``: a sink may then do extra work first (make
    what it wrote so far reach the destination) that a normal run should not pay for."""
    paused = {pause.partition(":")[0] for pause in os.environ.get(PAUSE_ENV_VAR, "").split(",")}
    return os.environ.get(ENV_VAR) == name or name in paused


def crash_point(name: str) -> None:
    """Die by SIGKILL here if ``PUBLISH_CRASH_AT`` names this point (or pause if asked to)."""
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    for pause in os.environ.get(PAUSE_ENV_VAR, "").split(","):
        point, _, seconds = pause.partition(":")
        if point == name:
            # Said on stderr, so a test can act (send a signal, kill a server) exactly here.
            sys.stderr.write(f"PUBLISH_PAUSE_AT: paused at {name}\n")
            sys.stderr.flush()
            time.sleep(float(seconds or "1"))
