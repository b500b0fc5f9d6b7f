"""Zombie commits: a commit request held in the network while its publisher is killed, then
delivered after the operator diagnosed the run and recovered it. recover fences before it removes
anything, so the late commit must never publish over removed staging:

- S3: a fence object at the commit point; the late ``If-None-Match: *`` manifest PUT gets 412;
- Postgres: the dead client's session is terminated; its late COMMIT finds no session;
- Kafka: the transactional id is re-initialised; the late EndTxn carries an old epoch;
- Iceberg (SQL catalog on Postgres): an empty fencing snapshot moves main; the late compare-and-
  swap of the metadata pointer matches nothing. If the catalog row is still locked by the zombie
  (its UPDATE landed, its COMMIT is held), recover cannot fence and removes nothing.

The file sink needs no fence: its commit is a local rename by the process itself, which cannot
arrive late once the process is dead (tests/unit/test_file_sink.py covers its crash points).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from tests.helpers import cli_env, start_cli
from tests.services import s3

from .proxy import FaultProxy, Stall
from .sinks import (
    DATASET,
    DATE,
    SINKS,
    FaultySink,
    faulty_sink,
    iceberg_sink,
    parquet_input,
    s3_sink,
)
from .test_commit_faults import _advice_ends_in_the_input, _reference
from .test_signals import wait_for_pause

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.fixture(params=SINKS)
def sink(request: pytest.FixtureRequest, tmp_path: Any) -> FaultySink:
    return faulty_sink(request, tmp_path)


def _kill_while_held(sink: FaultySink, proxy: FaultProxy, rule: Any, cfg: Any, inputs: Any) -> None:
    proc = start_cli("publish", "--dataset", DATASET, "--run-date", DATE, str(inputs), env=cli_env(cfg, **sink.env))
    try:
        assert rule.triggered.wait(90), "the commit request never reached the proxy"
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_a_late_commit_never_lands_over_removed_staging(sink, tmp_path, small_inputs):
    inputs = parquet_input(small_inputs[0])
    direct = sink.config(tmp_path / "direct")
    with sink.faulty(f"zombie-{sink.name}") as proxy:
        rule = proxy.add_rule(sink.commit_request(), Stall())  # held until released
        _kill_while_held(sink, proxy, rule, sink.config(tmp_path / "proxied", proxy.address), inputs)

        doc = sink.diagnose(direct)
        assert doc["state"] == "ORPHANED", doc
        recovered = sink.cli(direct, "recover", "--dataset", DATASET, "--run-date", DATE, "--apply")
        assert recovered.code == 10, recovered.stderr + recovered.stdout  # cleaned: re-run now

        proxy.release(rule)  # the late commit arrives now, unless its connection was fenced (Postgres)
        # ...and is processed or refused (the server answers or closes), or can never arrive
        assert rule.settled.wait(30), "the late commit was never settled"
        assert sink.read(direct) is None, "a late commit published over removed staging"
        assert sink.diagnose(direct)["state"] == "NOTHING_IN_FLIGHT"
    steps = ("recover --apply exits 10", "the late commit is refused: NOTHING_IN_FLIGHT")
    what = "delivered after recover --apply"
    _advice_ends_in_the_input(
        sink, tmp_path, direct, inputs, "zombie", what, "SIGKILLed", None, "ORPHANED", before=steps
    )


def test_iceberg_a_commit_held_after_its_update_blocks_recover_and_then_lands_whole(
    postgres_service, tmp_path, small_inputs
):
    """The zombie's UPDATE of the catalog row landed and its COMMIT is held: the row stays locked,
    so recover's fencing commit cannot be made within its bound: it removes nothing (exit 13). When
    the COMMIT arrives, the run is published with every file it references."""
    sink = iceberg_sink(postgres_service, tmp_path / "warehouse")
    inputs = parquet_input(small_inputs[0])
    direct = sink.config(tmp_path / "direct")
    with sink.faulty("zombie-iceberg-commit") as proxy:
        armed = {"update": False}

        def commit_after_update(chunk: bytes) -> bool:
            if b"UPDATE iceberg_tables" in chunk:
                armed["update"] = True
                return False
            return armed["update"] and b"COMMIT" in chunk

        rule = proxy.add_rule(commit_after_update, Stall())
        proxied = sink.config(tmp_path / "proxied", proxy.address)
        # The server ends a session idle in a transaction after commit_timeout_seconds (which would
        # settle this case by itself: the zombie's transaction rolled back); hold it for longer here.
        proxied.write_text(proxied.read_text().replace("commit_timeout_seconds = 6", "commit_timeout_seconds = 60"))
        _kill_while_held(sink, proxy, rule, proxied, inputs)
        doc = sink.diagnose(direct)
        assert doc["state"] == "ORPHANED", doc  # nothing visible yet: the catalog change is uncommitted
        recovered = sink.cli(direct, "recover", "--dataset", DATASET, "--run-date", DATE, "--apply")
        assert recovered.code == 13 and "could not fence" in recovered.stderr, recovered.stderr
        proxy.release(rule)
        assert rule.released.wait(10)
        assert rule.settled.wait(30), "the server never answered the held COMMIT"
    assert sink.read(direct) is not None, "the held commit should have landed"
    what = "its catalog update landed, only its COMMIT held"
    steps = ("recover --apply exits 13 (cannot fence)", "the COMMIT lands")
    _advice_ends_in_the_input(
        sink, tmp_path, direct, inputs, "zombie", what, "SIGKILLed", None, "ORPHANED", before=steps
    )


# The sinks whose run is held by a lease that lapses (a stopped process cannot renew it): the
# publisher is stopped (SIGSTOP: a GC pause, a frozen VM), not killed, and resumes after recover.
@pytest.fixture(params=[*(f"s3-{server}" for server in s3.servers_for_tests()), "iceberg-pg"])
def leased_sink(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[FaultySink, dict[str, str]]:
    if request.param.startswith("s3-"):
        made = s3_sink(request.getfixturevalue(s3.FIXTURE_OF[request.param.removeprefix("s3-")]))
        name = "bucket"
    else:
        made = iceberg_sink(request.getfixturevalue("postgres_service"), tmp_path / "warehouse")
        name = "lake"
    return made, {f"ATOMIC_PUBLISH_SINKS__{name.upper()}__LEASE_SECONDS": "5"}


def test_a_stalled_publisher_resumed_after_recover_never_publishes(leased_sink, tmp_path, small_inputs):
    """The publisher is stopped after staging, long enough for its lease to lapse; the operator
    diagnoses ORPHANED and recovers (the staging removed, the attempt fenced); then the publisher
    resumes and goes on to its commit. recover's fence names the attempt, so the commit is never
    made: the publish exits 13 (fenced, as when a newer attempt fences it; not published), nothing
    is published over the removed staging, and the advice then ends in the input, once."""
    sink, lease = leased_sink
    inputs = parquet_input(small_inputs[0])
    cfg = sink.config(tmp_path / "direct")
    _stalled_past_recover(sink, cfg, [inputs], lease, "after_stage")
    assert sink.follow_the_advice(cfg, inputs)[-1] == "DONE"
    assert sink.read(cfg) == _reference(sink, tmp_path, inputs)


def test_a_stalled_publisher_is_fenced_by_a_second_recover_too(leased_sink, tmp_path, small_inputs):
    """Found from outside (S3): after a first crash and recover (the advised path), the commit point
    held a fence naming that crashed attempt only; a second recover, of a re-run stalled past its
    lease, left it so, and the re-run, resumed, replaced it and published a manifest of the data the
    recover had deleted (exit 0). The second recover's attempt must be fenced too: exit 13."""
    sink, lease = leased_sink
    inputs = parquet_input(small_inputs[0])
    cfg = sink.config(tmp_path / "direct")
    crashed, _ = sink.publish(cfg, inputs, PUBLISH_CRASH_AT="after_stage", **lease)
    assert crashed.code == -9, crashed.stderr
    recovered = sink.cli(cfg, "recover", "--dataset", DATASET, "--run-date", DATE, "--apply", **lease)
    assert recovered.code == 10, recovered.stderr + recovered.stdout
    _stalled_past_recover(sink, cfg, [inputs], lease, "after_stage")
    assert sink.follow_the_advice(cfg, inputs)[-1] == "DONE"
    assert sink.read(cfg) == _reference(sink, tmp_path, inputs)


