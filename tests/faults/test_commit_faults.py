"""A TCP fault proxy between the publishing client and its server, faults applied to the commit
request: the answer lost, the connection reset after the request, the request dropped, the request
stalled. Every case checks, with a reader that does not use the project's code:

- the call returned within its bound (commit_timeout_seconds + a request timeout + start-up);
- the exit code is a documented one and tells the truth: 0 only if the run is published, 5 only if
  it is not, 14 (unknown) either way but then nothing was removed;
- diagnose (straight to the server) agrees with what the reader sees;
- following its advice ends in DONE with exactly the input's data, once.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.services import s3

from . import outcomes
from .proxy import Fault, Stall
from .sinks import (
    CALL_BOUND_SECONDS,
    SINKS,
    FaultySink,
    faulty_sink,
    iceberg_sink,
    parquet_input,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

FAULTS = {
    "answer-lost": Fault.ANSWER_LOST,
    "reset-after-request": Fault.RESET_AFTER_REQUEST,
    "request-dropped": Fault.DROP_REQUEST,
    "stalled-1s": Stall(1.0),
}


@pytest.fixture(params=SINKS)
def sink(request: pytest.FixtureRequest, tmp_path: Any) -> FaultySink:
    return faulty_sink(request, tmp_path)


# Iceberg's staging crosses the network when its warehouse is an object store: the proxy then sits
# in front of MinIO (its commit, to the catalog, is iceberg-pg's case above).
@pytest.fixture(
    params=[*(f"s3-{server}" for server in s3.servers_for_tests()), "postgres", "kafka", "iceberg-pg-minio"]
)
def staging_sink(request: pytest.FixtureRequest, tmp_path: Any) -> FaultySink:
    return faulty_sink(request, tmp_path)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_on_the_commit_request_never_lies(sink, fault, tmp_path, small_inputs):
    inputs = parquet_input(small_inputs[0])
    direct = sink.config(tmp_path / "direct")
    # The reference: what this input publishes to, read back by the independent reader.
    with sink.faulty(f"{sink.name}-{fault}") as proxy:
        proxied = sink.config(tmp_path / "proxied", proxy.address)
        rule = proxy.add_rule(sink.commit_request(), FAULTS[fault])
        result, took = sink.publish(proxied, inputs)
        assert rule.triggered.is_set(), f"the fault never met the commit request: {result.stderr}"
        assert took < CALL_BOUND_SECONDS, f"publish took {took:.1f}s under {fault}"
        assert "Traceback" not in result.stderr
        published = sink.read(direct)
        if result.code == 0:
            assert published is not None, "exit 0, but the run is not published"
        elif result.code == 5:
            assert published is None, "exit 5 (not published), but the run is published"
        else:
            assert result.code == 14, result.stderr  # the outcome is unknown: nothing may have been removed
            assert "diagnose" in result.stderr
        doc = sink.diagnose(direct)
        if published is not None:
            assert doc["state"] in ("DONE", "PUBLISHED_WITH_ORPHANS"), doc
        else:
            assert doc["state"] in ("NOTHING_IN_FLIGHT", "ORPHANED", "RUNNING"), doc
    # The proxy is gone (its connections closed); the operator follows the advice.
    _advice_ends_in_the_input(sink, tmp_path, direct, inputs, "commit", fault, result.code, took, doc["state"])


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_on_a_staging_request_never_lies(staging_sink, fault, tmp_path, small_inputs):
    """The same faults on the first request that carries the run's data (S3's upload, Postgres's
    COPY, Kafka's Produce, Iceberg's data file upload to a MinIO warehouse): before the commit point,
    so the publish either gets through (0) or fails without publishing (5); never a partial run,
    never a traceback, always within its bound."""
    sink = staging_sink
    assert sink.staging_request is not None, f"{sink.name} names no staging request"
    inputs = parquet_input(small_inputs[0])
    direct = sink.config(tmp_path / "direct")
    with sink.faulty(f"{sink.name}-staging-{fault}") as proxy:
        proxied = sink.config(tmp_path / "proxied", proxy.address)
        rule = proxy.add_rule(sink.staging_request(), FAULTS[fault])
        result, took = sink.publish(proxied, inputs)
        assert rule.triggered.is_set(), f"the fault never met a staging request: {result.stderr}"
        assert took < CALL_BOUND_SECONDS, f"publish took {took:.1f}s under {fault}"
        assert "Traceback" not in result.stderr
        assert result.code in (0, 5), result.stderr
        published = sink.read(direct)
        assert (published is not None) == (result.code == 0), (result.code, result.stderr)
        doc = sink.diagnose(direct)
        expected = ("DONE",) if result.code == 0 else ("NOTHING_IN_FLIGHT", "ORPHANED", "RUNNING")
        assert doc["state"] in expected, doc
    _advice_ends_in_the_input(sink, tmp_path, direct, inputs, "staging", fault, result.code, took, doc["state"])


def _advice_ends_in_the_input(
    sink: FaultySink,
    tmp_path: Any,
    cfg: Any,
    inputs: Any,
    kind: str,
    fault: str,
    code: Any,
    took: Any,
    state: str,
    *,
    wait_running: float = 30.0,
    before: tuple[str, ...] = (),
) -> None:
    """Following diagnose's advice ends in DONE with exactly what a clean publish of the input
    reads back as; the case's outcome is recorded for docs/faults.md."""
    states = sink.follow_the_advice(cfg, inputs, wait_running=wait_running)
    assert states[-1] == "DONE"
    final = sink.read(cfg)
    assert final is not None and final == _reference(sink, tmp_path, inputs)
    outcomes.record(
        kind,
        sink.name,
        fault,
        exit_code=code,
        took=took,
        state=state,
        then=" → ".join([*before, *(states[1:] or states[-1:])]),
    )


