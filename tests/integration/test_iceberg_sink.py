"""The Iceberg sink against real pyiceberg catalogs: what the contract suite does not cover."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atomic_publish import CommitOutcomeUnknown, LostRace, Run, SchemaMismatch, publish
from atomic_publish.diagnostics.iceberg import IcebergDiagnostic
from atomic_publish.publishers.iceberg import (
    SUMMARY_ATTEMPT,
    SUMMARY_RUN_ID,
    IcebergPublisher,
    IcebergSinkConfig,
    run_lease,
)
from atomic_publish.publishers.taxonomy import State
from tests.helpers import cli_env, race_for_the_lease, refunds_run_args, run_cli

DATE = "2026-04-24"


def make(tmp_path, rest=None, **overrides):
    """A publisher on a SQLite catalog in tmp_path, or, with ``rest`` (an Iceberg REST service), on
    that catalog in a namespace of its own (the server is shared by the session)."""
    if rest is None:
        catalog = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": (tmp_path / "wh").as_uri()}
        overrides.setdefault("namespace", "reports")
    else:
        catalog = {"type": "rest", "uri": rest.uri, **rest.properties}
        overrides.setdefault("namespace", "ns_" + uuid.uuid4().hex[:12])
        overrides.setdefault("work_location", (tmp_path / "work").as_uri())
    config = IcebergSinkConfig(catalog=catalog, **overrides)
    publisher = IcebergPublisher(config)
    publisher.layout.catalog()  # the configured destination exists (an empty catalog)
    return publisher, IcebergDiagnostic(config)


@pytest.fixture(params=["sqlite", pytest.param("rest", marks=pytest.mark.integration)])
def rest(request):  # type: ignore[no-untyped-def]
    """None for a SQLite catalog; Apache Iceberg's REST catalog server (local warehouse) for "rest"."""
    return request.getfixturevalue("iceberg_rest_service") if request.param == "rest" else None


def data_files(publisher, rest):  # type: ignore[no-untyped-def]
    """The Parquet files of this test's namespace (local warehouses only)."""
    if rest is None:
        return list(Path(publisher.config.catalog["warehouse"].removeprefix("file://")).rglob("*.parquet"))
    return list((Path(rest.warehouse.removeprefix("file://")) / publisher.config.namespace).rglob("*.parquet"))


def rows(ids, part="p1", values=None):
    values = values or [f"v{i}" for i in ids]
    return pa.table({"id": pa.array(ids, pa.int64()), "v": values, "part": [part] * len(ids)})


def files_listed_by_manifests(table, snapshot) -> pa.Table:
    """A second reader sharing no code with the publisher: the data files the snapshot's manifests
    list, read with plain pyarrow."""
    paths = [
        entry.data_file.file_path
        for manifest in snapshot.manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    ]
    return pa.concat_tables(pq.read_table(p.removeprefix("file://")) for p in paths)


def test_one_snapshot_carries_the_run_and_a_second_reader_agrees(tmp_path, rest):
    publisher, diagnostic = make(tmp_path, rest)
    run = Run.new("items", DATE)
    receipt = publish(publisher, diagnostic, run, rows([1, 2, 3])).receipt
    table = publisher.layout.load("items")
    (snapshot,) = table.snapshots()
    summary = snapshot.summary.additional_properties
    assert summary[SUMMARY_RUN_ID] == run.run_id and summary[SUMMARY_ATTEMPT] == run.attempt
    assert summary["atomic-publish.rows"] == "3" and summary["atomic-publish.checksum"] == receipt.checksum
    assert files_listed_by_manifests(table, snapshot).sort_by("id").to_pylist() == rows([1, 2, 3]).to_pylist()
    assert data_files(publisher, rest)  # where the other tests look for leftovers is where the data is
    assert table.scan().to_arrow().sort_by("id").to_pylist() == rows([1, 2, 3]).to_pylist()
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE


def test_a_first_run_is_nothing_in_flight_and_says_the_table_does_not_exist_yet(tmp_path, rest):
    publisher, diagnostic = make(tmp_path, rest)
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.NOTHING_IN_FLIGHT
    assert f"the table {publisher.config.namespace}.items does not exist yet" in d.reason