def _stalled_past_recover(sink: FaultySink, cfg: Any, inputs: list[Any], lease: dict[str, str], point: str) -> None:
    """Stop the publisher (SIGSTOP) at ``point`` until its lease lapses and diagnose says ORPHANED;
    recover --apply; resume it (SIGCONT). It must stop fenced (exit 13), publish nothing and leave
    nothing behind."""
    proc = start_cli(
        "publish", "--dataset", DATASET, "--run-date", DATE, *map(str, inputs),
        env=cli_env(cfg, PUBLISH_PAUSE_AT=f"{point}:5", **sink.env, **lease),
    )  # fmt: skip

    def diagnosed() -> dict[str, Any]:
        result = sink.cli(cfg, "diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", **lease)
        return result.json()  # type: ignore[no-any-return]

    try:
        wait_for_pause(proc, point)
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 60
        while (doc := diagnosed())["state"] == "RUNNING" and time.monotonic() < deadline:
            time.sleep(1)
        assert doc["state"] == "ORPHANED", doc
        recovered = sink.cli(cfg, "recover", "--dataset", DATASET, "--run-date", DATE, "--apply", **lease)
        assert recovered.code == 10, recovered.stderr + recovered.stdout
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 13 and "recover fenced attempt" in stderr, (proc.returncode, stderr)
    assert "Traceback" not in stderr
    assert sink.read(cfg) is None, "a stalled attempt published over the staging recover removed"
    assert diagnosed()["state"] == "NOTHING_IN_FLIGHT"  # the resumed attempt left nothing