def _reference(sink: FaultySink, tmp_path: Any, inputs: Any) -> bytes:
    """What a clean publish of the same input reads back as, in a fresh destination of the sink."""
    fresh = sink.fresh()
    cfg = fresh.config(tmp_path / "reference")
    result, _ = fresh.publish(cfg, inputs)
    assert result.code == 0, result.stderr
    data = fresh.read(cfg)
    assert data is not None
    return data


def test_a_catalog_that_stops_answering_before_the_commit_ends_the_publish_within_its_bound(
    tmp_path, small_inputs, fault_postgres
):
    """Found from outside: a Postgres-backed SQL catalog paused (SIGSTOP) between the staging and the
    commit held ``publish`` for as long as it stayed paused (635 s): the commit's reload of the table
    waited with no bound (the paused server's kernel still acknowledges every packet, so no TCP or
    server-side timeout fires). Every catalog request now has ``timeout_seconds``: the reload is a
    read before anything is sent, so the publish ends with exit 5, not published, and once the
    server runs again the advice ends in DONE with exactly the input."""
    import os
    import signal
    import time

    from tests.helpers import cli_env, start_cli
    from tests.services._process import _descendants

    from .sinks import DATASET, DATE

    sink = iceberg_sink(fault_postgres, tmp_path / "warehouse")
    inputs = parquet_input(small_inputs[0])
    cfg = sink.config(tmp_path / "direct")
    started = time.monotonic()
    env = cli_env(cfg, **sink.env, PUBLISH_PAUSE_AT="after_stage:2")
    proc = start_cli("publish", "--dataset", DATASET, "--run-date", DATE, str(inputs), env=env)
    assert proc.stderr is not None
    seen: list[str] = []
    while not seen or "paused at after_stage" not in seen[-1]:
        seen.append(proc.stderr.readline())
        assert seen[-1], f"the publish ended before its pause: {''.join(seen)}"
    # The postmaster and its backends (which call setsid: not in its group): nothing answers, and the
    # kernel still acknowledges every packet.
    server = [fault_postgres.process.pid, *_descendants(fault_postgres.process.pid)]
    for pid in server:
        os.kill(pid, signal.SIGSTOP)
    try:
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:  # the bug: still waiting on the paused catalog
            proc.kill()
            proc.communicate()
        for pid in server:
            os.kill(pid, signal.SIGCONT)
    assert took < CALL_BOUND_SECONDS, f"publish took {took:.1f}s: {err}"
    assert proc.returncode == 5 and "did not answer" in err and "Traceback" not in err, err
    assert sink.read(cfg) is None
    assert sink.diagnose(cfg)["state"] in ("NOTHING_IN_FLIGHT", "ORPHANED")
    assert sink.follow_the_advice(cfg, inputs)[-1] == "DONE"
    assert sink.read(cfg) == _reference(sink, tmp_path, inputs)