def test_a_data_directory_that_leads_out_of_the_table_is_refused(tmp_path):
    """What the sink writes (and recover would remove) is proven inside the table's location: a
    symlink that takes the run's data directory elsewhere is refused before anything is written."""
    from atomic_publish import UnsafeLayout

    publisher, diagnostic = make(tmp_path)
    publish(publisher, diagnostic, Run.new("items", "2026-04-23"), rows([1]))
    location = Path(publisher.layout.load("items").location().removeprefix("file://"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (location / "data" / "atomic-publish" / DATE).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafeLayout, match="is not inside"):
        publish(publisher, diagnostic, Run.new("items", DATE), rows([2]))
    assert not list(elsewhere.iterdir())


def test_schema_mismatch_is_refused_before_any_file_is_written(tmp_path, rest):
    publisher, diagnostic = make(tmp_path, rest)
    publish(publisher, diagnostic, Run.new("items", "2026-04-23"), rows([1]))
    before = sorted(data_files(publisher, rest))
    bad = pa.table({"id": pa.array([2], pa.int64()), "v": pa.array([2], pa.int64()), "part": ["p1"]})
    with pytest.raises(SchemaMismatch, match="'v' is string in the table but int64 in the data"):
        publish(publisher, diagnostic, Run.new("items", DATE), bad)
    assert sorted(data_files(publisher, rest)) == before


# Arrow types Iceberg has no exact twin for: widened losslessly (read back by pyarrow from the files
# the snapshot lists), or refused before any table exists. Found by hostile input: a uint8, int8,
# list, binary or dictionary column made a table, then was refused against it on every try.
WIDENED = {
    "int8": (pa.array([1, -2], pa.int8()), [1, -2]),
    "uint8": (pa.array([1, 255], pa.uint8()), [1, 255]),
    "uint32": (pa.array([1, 2**32 - 1], pa.uint32()), [1, 2**32 - 1]),
    "uint64": (pa.array([1, 2**63 - 1], pa.uint64()), [1, 2**63 - 1]),
    "float16": (pa.array([1.5, 2.0], pa.float16()), [1.5, 2.0]),
    "dictionary": (pa.array(["a", "b"]).dictionary_encode(), ["a", "b"]),
    "binary": (pa.array([b"a", b"b"]), [b"a", b"b"]),
    "list": (pa.array([[1], [2, 3]]), [[1], [2, 3]]),
    "map": (pa.array([[("k", 1)], []], pa.map_(pa.string(), pa.int64())), [[("k", 1)], []]),
    "date64": (pa.array([0, 86_400_000], pa.date64()), [dt.date(1970, 1, 1), dt.date(1970, 1, 2)]),
    "time32": (pa.array([1, 2], pa.time32("s")), [dt.time(0, 0, 1), dt.time(0, 0, 2)]),
    # pandas' datetime64[ns]: whole microseconds are taken as microseconds (they were refused)
    "timestamp[ns]": (
        pa.array([1_000, -5_000], pa.timestamp("ns", tz="Asia/Kolkata")),
        [dt.datetime(1970, 1, 1, 0, 0, 0, 1, dt.UTC), dt.datetime(1969, 12, 31, 23, 59, 59, 999_995, dt.UTC)],
    ),
    "time64[ns]": (pa.array([1_000, None], pa.time64("ns")), [dt.time(0, 0, 0, 1), None]),
    # ... inside lists, structs and maps too (they were refused as unsupported)
    "list of timestamp[ns]": (
        pa.array([[1_000], [2_000, None]], pa.list_(pa.timestamp("ns"))),
        [[dt.datetime(1970, 1, 1, 0, 0, 0, 1)], [dt.datetime(1970, 1, 1, 0, 0, 0, 2), None]],
    ),
    "struct of time64[ns]": (
        pa.array([{"t": 1_000}, {"t": None}], pa.struct([("t", pa.time64("ns"))])),
        [{"t": dt.time(0, 0, 0, 1)}, {"t": None}],
    ),
    "map to timestamp[ns]": (
        pa.array([[("k", 3_000)], []], pa.map_(pa.string(), pa.timestamp("ns", tz="UTC"))),
        [[("k", dt.datetime(1970, 1, 1, 0, 0, 0, 3, dt.UTC))], []],
    ),
}
REFUSED = {
    "null": (pa.array([None, None], pa.null()), "has only nulls and no type"),
    "time64[ns] below the microsecond": (pa.array([1_000, 1_001], pa.time64("ns")), "(00:00:00.000001001)"),
    "timestamp[ns] below the microsecond": (pa.array([7, None], pa.timestamp("ns")), "has a value with nanoseconds"),
    "list of timestamp[ns] below the microsecond": (
        pa.array([[1_000], [1_001]], pa.list_(pa.timestamp("ns"))),
        "(1970-01-01 00:00:00.000001001)",
    ),
    "decimal256": (pa.array([None, None], pa.decimal256(40, 2)), "cannot store"),
    "duration": (pa.array([1, 2], pa.duration("s")), "cannot store"),
    "uint64 above 2**63": (pa.array([1, 2**64 - 1], pa.uint64()), "not in range"),
}


@pytest.mark.parametrize("kind", sorted(WIDENED))
def test_arrow_types_without_an_iceberg_twin_are_widened_losslessly(tmp_path, kind, rest):
    publisher, diagnostic = make(tmp_path, rest)
    column, expected = WIDENED[kind]
    run = Run.new("types", DATE)
    publish(publisher, diagnostic, run, pa.table({"id": [1, 2], "v": column}))
    table = publisher.layout.load("types")
    assert files_listed_by_manifests(table, table.current_snapshot()).sort_by("id").column("v").to_pylist() == expected
    assert diagnostic.diagnose(run).state is State.DONE


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_arrow_types_iceberg_cannot_store_are_refused_leaving_no_table(tmp_path, kind, rest):
    publisher, diagnostic = make(tmp_path, rest)
    column, message = REFUSED[kind]
    with pytest.raises(SchemaMismatch, match=r"column 'v'|not in range") as info:
        publish(publisher, diagnostic, Run.new("types", DATE), pa.table({"id": [1, 2], "v": column}))
    assert message in str(info.value)
    assert publisher.layout.load("types") is None
    assert not data_files(publisher, rest)


def test_replace_partition_mode_swaps_the_partition_in_one_commit(tmp_path, rest):
    publisher, diagnostic = make(tmp_path, rest, mode="replace_partition", partition_column="part")
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        # New partitions: nothing to delete, which pyiceberg warned about on the operator's stderr.
        publish(publisher, diagnostic, Run.new("items", "2026-04-22"), rows([10], part="p0"))
        publish(publisher, diagnostic, Run.new("items", "2026-04-23"), rows([1, 2, 3], part="p1"))
    assert [str(w.message) for w in warned if "Delete operation" in str(w.message)] == []
    publish(publisher, diagnostic, Run.new("items", DATE), rows([1, 2], part="p1", values=["new1", "new2"]))
    table = publisher.layout.load("items")
    assert sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "v": "new1", "part": "p1"},
        {"id": 2, "v": "new2", "part": "p1"},
        {"id": 10, "v": "v10", "part": "p0"},
    ]
    runs = [s.summary.additional_properties.get(SUMMARY_RUN_ID) for s in table.snapshots()]
    assert runs.count(f"items/{DATE}") >= 1 and len(set(runs)) == 3


