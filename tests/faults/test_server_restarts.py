"""The server killed (SIGKILL) under a publish: mid-stage, just before the commit, and inside it (the
commit request delivered, its answer not yet back), then started again at once, or only after the
publish gave up. Each server is this module's own (the
harness's session servers are never killed). Every case checks, with an independent reader:

- the publish ended within its bound with a documented code that tells the truth (0: published,
  5: not published, 14: unknown);
- diagnose agrees with the reader, and following its advice ends in DONE with exactly the input,
  once.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.contract import readers
from tests.helpers import cli_env, start_cli

from .proxy import Fault
from .sinks import CALL_BOUND_SECONDS, DATASET, DATE, FaultySink, kafka_sink, parquet_input, postgres_sink, s3_sink
from .test_commit_faults import _advice_ends_in_the_input
from .test_signals import wait_for_pause

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# (where the publish is held, whether the server comes back before the publish goes on)
CASES = {
    "postgres": [("mid_stage", True), ("before_commit", True), ("after_stage", False)],
    "kafka": [("mid_stage", True), ("after_stage", True)],
    "s3-minio": [("mid_stage", True), ("after_stage", False)],
}


@pytest.fixture(
    params=[(sink, point, back) for sink, cases in CASES.items() for point, back in cases],
    ids=lambda p: f"{p[0]}-{p[1]}-{'restarted' if p[2] else 'down'}",
)
def case(request: pytest.FixtureRequest) -> tuple[FaultySink, Any, str, bool]:
    sink_name, point, back = request.param
    if sink_name == "postgres":
        service = request.getfixturevalue("fault_postgres")
        return postgres_sink(service), service, point, back
    if sink_name == "kafka":
        service = request.getfixturevalue("fault_kafka")
        return kafka_sink(service), service, point, back
    service = request.getfixturevalue("fault_minio")
    return s3_sink(service), service, point, back


def test_a_server_killed_under_a_publish(case, tmp_path, small_inputs):
    sink, service, point, back = case
    inputs = parquet_input(small_inputs[0])
    cfg = sink.config(tmp_path / "direct")
    proc = start_cli(
        "publish",
        "--dataset",
        DATASET,
        "--run-date",
        DATE,
        str(inputs),
        env=cli_env(cfg, PUBLISH_PAUSE_AT=f"{point}:3", **sink.env),
    )
    wait_for_pause(proc, point)
    stderr, took = _kill_the_server(service, proc, back)
    what = f"{point.replace('_', '-')}, {'started again' if back else 'down until the publish ended'}"
    _check_truth(sink, tmp_path, cfg, inputs, proc.returncode, stderr, took, what)


@pytest.fixture(
    params=[(sink, back) for sink in ("postgres", "kafka", "s3-minio") for back in (True, False)],
    ids=lambda p: f"{p[0]}-{'restarted' if p[1] else 'down'}",
)
def in_commit(request: pytest.FixtureRequest) -> tuple[FaultySink, Any, bool]:
    name, back = request.param
    service = request.getfixturevalue({"postgres": "fault_postgres", "kafka": "fault_kafka"}.get(name, "fault_minio"))
    make = {"postgres": postgres_sink, "kafka": kafka_sink}.get(name, s3_sink)
    return make(service), service, back


def test_a_server_killed_while_it_holds_the_commit_request(in_commit, tmp_path, small_inputs):
    """The commit request reached the server (Postgres's COMMIT, Kafka's EndTxn, S3's manifest PUT),
    its answer is held in the proxy, and the server is SIGKILLed a moment later: it may have made the
    commit durable or not. Then it is started again at once, or only after the publish gave up."""
    sink, service, back = in_commit
    inputs = parquet_input(small_inputs[0])
    cfg = sink.config(tmp_path / "direct")
    with sink.faulty(f"{sink.name}-killed-in-commit") as proxy:
        proxied = sink.config(tmp_path / "proxied", proxy.address)
        rule = proxy.add_rule(sink.commit_request(), Fault.ANSWER_LOST)
        proc = start_cli(
            "publish", "--dataset", DATASET, "--run-date", DATE, str(inputs), env=cli_env(proxied, **sink.env)
        )
        assert rule.triggered.wait(CALL_BOUND_SECONDS), "the commit request never reached the proxy"
        time.sleep(0.3)  # the server has the request: it commits it, or is killed before it can
        stderr, took = _kill_the_server(service, proc, back)
    what = f"holding the commit request, {'started again' if back else 'down until the publish ended'}"
    _check_truth(sink, tmp_path, cfg, inputs, proc.returncode, stderr, took, what)


def _kill_the_server(service: Any, proc: Any, back: bool) -> tuple[str, float]:
    """SIGKILL the server under the publish, start it again at once (``back``) or only once the
    publish has ended; the publish's stderr and its seconds from the kill to its end."""
    started = time.monotonic()
    service.kill()
    if back:
        service.start_again()
    _, stderr = proc.communicate(timeout=CALL_BOUND_SECONDS + 30)
    took = time.monotonic() - started
    if not back:
        service.start_again()
    return stderr, took


def _check_truth(
    sink: FaultySink, tmp_path: Any, cfg: Any, inputs: Any, code: int, stderr: str, took: float, what: str
) -> None:
    """The publish ended within its bound with a code that tells the truth (0: published, 5: not
    published, 14: unknown), with no traceback; diagnose agrees with the reader; following its
    advice ends in DONE with exactly the input, once."""
    assert took < CALL_BOUND_SECONDS + 10, f"publish took {took:.1f}s after the server was killed"
    assert "Traceback" not in stderr
    published = sink.read(cfg)
    state = sink.diagnose(cfg)["state"]
    if code == 0:
        assert published is not None, stderr
    elif code == 5:
        assert published is None, stderr
    else:
        assert code == 14, (code, stderr)
    if published is not None:
        assert state in ("DONE", "PUBLISHED_WITH_ORPHANS"), state
    else:
        assert state in ("NOTHING_IN_FLIGHT", "ORPHANED", "RUNNING"), state
    _advice_ends_in_the_input(sink, tmp_path, cfg, inputs, "server", what, code, took, state, wait_running=60)


def test_a_part_staged_before_a_crash_restart_is_never_committed_empty(
    fault_postgres, tmp_path, small_inputs, monkeypatch
):
    """Found from outside: the staging of a run into an existing table is UNLOGGED, and Postgres
    empties UNLOGGED tables when it recovers from a crash. A part staged before that and committed
    after it (a group rolled forward by recover, a Spark driver committing its tasks' parts) was
    merged as it then was, empty: the ledger said 2,000 rows, the table had none, diagnose said
    DONE. The commit now counts the rows of an unlogged staging table against what was staged, and
    refuses (nothing committed) when they differ."""
    import pyarrow.csv as pacsv
    from psycopg.conninfo import conninfo_to_dict

    from atomic_publish import CommitRejected, Run, load_config

    sink = postgres_sink(fault_postgres)
    cfg = sink.config(tmp_path / "direct")
    first = sink.cli(cfg, "publish", "--dataset", DATASET, "--run-date", DATE, str(small_inputs[0]))
    assert first.code == 0, first.stderr  # the target exists: the next run's staging is UNLOGGED
    monkeypatch.setenv("PGPASSWORD", conninfo_to_dict(fault_postgres.dsn)["password"])
    definition, options = load_config(cfg).sink()
    publisher = definition.make_publisher(options)
    run = Run.new(DATASET, "2026-04-25")
    table = pacsv.read_csv(small_inputs[0])
    staged = publisher.stage(run, table.to_reader())
    assert staged.rows == table.num_rows
    fault_postgres.kill()
    fault_postgres.start_again()  # crash recovery: every UNLOGGED table is reset to empty
    with pytest.raises(CommitRejected, match=f"holds 0 rows, {table.num_rows} were staged"):
        publisher.commit(run, [staged])
    schema = options.schema_name
    assert readers.postgres_ledger(fault_postgres.dsn, schema, f"{DATASET}/2026-04-25") is None
    doc = sink.cli(cfg, "diagnose", "--dataset", DATASET, "--run-date", "2026-04-25", "--json").json()
    assert doc["state"] == "ORPHANED", doc  # the emptied staging table is a leftover, nothing published
