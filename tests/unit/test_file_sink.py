"""The file sink and its diagnostic, through the library API, on a real filesystem."""

import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from atomic_publish import (
    AlreadyPublished,
    InputError,
    LostRace,
    RecoveryNeeded,
    Run,
    RunInProgress,
    SchemaMismatch,
    UnsafeLayout,
    publish,
)
from atomic_publish.diagnostics.file import FileDiagnostic
from atomic_publish.publishers.file import FilePublisher, FileSinkConfig
from atomic_publish.publishers.taxonomy import State
from tests.helpers import cli_env, run_cli

TABLE = pa.table({"id": list(range(1000)), "amount": [i * 7 for i in range(1000)], "note": ["x"] * 1000})


def make(tmp_path, fmt="csv"):
    config = FileSinkConfig(root=tmp_path / "out", format=fmt)
    return FilePublisher(config), FileDiagnostic(config)


def run(date="2026-04-24"):
    return Run.new("refunds_settled", date)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_publish_writes_data_and_a_verifiable_manifest(tmp_path, fmt):
    publisher, diagnostic = make(tmp_path, fmt)
    r = run()
    result = publish(publisher, diagnostic, r, TABLE)
    final = tmp_path / "out" / "refunds_settled" / f"2026-04-24.{fmt}"
    manifest = json.loads((final.parent / f"2026-04-24.{fmt}.success").read_text())
    data = final.read_bytes()
    assert manifest["run_id"] == r.run_id and manifest["attempt"] == r.attempt
    assert manifest["rows"] == 1000 == result.receipt.rows
    assert manifest["bytes"] == len(data)
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert [f["name"] for f in manifest["schema"]] == ["id", "amount", "note"]
    back = pacsv.read_csv(final) if fmt == "csv" else pq.read_table(final)
    assert back.column("amount").to_pylist() == TABLE.column("amount").to_pylist()
    assert diagnostic.diagnose(run()).state is State.DONE
    assert os.listdir(tmp_path / "out" / "_staging" / "refunds_settled") == []


def test_republish_is_refused_or_a_noop_and_changes_nothing(tmp_path):
    publisher, diagnostic = make(tmp_path)
    publish(publisher, diagnostic, run(), TABLE)
    final = tmp_path / "out" / "refunds_settled" / "2026-04-24.csv"
    before = (final.stat().st_mtime_ns, final.read_bytes())
    with pytest.raises(AlreadyPublished, match="DONE"):
        publish(publisher, diagnostic, run(), TABLE.slice(0, 10))
    skipped = publish(publisher, diagnostic, run(), TABLE.slice(0, 10), if_absent=True)
    assert skipped.skipped and skipped.receipt is None
    assert (final.stat().st_mtime_ns, final.read_bytes()) == before