def test_replace_partition_mode_replaces_the_null_partition_too(tmp_path, rest):
    """A run with a null in the partition column failed its commit with exit 5 ("unreachable,
    re-run"): pyiceberg's In() takes no None (found from outside)."""
    publisher, diagnostic = make(tmp_path, rest, mode="replace_partition", partition_column="part")
    publish(publisher, diagnostic, Run.new("items", "2026-04-22"), rows([10], part="p0"))
    nulls = pa.table(
        {"id": pa.array([1, 2], pa.int64()), "v": ["v1", "v2"], "part": pa.array([None, None], pa.string())}
    )
    publish(publisher, diagnostic, Run.new("items", "2026-04-23"), nulls)
    mixed = pa.table({"id": pa.array([3, 4], pa.int64()), "v": ["new3", "new4"], "part": [None, "p0"]})
    publish(publisher, diagnostic, Run.new("items", DATE), mixed)
    got = publisher.layout.load("items").scan().to_arrow().to_pylist()
    assert sorted(got, key=lambda r: r["id"]) == [
        {"id": 3, "v": "new3", "part": None},
        {"id": 4, "v": "new4", "part": "p0"},
    ]
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE


@pytest.mark.parametrize("round_", range(3))
def test_racing_commits_on_an_empty_table_publish_exactly_once(tmp_path, round_, rest):
    """pyiceberg's own retry would re-apply the loser's append on top of the winner's: both copies
    published. The publisher re-checks the history on every try instead."""
    publisher, diagnostic = make(tmp_path, rest)
    a, b = Run.new("items", DATE), Run.new("items", DATE)
    staged = {r.attempt: publisher.stage(r, rows([1, 2, 3]).to_reader()) for r in (a, b)}
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def commit(r):
        barrier.wait()
        try:
            outcomes[r.attempt] = IcebergPublisher(publisher.config).commit(r, [staged[r.attempt]])
        except LostRace as exc:
            outcomes[r.attempt] = exc

    threads = [threading.Thread(target=commit, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(v).__name__ for v in outcomes.values()) == ["LostRace", "Receipt"]
    table = publisher.layout.load("items")
    assert [s.summary.additional_properties.get(SUMMARY_RUN_ID) for s in table.snapshots()] == [f"items/{DATE}"]
    assert table.scan().to_arrow().num_rows == 3
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.PUBLISHED_WITH_ORPHANS  # the loser's files, until it discards them
    assert {o.attempt for o in d.orphans} == {k for k, v in outcomes.items() if isinstance(v, LostRace)}


@pytest.mark.parametrize("landed", [True, False])
def test_catalog_failure_during_commit_is_unknown_and_settled_by_the_snapshots(tmp_path, monkeypatch, landed, rest):
    publisher, diagnostic = make(tmp_path, rest)
    run = Run.new("items", DATE)
    staged = publisher.stage(run, rows([1, 2]).to_reader())
    catalog = publisher.layout.catalog()
    real_commit = catalog.commit_table

    def broken(*args, **kwargs):
        if landed:
            real_commit(*args, **kwargs)  # the swap happens, then the answer is lost
        raise ConnectionResetError("catalog connection reset")

    monkeypatch.setattr(catalog, "commit_table", broken)
    with pytest.raises(CommitOutcomeUnknown, match="catalog connection reset"):
        publisher.commit(run, [staged])
    monkeypatch.undo()
    assert all(os.path.exists(p.removeprefix("file://")) for p in staged.details["files"])  # nothing deleted
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is (State.DONE if landed else State.ORPHANED)


def test_a_try_that_landed_before_a_reported_conflict_is_this_attempts_success(tmp_path, monkeypatch):
    """A precondition failure whose commit record names this same attempt is success, never a lost
    race (which would discard the files the snapshot now references)."""
    from pyiceberg.exceptions import CommitFailedException

    publisher, _ = make(tmp_path)
    run = Run.new("items", DATE)
    staged = publisher.stage(run, rows([1, 2]).to_reader())
    catalog = publisher.layout.catalog()
    real_commit = catalog.commit_table
    calls = []

    def landed_then_conflict(*args, **kwargs):
        calls.append(1)
        real_commit(*args, **kwargs)
        raise CommitFailedException("Requirement failed: branch main has changed")

    monkeypatch.setattr(catalog, "commit_table", landed_then_conflict)
    receipt = publisher.commit(run, [staged])
    monkeypatch.undo()
    assert calls == [1] and receipt.attempt == run.attempt and receipt.rows == 2
    assert all(os.path.exists(p.removeprefix("file://")) for p in staged.details["files"])
    # (pyiceberg removes the manifests of a commit it was told failed, so diagnose would now see a
    # snapshot with missing metadata: a real catalog's conflict never lands; only the doctrine is
    # tested here, that this attempt never discards what its own snapshot names.)


def test_live_attempt_holds_a_lease_and_a_dead_one_does_not(tmp_path):
    publisher, diagnostic = make(tmp_path)
    holder = Run.new("items", DATE)
    with publisher.run_lock(holder):
        d = diagnostic.diagnose(Run.new("items", DATE))
        assert d.state is State.RUNNING and d.holder.attempt == holder.attempt and d.holder.pid == os.getpid()
        from atomic_publish import RunInProgress

        with pytest.raises(RunInProgress):
            publish(publisher, diagnostic, Run.new("items", DATE), rows([1]))
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT


@pytest.mark.parametrize("held_before", ["nothing", "a dead attempt"])
def test_two_attempts_never_both_hold_the_lease_on_a_local_warehouse(tmp_path, held_before):
    publisher, _ = make(tmp_path)
    for _ in range(5):
        if held_before == "a dead attempt":
            dead = run_lease(publisher.layout, Run.new("items", DATE))
            dead.acquire()
            dead._stop.set()  # stops renewing; the pid below makes it a dead attempt's lease
            doc = json.loads(Path(dead.location.removeprefix("file://")).read_bytes())
            Path(dead.location.removeprefix("file://")).write_text(json.dumps({**doc, "pid": 2**22 + 1}))
        leases = [run_lease(publisher.layout, Run.new("items", DATE)) for _ in range(3)]
        assert len(race_for_the_lease(leases)) == 1


def test_publish_sink_iceberg_works_with_no_config(tmp_path, small_inputs):
    refunds, _ = small_inputs
    result = run_cli(
        "publish",
        "--sink",
        "iceberg",
        "--dataset",
        "refunds",
        "--run-date",
        DATE,
        "--json",
        str(refunds),
        cwd=tmp_path,
        env=cli_env(),
    )
    assert result.code == 0, result.stderr
    assert result.json()["receipt"]["rows"] == 10_000
    assert (tmp_path / "data" / "iceberg" / "catalog.db").exists()
    diagnosed = run_cli(
        "diagnose", "--sink", "iceberg", "--dataset", "refunds", "--run-date", DATE, cwd=tmp_path, env=cli_env()
    )
    assert diagnosed.code == 0 and "DONE" in diagnosed.stdout


@pytest.mark.integration
def test_postgres_catalog_with_the_warehouse_on_s3(tmp_path, postgres_service, s3_service, small_inputs):
    from psycopg.conninfo import conninfo_to_dict

    db = f"ice_{uuid.uuid4().hex[:8]}"
    postgres_service.create_database(db)
    p = conninfo_to_dict(postgres_service.dsn)
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\n[sinks.lake.catalog]\ntype = "sql"\n'
        f'uri = "postgresql+psycopg://{p["user"]}@{p["host"]}:{p["port"]}/{db}"\n'
        f'warehouse = "s3://{s3_service.bucket}/wh-{db}"\n"s3.endpoint" = "{s3_service.endpoint}"\n'
        f'"s3.region" = "{s3_service.region}"\n'
    )
    env = cli_env(cfg, PGPASSWORD=p["password"], **s3_service.env())
    args = refunds_run_args(small_inputs, "--sink", "lake")
    published = run_cli(*args, env=env)
    assert published.code == 0, published.stderr
    diagnosed = run_cli(
        "diagnose", "--sink", "lake", "--dataset", "refunds_settled", "--run-date", DATE, "--json", env=env
    )
    assert diagnosed.json()["state"] == "DONE", diagnosed.stdout
    assert run_cli(*args, env=env).code == 3
    listed = s3_service.client().list_objects_v2(Bucket=s3_service.bucket, Prefix=f"wh-{db}/")
    assert any(o["Key"].endswith(".parquet") for o in listed.get("Contents", []))