@pytest.mark.parametrize(("kind", "fmt"), [("s3", "parquet"), ("s3", "csv"), ("iceberg", "parquet")])
def test_a_publisher_stalled_mid_stage_and_fenced_exits_13(request, kind, fmt, tmp_path, small_inputs):
    """Stopped in the middle of its staging (found from outside on S3: exit 1 from a bare 404 of
    the object's HEAD for Parquet files, exit 5 from NoSuchUpload for CSV). recover removes the
    staging and fences the attempt; the resumed publisher's staging then fails, or goes on over
    the removed staging, and the fence says why it stops: exit 13, not an outage and not a bug, and
    it leaves nothing behind."""
    if kind == "s3":
        server = s3.servers_for_tests()[-1]  # MinIO when it is there: the real server
        sink = s3_sink(request.getfixturevalue(s3.FIXTURE_OF[server]))
        lease = {"ATOMIC_PUBLISH_SINKS__BUCKET__LEASE_SECONDS": "5"}
    else:
        sink = iceberg_sink(request.getfixturevalue("postgres_service"), tmp_path / "warehouse")
        lease = {"ATOMIC_PUBLISH_SINKS__LAKE__LEASE_SECONDS": "5"}
    cfg = sink.config(tmp_path / "direct")
    cfg.write_text(cfg.read_text().replace('format = "parquet"', f'format = "{fmt}"'))
    if fmt == "parquet":
        first = parquet_input(small_inputs[0])
        second = tmp_path / "second.parquet"
        second.write_bytes(first.read_bytes())
        inputs = [first, second]
    else:
        inputs = [small_inputs[0]]
    _stalled_past_recover(sink, cfg, inputs, lease, "mid_stage")