def test_rename_never_clobbers_and_the_loser_of_a_race_discards_its_staging(tmp_path):
    """Two attempts staged at once (the run lock bypassed, as on a filesystem where flock is not
    shared): exactly one commit wins; the other gets LostRace and removes only its own staging."""
    publisher, diagnostic = make(tmp_path)
    a, b = run(), run()
    staged_a = publisher.stage(a, TABLE.to_reader())
    staged_b = publisher.stage(b, TABLE.slice(0, 500).to_reader())
    outcomes = {}
    barrier = threading.Barrier(2)

    def commit(r, staged):
        barrier.wait()
        try:
            outcomes[r.attempt] = publisher.commit(r, [staged])
        except LostRace as exc:
            outcomes[r.attempt] = exc
            publisher.discard(r, [staged])

    threads = [threading.Thread(target=commit, args=args) for args in ((a, staged_a), (b, staged_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [k for k, v in outcomes.items() if not isinstance(v, Exception)]
    losers = [k for k, v in outcomes.items() if isinstance(v, LostRace)]
    assert len(winners) == 1 and len(losers) == 1
    d = diagnostic.diagnose(run())
    assert d.state is State.DONE
    manifest = json.loads((tmp_path / "out" / "refunds_settled" / "2026-04-24.csv.success").read_text())
    assert manifest["attempt"] == winners[0]
    assert manifest["rows"] == (1000 if winners[0] == a.attempt else 500)


def test_loser_that_dies_before_discarding_is_published_with_orphans(tmp_path):
    publisher, diagnostic = make(tmp_path)
    winner, loser = run(), run()
    staged_loser = publisher.stage(loser, TABLE.to_reader())
    publisher.commit(winner, [publisher.stage(winner, TABLE.to_reader())])
    with pytest.raises(LostRace):
        publisher.commit(loser, [staged_loser])
    d = diagnostic.diagnose(run())
    assert d.state is State.PUBLISHED_WITH_ORPHANS
    assert {a.attempt for a in d.orphans} == {loser.attempt}
    report = diagnostic.clean(d)
    assert len(report.removed) == 2
    assert diagnostic.diagnose(run()).state is State.DONE


def test_discard_is_idempotent_and_touches_only_its_own_attempt(tmp_path):
    publisher, diagnostic = make(tmp_path)
    mine, other = run(), run()
    staged_mine = publisher.stage(mine, TABLE.to_reader())
    publisher.stage(other, TABLE.to_reader())
    publisher.discard(mine, [staged_mine])
    publisher.discard(mine, [staged_mine])
    d = diagnostic.diagnose(run())
    assert d.state is State.ORPHANED
    assert {a.attempt for a in d.orphans} == {other.attempt}


def test_live_attempt_is_running_and_clean_refuses(tmp_path):
    publisher, diagnostic = make(tmp_path)
    holder = run()
    with publisher.run_lock(holder):
        publisher.stage(holder, TABLE.to_reader())
        d = diagnostic.diagnose(run())
        assert d.state is State.RUNNING
        assert d.holder.attempt == holder.attempt and d.holder.pid == os.getpid()
        with pytest.raises(RunInProgress):
            diagnostic.clean(d)
        with pytest.raises(RunInProgress):
            publish(publisher, diagnostic, run(), TABLE)
    # Lock released: the same staging is now a dead attempt's orphan.
    assert diagnostic.diagnose(run()).state is State.ORPHANED


def test_orphans_block_a_new_publish_until_recovered(tmp_path):
    publisher, diagnostic = make(tmp_path)
    publisher.stage(run(), TABLE.to_reader())
    with pytest.raises(RecoveryNeeded, match="ORPHANED"):
        publish(publisher, diagnostic, run(), TABLE)
    diagnostic.clean(diagnostic.diagnose(run()))
    assert publish(publisher, diagnostic, run(), TABLE).receipt.rows == 1000


def _published(tmp_path):
    publisher, diagnostic = make(tmp_path)
    publish(publisher, diagnostic, run(), TABLE)
    final = tmp_path / "out" / "refunds_settled" / "2026-04-24.csv"
    return diagnostic, final, final.with_name(final.name + ".success")


def test_tampered_data_is_unknown_with_evidence(tmp_path):
    diagnostic, final, _ = _published(tmp_path)
    data = bytearray(final.read_bytes())
    data[100] ^= 1  # same size, different bytes: only the checksum can tell
    final.write_bytes(bytes(data))
    d = diagnostic.diagnose(run())
    assert d.state is State.UNKNOWN and "sha256" in d.reason
    assert {a.kind for a in d.evidence} >= {"success-marker", "published-output"}
    with pytest.raises(RecoveryNeeded):
        diagnostic.clean(d)


def test_truncated_data_and_missing_data_are_unknown(tmp_path):
    diagnostic, final, _ = _published(tmp_path)
    final.write_bytes(final.read_bytes()[:-10])
    assert diagnostic.diagnose(run()).state is State.UNKNOWN
    final.unlink()
    d = diagnostic.diagnose(run())
    assert d.state is State.UNKNOWN and "missing" in d.reason


def test_manifest_of_another_run_is_unknown(tmp_path):
    diagnostic, _, marker = _published(tmp_path)
    doc = json.loads(marker.read_text())
    doc["run_id"] = "refunds_settled/2026-04-23"
    marker.write_text(json.dumps(doc))
    assert diagnostic.diagnose(run()).state is State.UNKNOWN


def test_data_that_no_evidence_explains_is_unknown(tmp_path):
    publisher, diagnostic = make(tmp_path)
    final = tmp_path / "out" / "refunds_settled" / "2026-04-24.csv"
    final.parent.mkdir(parents=True)
    final.write_text("id\n1\n")
    d = diagnostic.diagnose(run())
    assert d.state is State.UNKNOWN and "no evidence explains" in d.reason
    assert d.evidence[0].location == str(final)
    with pytest.raises(RecoveryNeeded):
        publish(publisher, diagnostic, run(), TABLE)
    assert final.read_text() == "id\n1\n"


def test_clean_skips_what_changed_since_the_diagnosis(tmp_path):
    publisher, diagnostic = make(tmp_path)
    staged = publisher.stage(run(), TABLE.to_reader())
    d = diagnostic.diagnose(run())
    with open(staged.location, "ab") as fh:
        fh.write(b"more")
    report = diagnostic.clean(d)
    kept = {a.kind: why for a, why in report.skipped}
    assert "changed since the diagnosis" in kept["staging-data"]
    assert os.path.exists(staged.location)


def test_clean_with_age_keeps_young_attempts(tmp_path):
    publisher, diagnostic = make(tmp_path)
    old, young = run(), run()
    old_staged = publisher.stage(old, TABLE.to_reader())
    publisher.stage(young, TABLE.to_reader())
    two_days_ago = (dt.datetime.now() - dt.timedelta(days=2)).timestamp()
    for path in (old_staged.location, old_staged.details["pending_manifest"]):
        os.utime(path, (two_days_ago, two_days_ago))
    report = diagnostic.clean(diagnostic.diagnose(run()), older_than=dt.timedelta(hours=24))
    assert {a.attempt for a in report.removed} == {old.attempt}
    assert {a.attempt for a, _ in report.skipped} == {young.attempt}


def test_dataset_directory_symlinked_outside_the_root_is_refused(tmp_path):
    publisher, diagnostic = make(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "refunds_settled").symlink_to(outside)
    with pytest.raises(UnsafeLayout, match="outside the configured root"):
        publish(publisher, diagnostic, run(), TABLE)
    assert list(outside.iterdir()) == []


def test_failed_stage_leaves_nothing(tmp_path):
    publisher, diagnostic = make(tmp_path)

    def batches():
        yield TABLE.to_batches()[0]
        raise InputError("upstream broke mid-stream")

    reader = pa.RecordBatchReader.from_batches(TABLE.schema, batches())
    with pytest.raises(InputError, match="mid-stream"):
        publish(publisher, diagnostic, run(), reader)
    assert diagnostic.diagnose(run()).state is State.NOTHING_IN_FLIGHT


def test_sweep_support_lists_run_dates_with_leftovers(tmp_path):
    publisher, diagnostic = make(tmp_path)
    publisher.stage(run("2026-04-20"), TABLE.to_reader())
    publisher.stage(run("2026-04-22"), TABLE.to_reader())
    publish(publisher, diagnostic, run("2026-04-21"), TABLE)
    assert diagnostic.runs_with_leftovers("refunds_settled") == [dt.date(2026, 4, 20), dt.date(2026, 4, 22)]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_checksum_is_right_over_many_batches(tmp_path, fmt):
    """The sha256 is computed on a second thread while batches are encoded; with many batches in
    flight it must still equal the sha256 of the bytes on disk."""
    publisher, diagnostic = make(tmp_path, fmt)
    batches = [
        pa.record_batch({"id": list(range(i * 2000, (i + 1) * 2000)), "v": [f"row-{i}"] * 2000}) for i in range(300)
    ]
    reader = pa.RecordBatchReader.from_batches(batches[0].schema, batches)
    receipt = publish(publisher, diagnostic, run(), reader).receipt
    final = tmp_path / "out" / "refunds_settled" / f"2026-04-24.{fmt}"
    assert receipt.checksum == "sha256:" + hashlib.sha256(final.read_bytes()).hexdigest()
    assert diagnostic.diagnose(run()).state is State.DONE


def test_a_schema_that_differs_from_the_last_published_run_is_refused_unless_allowed(tmp_path):
    publisher, diagnostic = make(tmp_path)
    publish(publisher, diagnostic, Run.new("refunds_settled", "2026-04-23"), TABLE)
    drifted = TABLE.append_column("extra", pa.array(["x"] * TABLE.num_rows))
    with pytest.raises(SchemaMismatch, match="column 'extra' is new") as info:
        publish(publisher, diagnostic, run(), drifted)
    assert "2026-04-23" in str(info.value) and "allow_schema_change" in str(info.value)
    assert diagnostic.diagnose(run()).state is State.NOTHING_IN_FLIGHT  # nothing was staged
    retyped = TABLE.set_column(0, "id", TABLE.column("id").cast(pa.string()))
    with pytest.raises(SchemaMismatch, match="column 'id' is string, was int64"):
        publish(publisher, diagnostic, run(), retyped)
    allowing = FilePublisher(publisher.config.model_copy(update={"allow_schema_change": True}))
    assert publish(allowing, diagnostic, run(), drifted).receipt is not None


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_input_file_changed_during_the_publish_is_refused_and_nothing_is_published(tmp_path, fmt):
    """The input is rewritten while the publish reads it (after its first batch): the publish is
    refused with exit 2's InputError naming the file, and nothing of it is published or left."""
    from atomic_publish.publishers._arrow import open_inputs

    source = tmp_path / f"in.{fmt}"
    big = pa.table({"id": list(range(300_000)), "note": [f"row {i}" for i in range(300_000)]})
    if fmt == "csv":
        pacsv.write_csv(big, source)
    else:
        pq.write_table(big, source, row_group_size=10_000)
    publisher, diagnostic = make(tmp_path, fmt)
    changed = []

    def progress(rows: int, nbytes: int) -> None:
        if not changed:
            with open(source, "ab") as f:  # the job that writes it is still writing
                f.write(b"more")
            changed.append(rows)

    with pytest.raises(InputError, match="the file changed while it was read"):
        publish(publisher, diagnostic, run(), open_inputs([source]), progress=progress)
    assert changed
    d = diagnostic.diagnose(run())
    assert d.state is State.NOTHING_IN_FLIGHT, d.reason
    assert not list((tmp_path / "out").rglob("*.csv")) and not list((tmp_path / "out").rglob("*.parquet"))


def _parts(publisher, r, table, n):  # type: ignore[no-untyped-def]
    """``table`` staged as 3 parts of ``r`` (contiguous slices of uneven sizes, each in batches of
    70 rows), as 3 workers would."""
    from atomic_publish import stage_part

    assert n == 3
    cuts = [0, 170, 601, table.num_rows]
    return [
        stage_part(
            publisher,
            r,
            pa.Table.from_batches(table.slice(cuts[i], cuts[i + 1] - cuts[i]).to_batches(max_chunksize=70)),
            part=i,
            token=f"t{i}",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_run_staged_in_parts_is_published_as_one_file_of_the_same_rows(tmp_path, fmt):
    """Several workers' parts (any order, several batches each) are assembled into one file of the
    rows of a publish in one piece: CSV byte for byte (the header once); Parquet with the parts'
    column chunks copied as they are (the parts' row groups, each part's last one short) under one
    footer; the parts are gone, diagnose says DONE."""
    from atomic_publish import begin_run

    config = FileSinkConfig(root=tmp_path / "one" / "out", format=fmt, parquet_row_group_rows=128)
    one = FilePublisher(config)
    publish(one, FileDiagnostic(config), run(), TABLE)
    expected = (tmp_path / "one" / "out" / "refunds_settled" / f"2026-04-24.{fmt}").read_bytes()

    config = FileSinkConfig(root=tmp_path / "out", format=fmt, parquet_row_group_rows=128)
    publisher, diagnostic = FilePublisher(config), FileDiagnostic(config)
    r = run()
    with begin_run(publisher, diagnostic, r) as job:
        staged = _parts(publisher, r, TABLE, 3)
        assert len({s.rows for s in staged}) == 3  # uneven parts
        assert diagnostic.diagnose(run()).state is State.RUNNING  # nothing visible; the driver holds it
        parts = [Path(s.location).read_bytes() for s in staged]
        result = job.commit(list(reversed(staged)))
    final = tmp_path / "out" / "refunds_settled" / f"2026-04-24.{fmt}"
    if fmt == "csv":
        assert final.read_bytes() == expected
    else:
        back, whole = pq.ParquetFile(final), pq.ParquetFile(io.BytesIO(expected))
        assert back.read().equals(whole.read()) and back.schema_arrow == whole.schema_arrow
        # 170, 431 and 399 rows in groups of 128: the parts' own groups, their bytes as staged
        groups = [back.metadata.row_group(i).num_rows for i in range(back.metadata.num_row_groups)]
        assert groups == [128, 42, 128, 128, 128, 47, 128, 128, 128, 15]
        chunks = b"".join(p[4 : len(p) - 8 - int.from_bytes(p[-8:-4], "little")] for p in parts)
        assert final.read_bytes().startswith(b"PAR1" + chunks)
    assert result.receipt.rows == 1000
    assert diagnostic.diagnose(run()).state is State.DONE
    assert os.listdir(tmp_path / "out" / "_staging" / "refunds_settled") == []


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("damage", ["changed", "missing", "on-another-host"])
def test_a_part_that_is_not_what_its_worker_staged_is_refused_and_nothing_is_published(tmp_path, damage, fmt):
    from atomic_publish import CommitRejected, begin_run

    publisher, diagnostic = make(tmp_path, fmt)
    r = run()
    with pytest.raises(CommitRejected) as refused, begin_run(publisher, diagnostic, r) as job:
        staged = _parts(publisher, r, TABLE, 3)
        path = staged[1].location
        if damage == "changed" and fmt == "csv":  # the last row
            with open(path, "r+b") as fh:
                fh.seek(-2, os.SEEK_END)
                fh.write(b"9\n")
        elif damage == "changed":  # a byte of a page: the footer intact, so the parts join, unchecked
            with open(path, "r+b") as fh:
                fh.seek(40)
                byte = fh.read(1)[0]
                fh.seek(40)
                fh.write(bytes([byte ^ 0xFF]))
        else:
            os.unlink(path)
        if damage == "on-another-host":  # staged by an executor whose disk the driver does not see
            staged[1] = dataclasses.replace(staged[1], details={**staged[1].details, "host": "executor-7"})
        job.commit(staged)
    expected = {
        "changed": "not what its task staged",
        "missing": "is missing",
        "on-another-host": "on executor-7, is not on this host's filesystem",
    }
    assert expected[damage] in str(refused.value)
    assert not (tmp_path / "out" / "refunds_settled" / f"2026-04-24.{fmt}").exists()
    # The refused attempt removed all of its staging: nothing to recover, a re-run publishes.
    assert os.listdir(tmp_path / "out" / "_staging" / "refunds_settled") == []
    assert diagnostic.diagnose(run()).state is State.NOTHING_IN_FLIGHT


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_parts_whose_column_is_all_null_in_one_take_the_type_the_others_give(tmp_path, fmt):
    """Ray infers each block's types apart: a part whose `note` is all null has type null there. The
    run takes the type the other parts give the column; a real disagreement is refused, named."""
    from atomic_publish import CommitRejected, begin_run, stage_part

    config = FileSinkConfig(root=tmp_path / "out", format=fmt)
    publisher, diagnostic = FilePublisher(config), FileDiagnostic(config)
    typed = pa.table({"id": [1, 2], "note": ["a", None]})
    nulls = pa.table({"id": [3, 4], "note": pa.array([None, None], pa.null())})
    r = run()
    with begin_run(publisher, diagnostic, r) as job:
        staged = [stage_part(publisher, r, t, part=i, token=f"t{i}") for i, t in enumerate([nulls, typed])]
        job.commit(staged)
    final = tmp_path / "out" / "refunds_settled" / f"2026-04-24.{fmt}"
    back = pacsv.read_csv(final) if fmt == "csv" else pq.read_table(final)
    assert sorted(back.column("id").to_pylist()) == [1, 2, 3, 4]
    manifest = json.loads(final.with_name(final.name + ".success").read_text())
    assert [c["type"] for c in manifest["schema"]] == ["int64", "string"]
    if fmt == "parquet":
        assert back.schema.field("note").type == pa.string()

    other = Run.new("other_dataset", "2026-04-25")  # no history: the parts' own disagreement is what is refused
    with (
        pytest.raises(CommitRejected, match="'note' is int64 / string"),
        begin_run(publisher, diagnostic, other) as job,
    ):
        ints = pa.table({"id": [5], "note": [7]})
        job.commit([stage_part(publisher, other, t, part=i, token=f"u{i}") for i, t in enumerate([typed, ints])])
    assert diagnostic.diagnose(Run.new("other_dataset", "2026-04-25")).state is State.NOTHING_IN_FLIGHT


class _Probed(FileDiagnostic):
    """A diagnostic whose cheap probe (``surely_unpublished``) is wrong or fails, as a sink's might."""

    def __init__(self, config, answer):
        super().__init__(config)
        self.answer, self.probed = answer, 0

    def surely_unpublished(self, r):
        self.probed += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize("answer", [True, OSError("the probe failed")], ids=["a-wrong-probe", "a-failing-probe"])
def test_the_probe_before_the_lock_only_saves_time_the_check_under_the_lock_decides(tmp_path, answer):
    """``surely_unpublished`` lets a publish skip its early diagnosis; a wrong "unpublished" still
    meets the diagnosis under the lock (refused, nothing changed), and a probe that fails means
    "diagnose" (refused before the lock)."""
    publisher, diagnostic = make(tmp_path)
    publish(publisher, diagnostic, run(), TABLE)
    final = tmp_path / "out" / "refunds_settled" / "2026-04-24.csv"
    before = (final.stat().st_mtime_ns, final.read_bytes())
    probed = _Probed(diagnostic.config, answer)
    with pytest.raises(AlreadyPublished, match="DONE"):
        publish(publisher, probed, run(), TABLE.slice(0, 10))
    assert publish(publisher, probed, run(), TABLE.slice(0, 10), if_absent=True).skipped
    assert probed.probed == 2
    assert (final.stat().st_mtime_ns, final.read_bytes()) == before
    assert os.listdir(tmp_path / "out" / "_staging" / "refunds_settled") == []


def test_a_run_published_in_one_format_stays_published_when_the_format_changes(tmp_path):
    """Found from outside: after `format` went from csv to parquet, diagnose said NOTHING_IN_FLIGHT
    and a publish made a second copy of the run (2026-04-24.parquet next to 2026-04-24.csv)."""
    publish(*make(tmp_path, "csv"), run(), TABLE)
    publisher, diagnostic = make(tmp_path, "parquet")
    diagnosis = diagnostic.diagnose(run())
    assert diagnosis.state is State.DONE, diagnosis.reason
    with pytest.raises(AlreadyPublished, match="DONE"):
        publish(publisher, diagnostic, run(), TABLE)
    assert sorted(os.listdir(tmp_path / "out" / "refunds_settled")) == ["2026-04-24.csv", "2026-04-24.csv.success"]


def test_a_run_published_in_two_formats_is_unknown(tmp_path):
    """Two copies (what the bug above left behind) are for a human to settle: UNKNOWN, naming both."""
    publish(*make(tmp_path, "csv"), run(), TABLE)
    out = tmp_path / "out" / "refunds_settled"
    (tmp_path / "aside").mkdir()
    for name in ("2026-04-24.csv", "2026-04-24.csv.success"):  # out of sight of the parquet publish
        (out / name).rename(tmp_path / "aside" / name)
    publish(*make(tmp_path, "parquet"), run(), TABLE)
    for name in ("2026-04-24.csv", "2026-04-24.csv.success"):
        (tmp_path / "aside" / name).rename(out / name)
    for fmt in ("csv", "parquet"):
        diagnosis = make(tmp_path, fmt)[1].diagnose(run())
        assert diagnosis.state is State.UNKNOWN and "published twice" in diagnosis.reason, diagnosis.reason


def test_a_commit_cut_after_its_rename_is_recovered_after_the_format_changes(tmp_path):
    """A CSV attempt killed between its rename and its marker, then the config says parquet: the
    CSV output is still the dead attempt's (ORPHANED), recover removes it, and the re-run publishes
    the one copy, as parquet. Before, recover left the CSV file and said NOTHING_IN_FLIGHT."""
    source = tmp_path / "in.parquet"
    pq.write_table(TABLE, source)
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[defaults]\nsink = "local"\n[sinks.local]\ntype = "file"\nroot = "{tmp_path / "out"}"\n')
    args = ("--dataset", "refunds_settled", "--run-date", "2026-04-24")
    crashed = run_cli("publish", *args, str(source), env=cli_env(cfg, PUBLISH_CRASH_AT="after_data_rename"))
    assert crashed.code == -9, crashed.stderr
    parquet = cli_env(cfg, ATOMIC_PUBLISH_SINKS__LOCAL__FORMAT="parquet")
    diagnosed = run_cli("diagnose", *args, "--json", env=parquet)
    assert diagnosed.code == 11, diagnosed.stdout + diagnosed.stderr
    assert str(tmp_path / "out" / "refunds_settled" / "2026-04-24.csv") in [
        o["location"] for o in diagnosed.json()["orphans"]
    ]
    assert run_cli("recover", *args, "--apply", env=parquet).code == 10
    assert run_cli("publish", *args, str(source), env=parquet).code == 0
    out = tmp_path / "out" / "refunds_settled"
    assert sorted(os.listdir(out)) == ["2026-04-24.parquet", "2026-04-24.parquet.success"]
    assert pq.read_table(out / "2026-04-24.parquet").column("amount").to_pylist() == TABLE.column("amount").to_pylist()


@pytest.mark.parametrize("under", [False, True], ids=["root-is-a-file", "root-under-a-file"])
def test_a_root_that_is_a_file_is_the_configuration_s_to_fix(tmp_path, under):
    """Found from outside: diagnose said the root does not exist (a first publish creates it) and
    publish exited 5 ('cannot create the root: File exists'); then, for a root under a regular
    file, publish exited 5 (Not a directory) and diagnose again said a first publish creates it;
    `sweep --apply` exited 5 for both."""
    source = tmp_path / "in.parquet"
    pq.write_table(TABLE, source)
    afile = tmp_path / "a-file"
    afile.write_text("not a directory\n")
    root = afile / "sub" if under else afile
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[defaults]\nsink = "local"\n[sinks.local]\ntype = "file"\nroot = "{root}"\n')
    args = ("--dataset", "refunds_settled", "--run-date", "2026-04-24")
    diagnosed = run_cli("diagnose", *args, "--json", env=cli_env(cfg))
    assert diagnosed.code == 14 and "is not a directory" in diagnosed.json()["reason"], diagnosed.stdout
    published = run_cli("publish", *args, str(source), env=cli_env(cfg))
    assert published.code == 2 and "is not a directory: fix `root`" in published.stderr, published.stderr
    swept = run_cli("sweep", "--dataset", "refunds_settled", "--older-than", "1h", "--apply", env=cli_env(cfg))
    assert swept.code == 2 and "is not a directory: fix `root`" in swept.stderr, swept.stderr
    assert afile.read_text() == "not a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "in.parquet", "publish.toml"]


def test_a_read_that_fails_in_the_input_is_bad_input_not_the_destination(tmp_path):
    """Found from outside: an OSError raised by the records' own generator (its source failed) was
    reported as the destination's disk (exit 5, "unreachable"); it is the input's (exit 2), and the
    attempt's staging is removed."""
    import errno

    publisher, diagnostic = make(tmp_path)

    def batches():
        yield from TABLE.to_batches()
        raise OSError(errno.EIO, "Input/output error", "/mnt/source/part-2.csv")

    reader = pa.RecordBatchReader.from_batches(TABLE.schema, batches())
    with pytest.raises(InputError, match=r"the records: reading the input failed: .*part-2\.csv"):
        publish(publisher, diagnostic, run(), reader)
    assert diagnostic.diagnose(run()).state is State.NOTHING_IN_FLIGHT


def test_string_view_columns_as_polars_exports_them_are_published_as_text(tmp_path):
    """Found from outside: a polars-like input (string_view through __arrow_c_stream__) made the CSV
    writer fail with a raw ArrowInvalid (exit 1, "a bug"), after the lock."""

    class PolarsLike:
        def __init__(self, table):
            self.table = table

        def __arrow_c_stream__(self, requested_schema=None):
            return self.table.__arrow_c_stream__(requested_schema)

    day = 86_400_000
    data = pa.table(
        {"id": [1, 2], "name": pa.array(["a", "b"], pa.string_view()), "on": pa.array([day, 2 * day], pa.date64())}
    )
    publisher, diagnostic = make(tmp_path)
    result = publish(publisher, diagnostic, run(), PolarsLike(data))
    written = pacsv.read_csv(result.receipt.location)
    assert written.column("name").to_pylist() == ["a", "b"]
    assert [str(d) for d in written.column("on").to_pylist()] == ["1970-01-02", "1970-01-03"]
    bad = pa.table({"id": [1], "on": pa.array([day + 5], pa.date64())})  # not a whole day
    with pytest.raises(InputError, match="would lose data"):
        publish(publisher, diagnostic, Run.new("refunds_settled", "2026-04-25"), bad)


def test_a_categorical_of_string_views_as_polars_exports_it_is_published(tmp_path):
    """Found from outside: polars exports a Categorical column as dictionary<int32, string_view>,
    which every writer refused with a raw Arrow error (exit 1)."""
    codes = pa.array([0, 1, 0], pa.int32())
    kind = pa.DictionaryArray.from_arrays(codes, pa.array(["card", "upi"], pa.string_view()))
    data = pa.table({"id": [1, 2, 3], "kind": kind, "tags": pa.array([["a"], [], ["b"]], pa.list_(pa.string_view()))})
    publisher, diagnostic = make(tmp_path, "parquet")
    result = publish(publisher, diagnostic, run(), data)
    written = pq.read_table(result.receipt.location)
    assert written.column("kind").to_pylist() == ["card", "upi", "card"]
    assert written.column("tags").to_pylist() == [["a"], [], ["b"]]
    assert diagnostic.diagnose(run()).state is State.DONE