def test_catalog_name_uses_pyicebergs_own_configuration(tmp_path, monkeypatch, small_inputs):
    """`catalog_name` selects pyiceberg's own settings (.pyiceberg.yaml in PYICEBERG_HOME, or
    PYICEBERG_CATALOG__<NAME>__*), exactly as pyiceberg's load_catalog does; publish.toml's [catalog]
    table goes over them."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pyiceberg.yaml").write_text(
        f"catalog:\n  lake:\n    type: sql\n    uri: sqlite:///{tmp_path}/yaml-catalog.db\n"
        f"    warehouse: {(tmp_path / 'yaml-wh').as_uri()}\n"
    )
    (tmp_path / "yaml-wh").mkdir()
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.lake]\ntype = "iceberg"\ncatalog_name = "lake"\nnamespace = "reports"\n')
    env = cli_env(cfg, PYICEBERG_HOME=str(home))
    assert (
        run_cli(
            "publish", "--sink", "lake", "--dataset", "items", "--run-date", DATE, str(small_inputs[0]), env=env
        ).code
        == 0
    )
    assert (tmp_path / "yaml-catalog.db").exists() and not (tmp_path / "data").exists()
    env_only = cli_env(
        cfg,
        PYICEBERG_CATALOG__LAKE__TYPE="sql",
        PYICEBERG_CATALOG__LAKE__URI=f"sqlite:///{tmp_path}/env-catalog.db",
        PYICEBERG_CATALOG__LAKE__WAREHOUSE=(tmp_path / "yaml-wh").as_uri(),
    )
    assert (
        run_cli(
            "publish", "--sink", "lake", "--dataset", "items", "--run-date", DATE, str(small_inputs[0]), env=env_only
        ).code
        == 0
    )
    assert (tmp_path / "env-catalog.db").exists()


def test_a_sql_catalog_without_uri_or_warehouse_is_a_clear_error(tmp_path, small_inputs):
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.lake]\ntype = "iceberg"\n[sinks.lake.catalog]\ntype = "sql"\n')
    result = run_cli("sinks", env=cli_env(cfg))
    assert (
        result.code == 2
        and "a SQL catalog needs uri and warehouse" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_a_sqlite_catalog_in_a_directory_that_does_not_exist_yet_is_created(tmp_path, small_inputs):
    cfg = tmp_path / "publish.toml"
    deep = tmp_path / "not" / "there" / "yet"
    cfg.write_text(
        f'[sinks.lake]\ntype = "iceberg"\n[sinks.lake.catalog]\ntype = "sql"\nuri = "sqlite:///{deep}/c.db"\n'
        f'warehouse = "{tmp_path / "wh"}"\n'
    )
    args = ("publish", "--sink", "lake", "--dataset", "items", "--run-date", DATE, str(small_inputs[0]))
    assert run_cli(*args, env=cli_env(cfg)).code == 0 and (deep / "c.db").exists()


def test_a_rest_catalog_that_never_answers_is_bounded(tmp_path):
    """pyiceberg sends REST requests with no timeout (found: diagnose still waiting after 60 s on a
    catalog that accepts connections and never answers). Now each request has timeout_seconds."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does), never answers
    try:
        cfg = tmp_path / "publish.toml"
        cfg.write_text(
            f'[sinks.r]\ntype = "iceberg"\ntimeout_seconds = 2\nwork_location = "{(tmp_path / "work").as_uri()}"\n'
            f'[sinks.r.catalog]\ntype = "rest"\nuri = "http://127.0.0.1:{silent.getsockname()[1]}"\n'
        )
        data = tmp_path / "in.csv"
        data.write_text("id,amount\n1,2.5\n")
        args = ("--sink", "r", "--dataset", "items", "--run-date", DATE)
        started = time.monotonic()
        published = run_cli("publish", *args, str(data), config=cfg, timeout=60)
        assert published.code == 5, published.stderr
        diagnosed = run_cli("diagnose", *args, config=cfg, timeout=60)
        # Whichever bound fires first: the HTTP read timeout, or the catalog request's own (the same 2 s).
        said = diagnosed.stdout
        assert diagnosed.code == 14 and ("timed out" in said or "did not answer" in said), said
        assert time.monotonic() - started < 30
    finally:
        silent.close()


