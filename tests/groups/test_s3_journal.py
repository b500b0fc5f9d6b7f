"""A group's journal in S3 (``journal_sink``), against a real MinIO: a record is written once (the
first attempt's wins; a second is told so); a record whose PUT answer is lost is read back and
counted as written, never written twice or called lost; the group's lock is a lease one holder at
a time, visible to diagnose while held and gone once released."""

from __future__ import annotations

import time
import uuid

import pytest

from atomic_publish import DestinationUnavailable, Run, RunInProgress
from atomic_publish.publishers.layouts.s3 import S3Journal, S3SinkConfig
from tests.faults.proxy import ANSWER_LOST, Contains, FaultProxy

pytestmark = [pytest.mark.integration]

DAY = "2026-04-24"


@pytest.fixture
def make_journal(minio_service, monkeypatch):
    for name, value in minio_service.env().items():
        monkeypatch.setenv(name, value)
    prefix = f"journal-{uuid.uuid4().hex[:8]}"

    def make(endpoint: str | None = None, **options: object) -> S3Journal:
        config = S3SinkConfig(
            bucket=minio_service.bucket,
            prefix=prefix,
            endpoint_url=endpoint or minio_service.endpoint,
            region=minio_service.region,
            addressing_style="path",
            **options,  # type: ignore[arg-type]
        )
        return S3Journal(config, "daily")

    return make


def test_a_record_is_written_once_and_the_first_wins(make_journal):
    journal, run = make_journal(), Run.new("refunds", DAY)
    assert journal.read(run, "decision") is None
    assert journal.record(run, "decision", {"attempt": "first"})
    assert not journal.record(run, "decision", {"attempt": "second"})
    assert journal.read(run, "decision") == {"attempt": "first"}
    assert journal.read(run, "complete") is None
    key = journal.key(run, "decision")
    assert key.endswith(f"/_journal/daily/refunds/{DAY}.decision.json"), key


def test_a_record_whose_answer_is_lost_is_read_back_as_written(make_journal, minio_service):
    host, port = minio_service.endpoint.removeprefix("http://").split(":")
    run = Run.new("refunds", DAY)
    with FaultProxy(host, int(port), name="journal") as proxy:
        journal = make_journal(f"http://{proxy.address}", timeout_seconds=2, commit_timeout_seconds=20)
        rule = proxy.add_rule(Contains(f"{DAY}.decision.json".encode()), ANSWER_LOST)
        assert journal.record(run, "decision", {"attempt": run.attempt})
        assert rule.triggered.is_set()  # the PUT's answer was lost: settled by reading it back
    assert make_journal().read(run, "decision") == {"attempt": run.attempt}


def test_a_journal_that_does_not_answer_is_unavailable_not_undecided(make_journal):
    journal = make_journal("http://127.0.0.1:9", timeout_seconds=1, commit_timeout_seconds=1)
    run = Run.new("refunds", DAY)
    with pytest.raises(DestinationUnavailable):
        journal.read(run, "decision")
    with pytest.raises(DestinationUnavailable):
        journal.record(run, "decision", {"attempt": run.attempt})


def test_the_groups_lock_has_one_holder_and_diagnose_sees_it(make_journal):
    journal, run = make_journal(), Run.new("refunds", DAY)
    other = Run.new("refunds", DAY)
    assert journal.holder(run) is None
    with journal.lock(run):
        holder = journal.holder(other)
        assert holder is not None and holder.attempt == run.attempt, holder
        with pytest.raises(RunInProgress), journal.lock(other):
            pass
    assert journal.holder(other) is None
    with journal.lock(other):  # free again once released
        assert journal.holder(run) is not None


def test_a_group_publisher_resumed_after_recover_rolled_it_forward_exits_0(minio_service, tmp_path):
    """Found from outside: a group publisher stopped (SIGSTOP) after its first sink's commit, past
    its lease; recover rolled the run forward (committing the second sink as the same attempt);
    resumed, the publisher found its own attempt's manifest at the second sink's commit point and
    called that a lost race (exit 15, naming an ETag as the winning attempt). It is the commit made."""
    import os
    import signal

    from tests.faults.test_signals import wait_for_pause
    from tests.helpers import cli_env, run_cli, start_cli

    sinks = "".join(
        f'[sinks.{name}]\ntype = "s3"\nbucket = "{minio_service.bucket}"\nprefix = "g-{uuid.uuid4().hex[:8]}"\n'
        f'endpoint_url = "{minio_service.endpoint}"\nregion = "{minio_service.region}"\n'
        'addressing_style = "path"\nlease_seconds = 5\n'
        for name in ("one", "two")
    )
    cfg = tmp_path / "publish.toml"
    cfg.write_text(sinks + '[groups.g]\nsinks = ["one", "two"]\njournal_sink = "one"\n')
    data = tmp_path / "in.csv"
    data.write_text("id,v\n1,2\n")
    run = ("--dataset", "d", "--run-date", DAY)
    env = cli_env(cfg, **minio_service.env())
    proc = start_cli("publish", "--group", "g", *run, str(data), env={**env, "PUBLISH_PAUSE_AT": "group_committed_1:3"})
    try:
        wait_for_pause(proc, "group_committed_1")
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(6)  # the group's lease lapses
        recovered = run_cli("recover", "--group", "g", *run, "--apply", env=env)
        assert recovered.code == 0, recovered.stderr
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in stderr, (proc.returncode, stderr)
    diagnosed = run_cli("diagnose", "--group", "g", *run, "--json", env=env)
    assert diagnosed.json()["state"] == "DONE", diagnosed.stdout
