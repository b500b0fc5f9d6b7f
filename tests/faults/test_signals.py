"""SIGTERM at every named crash point of every sink; SIGINT where it can differ.

Before the commit point the attempt removes its own staging and exits 143 (SIGTERM) or 130 (SIGINT),
leaving the run NOTHING_IN_FLIGHT. From the commit point on the signal is held: the commit finishes,
the run is published (DONE), the process exits 0 and says on stderr that a signal arrived. The
published data is checked by the sink's independent reader.

Both signals go through one handler (publishers._signals), so SIGINT is sent at every point only
where a library handles it itself (Postgres: ADBC cancels its COPY on Ctrl-C); elsewhere at one
point before the commit (mid_stage) and one from the commit on (after_commit). The pipeline's own
points (after_extract, mid_transform) come before any sink is touched: they run on the file sink only.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from atomic_publish import Run
from atomic_publish.publishers.taxonomy import State
from tests.contract.harness import CRASH_POINTS, DATASET, DATE, HARNESSES, loaded
from tests.helpers import cli_env, refunds_run_args, run_cli, start_cli

from . import outcomes

pytestmark = [pytest.mark.faults]

# Points inside or after the commit: a signal there is held until publish() returns.
COMMITTING = {"after_data_rename", "before_commit", "after_commit", "after_cleanup"}


# Points of the refunds pipeline, before any sink is touched: the same code whatever the sink.
PIPELINE_POINTS = {"after_extract", "mid_transform"}
# Where SIGINT is sent besides SIGTERM: every point where a library handles Ctrl-C itself, else one
# point on each side of the commit.
SIGINT_EVERYWHERE = {"postgres"}
SIGINT_POINTS = {"mid_stage", "after_commit", *PIPELINE_POINTS}


def _cases() -> list[object]:
    cases = []
    for sink, points in CRASH_POINTS.items():
        marks = [pytest.mark.integration] if HARNESSES[sink][0] else []
        for point in points:
            if point in PIPELINE_POINTS and sink != "file":
                continue
            cases.append(pytest.param(sink, point, signal.SIGTERM, marks=marks, id=f"{sink}-{point}-TERM"))
            if sink in SIGINT_EVERYWHERE or point in SIGINT_POINTS:
                cases.append(pytest.param(sink, point, signal.SIGINT, marks=marks, id=f"{sink}-{point}-INT"))
    return cases


def wait_for_pause(proc: subprocess.Popen[str], point: str, timeout: float = 90.0) -> list[str]:
    """Read the process's stderr until it says it is paused at ``point``; return what it said."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if f"PUBLISH_PAUSE_AT: paused at {point}" in line:
            return seen
    proc.kill()
    raise AssertionError(f"the attempt never paused at {point}:\n{''.join(seen)}")


def job(harness, inputs):  # type: ignore[no-untyped-def]
    return (harness.command or refunds_run_args)(inputs)


@pytest.mark.parametrize("harness, point, signum", _cases(), indirect=["harness"])
def test_signal_at_every_point(harness, point, signum, tmp_path, small_inputs, reference):
    cfg = harness.make_config(tmp_path)
    held = point in COMMITTING
    # A held signal lets the pause run to its end; an obeyed one cuts it short (except Ctrl-C during
    # a Postgres bulk load: ADBC handles SIGINT itself by cancelling the COPY, which ends the load
    # when the pause inside it is over; the attempt then stops the same way).
    env = cli_env(cfg, PUBLISH_PAUSE_AT=f"{point}:{1.5 if held else 6}", **harness.extra_env)
    proc = start_cli(*job(harness, small_inputs), env=env)
    wait_for_pause(proc, point)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, rest = proc.communicate(timeout=90)
    took = time.monotonic() - sent
    name = signal.Signals(signum).name

    doc = run_cli(
        "diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=cli_env(cfg, **harness.extra_env)
    ).json()
    published = harness.gated_read(loaded(cfg), Run.new(DATASET, DATE))
    if held:
        assert proc.returncode == 0, rest
        assert f"{name} arrived during the commit" in rest and "published" in rest, rest
        assert doc["state"] == State.DONE.value, doc
        assert published is not None
    else:
        assert proc.returncode == 128 + signum, rest
        assert "Traceback" not in rest and f"received {name}" in rest, rest
        assert took < 20, f"took {took:.1f}s to stop"
        # The attempt removed its own staging: nothing to recover, nothing visible.
        assert doc["state"] == State.NOTHING_IN_FLIGHT.value, doc
        assert published is None
        # Following the advice (re-run) ends in DONE.
        rerun = run_cli(*job(harness, small_inputs), env=cli_env(cfg, **harness.extra_env))
        assert rerun.code == 0, rerun.stderr
    # Published once, with exactly the input's rows: the bytes of a clean run of the same input.
    assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) == reference(harness)
    when = "from the commit point on (held)" if held else "before the commit point"
    outcomes.record(
        "signal",
        harness.name,
        f"{name}, {when}",
        exit_code=proc.returncode,
        took=took,
        state=doc["state"],
        then="DONE",
        point=point,
    )


# Where a crash leaves at least two orphans, so that recover can be stopped between them.
_TWO_ORPHANS = {"file": "after_data_rename", "s3": "mid_stage", "postgres": "after_stage", "iceberg": "after_stage"}


@pytest.mark.parametrize(
    "harness",
    [pytest.param(s, marks=[pytest.mark.integration] if HARNESSES[s][0] else [], id=s) for s in _TWO_ORPHANS],
    indirect=True,
)
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT", "SIGKILL"])
@pytest.mark.parametrize("command", ["recover", "sweep"])
def test_cleaning_stopped_between_two_removals_leaves_a_diagnosable_run(harness, stop, command, tmp_path, small_inputs):
    """recover --apply (or sweep --apply) stopped after its first removal (SIGTERM: exit 143, SIGINT:
    130, SIGKILL): what is left is still explained (ORPHANED or NOTHING_IN_FLIGHT, never UNKNOWN),
    and recovering again finishes."""
    cfg = harness.make_config(tmp_path)
    crashed = run_cli(
        *job(harness, small_inputs), env=cli_env(cfg, PUBLISH_CRASH_AT=_TWO_ORPHANS[harness.name], **harness.extra_env)
    )
    assert crashed.code == -signal.SIGKILL
    recover = ("recover", "--dataset", DATASET, "--run-date", DATE, "--apply")
    cleaner = recover if command == "recover" else ("sweep", "--dataset", DATASET, "--older-than", "0s", "--apply")
    if stop == "SIGKILL":
        stopped = run_cli(*cleaner, env=cli_env(cfg, PUBLISH_CRASH_AT="mid_clean", **harness.extra_env))
        assert stopped.code == -signal.SIGKILL, stopped.stderr
    else:
        signum = signal.Signals[stop]
        proc = start_cli(*cleaner, env=cli_env(cfg, PUBLISH_PAUSE_AT="mid_clean:60", **harness.extra_env))
        wait_for_pause(proc, "mid_clean")
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum and "Traceback" not in rest, rest
        assert f"received {stop}" in rest and "removed its own staging" not in rest, rest
    doc = run_cli(
        "diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=cli_env(cfg, **harness.extra_env)
    ).json()
    assert doc["state"] in ("ORPHANED", "NOTHING_IN_FLIGHT"), doc
    again = run_cli(*recover, env=cli_env(cfg, **harness.extra_env))
    assert again.code == 10, again.stderr
    assert run_cli(*job(harness, small_inputs), env=cli_env(cfg, **harness.extra_env)).code == 0