def test_a_namespace_another_writer_created_meanwhile_is_used(tmp_path, monkeypatch):
    """Two writers of a first run (Spark tasks) create the namespace at once: pyiceberg's SQL
    catalog checks, then inserts, and the later insert fails on the key (IntegrityError, not
    NamespaceAlreadyExistsError). Found by bench/bench_spark.py. The window is made certain here:
    the other writer's namespace lands after this writer's check."""
    from pyiceberg.catalog.sql import SqlCatalog

    publisher, diagnostic = make(tmp_path)
    publisher.layout.catalog().create_namespace("reports")  # the other writer
    real, seen = SqlCatalog.namespace_exists, []

    def checked_before_the_other_writer(self, namespace):  # type: ignore[no-untyped-def]
        seen.append(namespace)
        return False if len(seen) == 1 else real(self, namespace)

    monkeypatch.setattr(SqlCatalog, "namespace_exists", checked_before_the_other_writer)
    result = publish(publisher, diagnostic, Run.new("refunds", DATE), rows([1, 2, 3]))
    assert result.receipt.rows == 3 and len(seen) >= 2
    assert diagnostic.diagnose(Run.new("refunds", DATE)).state is State.DONE


def test_data_files_are_written_in_row_groups_of_98304_rows(tmp_path):
    """The row group bounds what a stage holds in memory (six 16,384-row chunks: the 10M-row
    publish peaked below 200 MB with it, above with 131,072); the input's own batching does not
    change it."""
    publisher, diagnostic = make(tmp_path)
    ids = list(range(200_000))
    data = pa.table({"id": pa.array(ids, pa.int64()), "v": [f"v{i % 97}" for i in ids], "part": ["p1"] * len(ids)})
    reader = pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=7_000))
    publish(publisher, diagnostic, Run.new("items", DATE), reader)
    (path,) = data_files(publisher, None)
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [98_304, 98_304, 3_392]
    assert pq.read_table(path).sort_by("id").equals(data)
