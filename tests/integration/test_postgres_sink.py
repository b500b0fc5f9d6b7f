"""The Postgres sink against the harness's real server: what the contract suite does not cover."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from atomic_publish import (
    CommitAborted,
    ConfigError,
    DataRejected,
    InputError,
    LostRace,
    Run,
    SchemaMismatch,
    publish,
)
from atomic_publish.diagnostics.postgres import PostgresDiagnostic
from atomic_publish.publishers.layouts.postgres import application_name
from atomic_publish.publishers.postgres import PostgresPublisher, PostgresSinkConfig, staging_table_name
from atomic_publish.publishers.taxonomy import State
from atomic_publish.sdk import exit_code_for
from tests.helpers import cli_env, cli_imports, refunds_run_args, run_cli, start_cli

pytestmark = pytest.mark.integration
DATE = "2026-04-24"


@pytest.fixture
def pg(postgres_service, monkeypatch, tmp_path):
    """A fresh schema on the real server; the password only in PGPASSWORD, as a user would."""
    params = conninfo_to_dict(postgres_service.dsn)
    password = params.pop("password")
    monkeypatch.setenv("PGPASSWORD", password)
    schema = f"s_{uuid.uuid4().hex[:10]}"

    class Sink:
        dsn = postgres_service.dsn
        conninfo = make_conninfo(**params)

        def config(self, **overrides):
            return PostgresSinkConfig(
                **{"conninfo": self.conninfo, "schema": schema, "key_columns": ["id"], **overrides}
            )

        def make(self, **overrides):
            config = self.config(**overrides)
            return PostgresPublisher(config), PostgresDiagnostic(config)

        def execute(self, statement):
            with psycopg.connect(postgres_service.dsn, autocommit=True) as conn:
                conn.execute(statement)

        def query(self, query, params=()):
            with psycopg.connect(postgres_service.dsn) as conn:
                return conn.execute(query, params).fetchall()

        def write_config(self, **extra):
            cfg = tmp_path / "publish.toml"
            lines = [f'[sinks.pg]\ntype = "postgres"\nconninfo = "{self.conninfo}"\nschema = "{schema}"']
            lines.append('key_columns = ["refund_id"]\nreplace_partition_column = "_run_id"')
            lines += [f"{k} = {v!r}" for k, v in extra.items()]
            cfg.write_text("\n".join(lines) + "\n")
            return cfg

    Sink.schema = schema
    Sink.password = password
    return Sink()


def table(ids, values, part="p1"):
    return pa.table({"id": pa.array(ids, pa.int64()), "v": values, "part": [part] * len(ids)})


def test_a_first_run_is_nothing_in_flight_and_says_what_does_not_exist_yet(pg):
    """Before the first publish the schema exists but neither the target nor the ledger: diagnose
    reads the database, names both as not there yet, and (the container read) advises the run."""
    pg.execute(f"CREATE SCHEMA {pg.schema}")
    publisher, diagnostic = pg.make()
    d = diagnostic.diagnose(Run.new("items", "2026-04-24"))
    assert d.state is State.NOTHING_IN_FLIGHT
    assert f"the target {pg.schema}.items and the ledger {pg.schema}.atomic_publish_ledger do not exist yet" in d.reason
    publish(publisher, diagnostic, Run.new("items", "2026-04-23"), table([1], ["a"]))
    d = diagnostic.diagnose(Run.new("items", "2026-04-24"))
    assert d.state is State.NOTHING_IN_FLIGHT and "exist yet" not in d.reason


def test_publish_merges_and_writes_one_ledger_row(pg):
    publisher, diagnostic = pg.make()
    receipt = publish(publisher, diagnostic, Run.new("items", DATE), table([1, 2, 3], ["a", "b", "c"])).receipt
    assert receipt.rows == 3
    assert pg.query(f'SELECT id, v FROM "{pg.schema}".items ORDER BY id') == [(1, "a"), (2, "b"), (3, "c")]
    ledger = pg.query(f'SELECT run_id, attempt, rows, checksum FROM "{pg.schema}".atomic_publish_ledger')
    assert ledger == [("items/2026-04-24", receipt.attempt, 3, receipt.checksum)]
    assert pg.query(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname LIKE '\\_ap\\_stg\\_%%'",
        (pg.schema,),
    ) == [(0,)]
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE


def test_merge_updates_and_replaces_the_partition(pg):
    publisher, diagnostic = pg.make(replace_partition_column="part")
    publish(publisher, diagnostic, Run.new("items", "2026-04-23"), table([1, 2, 3], ["a", "b", "c"], "p1"))
    publish(publisher, diagnostic, Run.new("items", "2026-04-22"), table([10], ["other"], "p0"))
    # An operator forces a corrected re-publish of the p1 run: key 2 updated, key 3 gone.
    pg.execute(f"DELETE FROM \"{pg.schema}\".atomic_publish_ledger WHERE run_id = 'items/2026-04-23'")
    publish(publisher, diagnostic, Run.new("items", "2026-04-23"), table([1, 2], ["a", "B"], "p1"))
    rows = pg.query(f'SELECT id, v, part FROM "{pg.schema}".items ORDER BY id')
    assert rows == [(1, "a", "p1"), (2, "B", "p1"), (10, "other", "p0")]


def test_type_mismatch_with_an_existing_target_is_refused_before_anything_changes(pg):
    publisher, diagnostic = pg.make()
    pg.execute(f'CREATE SCHEMA "{pg.schema}"')
    pg.execute(f'CREATE TABLE "{pg.schema}".items (id bigint PRIMARY KEY, v integer, part text)')
    with pytest.raises(SchemaMismatch, match=r"'v' is integer .* but text in the data"):
        publish(publisher, diagnostic, Run.new("items", DATE), table([1], ["a"]))
    assert pg.query(f'SELECT count(*) FROM "{pg.schema}".items') == [(0,)]
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT


def test_duplicate_keys_are_bad_input_and_change_nothing(pg):
    publisher, diagnostic = pg.make()
    with pytest.raises(InputError, match="duplicate values of the key"):
        publish(publisher, diagnostic, Run.new("items", DATE), table([1, 1, 2], ["a", "b", "c"]))
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.NOTHING_IN_FLIGHT, d.reason


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"table": "t" * 64}, "64 bytes"),
        ({"schema": "é" * 32}, "64 bytes"),
        ({"key_columns": ["k" * 70]}, "70 bytes"),
        ({"key_columns": []}, "at least 1"),
        ({"conninfo": "host=localhost password=hunter2"}, "PGPASSWORD"),
        ({"conninfo": "postgresql://u:hunter2@localhost/db"}, "PGPASSWORD"),
    ],
)
def test_bad_names_and_passwords_in_config_are_refused(pg, overrides, fragment):
    with pytest.raises(ValueError) as info:
        pg.config(**overrides)
    assert fragment in str(info.value)
    assert "hunter2" not in str(info.value)


def test_a_live_attempt_is_running(pg):
    publisher, diagnostic = pg.make()
    holder = Run.new("items", DATE)
    with publisher.run_lock(holder):
        d = diagnostic.diagnose(Run.new("items", DATE))
        assert d.state is State.RUNNING and d.holder.attempt == holder.attempt
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT


def _client_ports(pg, attempt):
    """The client ports of the server's sessions of ``attempt`` (of this process)."""
    rows = pg.query(
        "SELECT client_port FROM pg_stat_activity WHERE application_name = %s", (application_name(attempt),)
    )
    return sorted(port for (port,) in rows)


def test_the_bulk_loads_connection_opens_while_the_lock_is_taken(pg):
    """ADBC's connection (~60 ms of a publish, mostly waiting on the server) opens on a thread from
    the moment the lock is asked for; the load takes it, and the watchdog that shuts a stalled load
    down guards exactly its socket (not the lock's session). A lock released without a load closes it."""
    publisher, diagnostic = pg.make()
    run = Run.new("items", DATE)
    with publisher.run_lock(run):
        deadline = time.monotonic() + 10
        while len(_client_ports(pg, run.attempt)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_client_ports(pg, run.attempt)) == 2  # the lock's session, and the load's opening
        assert diagnostic.diagnose(Run.new("items", DATE)).holder.attempt == run.attempt
        conn, guarded = publisher._opening.take(besides={publisher._lock_socket})
        with conn:
            lock_port = publisher._lock_conn.execute("SELECT inet_client_port()").fetchone()[0]
            ports = _client_ports(pg, run.attempt)
            (fd,) = guarded
            with socket.socket(fileno=os.dup(fd)) as guarded_socket:
                load_port = guarded_socket.getsockname()[1]
            assert sorted([lock_port, load_port]) == ports, (lock_port, load_port, ports)
    assert _client_ports(pg, run.attempt) == []

    unused = Run.new("items", DATE)
    with publisher.run_lock(unused):
        deadline = time.monotonic() + 10
        while len(_client_ports(pg, unused.attempt)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    deadline = time.monotonic() + 10  # closed at once, or by its thread as it opens
    while _client_ports(pg, unused.attempt) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _client_ports(pg, unused.attempt) == []
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT


def test_a_lock_held_without_a_load_keeps_no_idle_session(pg):
    """A process that holds the run's lock and loads nothing itself (a Spark job's holder, for the
    job's length; a group's roll-forward) closes the pre-opened load connection timeout_seconds
    after it opened; a load after that opens its own, and the run publishes."""
    publisher, diagnostic = pg.make(timeout_seconds=1)
    run = Run.new("items", DATE)
    with publisher.run_lock(run):
        lock_port = publisher._lock_conn.execute("SELECT inet_client_port()").fetchone()[0]
        assert publisher._opening._settled.wait(60)  # opened (seconds on a loaded machine)
        opened = _client_ports(pg, run.attempt)
        deadline = time.monotonic() + 60
        while _client_ports(pg, run.attempt) != [lock_port] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(opened) == 2 and lock_port in opened, opened  # the lock's session, and the opening
        assert _client_ports(pg, run.attempt) == [lock_port]
        staged = publisher.stage(run, table([1, 2], ["a", "b"]).to_reader())
        publisher.commit(run, [staged])
    assert _client_ports(pg, run.attempt) == []
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE
    assert pg.query(f"SELECT id FROM {pg.schema}.items ORDER BY id") == [(1,), (2,)]


def test_orphaned_staging_is_named_with_rows_and_dropped_by_clean(pg):
    publisher, diagnostic = pg.make()
    dead = Run.new("items", DATE)
    publisher.stage(dead, table([1, 2, 3], ["a", "b", "c"]).to_reader())
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.ORPHANED
    (orphan,) = d.orphans
    assert orphan.kind == "staging-table" and orphan.rows == 3 and orphan.attempt == dead.attempt
    assert orphan.location.endswith(staging_table_name(dead)) and orphan.age_seconds(d.diagnosed_at) is not None
    report = diagnostic.clean(d)
    assert [a.location for a in report.removed] == [orphan.location]
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT
    assert diagnostic.clean(d).removed == ()  # a second clean finds it already gone


def test_prepared_transaction_named_after_the_run_is_an_orphan(pg):
    _, diagnostic = pg.make()
    gid = f"atomic-publish:items/{DATE}:20260424T060000Z-abcdef"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{pg.schema}"')
        conn.execute(f'CREATE TABLE "{pg.schema}".scratch (x int)')
        conn.execute("BEGIN")
        conn.execute(f'INSERT INTO "{pg.schema}".scratch VALUES (1)')
        conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.ORPHANED and [a.kind for a in d.orphans] == ["prepared-transaction"]
    assert diagnostic.runs_with_leftovers("items")[0].isoformat() == DATE
    diagnostic.clean(d)
    assert pg.query("SELECT count(*) FROM pg_prepared_xacts WHERE gid = %s", (gid,)) == [(0,)]
    assert pg.query(f'SELECT count(*) FROM "{pg.schema}".scratch') == [(0,)]


def test_concurrent_merges_of_the_same_new_key_end_as_a_clean_abort(pg, monkeypatch):
    """MERGE in Postgres 15 is not a safe upsert: two runs inserting the same new key at once make
    the second fail with a unique violation. Two different runs did not race for the same run, so it
    is not a LostRace (exit 4 is only for that): a CommitAborted (proven not landed, worth a retry),
    with nothing half-done."""
    publisher, diagnostic = pg.make()
    first, second = Run.new("items", "2026-04-23"), Run.new("items", "2026-04-24")
    staged = {r.run_id: publisher.stage(r, table([7], [r.run_id]).to_reader()) for r in (first, second)}
    publish(publisher, diagnostic, Run.new("items", "2026-04-20"), table([99], ["creates the target"]))
    monkeypatch.setenv("PUBLISH_PAUSE_AT", "before_commit:1.5")  # the first holds its insert uncommitted
    outcomes: dict[str, object] = {}

    def first_holds_its_insert() -> None:
        """Until the first commit's session sits inside its transaction, paused before COMMIT."""
        deadline = time.monotonic() + 30
        while not pg.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s AND state = 'idle in transaction'",
            (f"atomic-publish {first.attempt} %",),
        ):
            assert time.monotonic() < deadline, "the first commit never reached its pause"
            time.sleep(0.02)

    def commit(r, wait_for=None):
        if wait_for is not None:
            wait_for()
        try:
            outcomes[r.run_id] = PostgresPublisher(pg.config()).commit(r, [staged[r.run_id]])
        except CommitAborted as exc:
            outcomes[r.run_id] = exc

    threads = [
        threading.Thread(target=commit, args=(first,)),
        threading.Thread(target=commit, args=(second, first_holds_its_insert)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert type(outcomes[first.run_id]).__name__ == "Receipt"
    second_outcome = outcomes[second.run_id]
    assert isinstance(second_outcome, CommitAborted) and not isinstance(second_outcome, LostRace)
    assert "concurrent transaction inserted the same key" in str(second_outcome)
    assert pg.query(f'SELECT v FROM "{pg.schema}".items WHERE id = 7') == [(first.run_id,)]
    assert diagnostic.diagnose(second).state is State.ORPHANED  # its staging is still there to discard


def test_connection_lost_at_commit_is_unknown_and_settled_by_the_diagnosis(pg, small_inputs):
    cfg = pg.write_config()
    env = cli_env(cfg, PGPASSWORD=pg.password, PUBLISH_PAUSE_AT="before_commit:3")
    args = refunds_run_args(small_inputs, "--sink", "pg")
    proc = start_cli(*args, env=env)
    deadline = time.monotonic() + 30
    while True:  # the attempt's session, paused just before COMMIT
        rows = pg.query(
            # The commit's session: idle inside its transaction right after its last statement
            # (dropping the staging table; or, for a first run whose staging became the target,
            # measuring the target).
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'atomic-publish %%'"
            " AND state = 'idle in transaction'"
            " AND (query LIKE 'DROP TABLE%%' OR query LIKE 'SELECT pg_total_relation_size%%')"
        )
        if rows:
            break
        assert time.monotonic() < deadline, "the attempt never reached its commit"
        time.sleep(0.05)
    pg.query("SELECT pg_terminate_backend(%s)", (rows[0][0],))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 14, stderr
    assert "COMMIT" in stderr and "diagnose" in stderr
    diagnosed = run_cli(
        "diagnose", "--sink", "pg", "--dataset", "refunds_settled", "--run-date", DATE, "--json", env=env
    )
    assert diagnosed.json()["state"] == "ORPHANED"  # it had not landed: the staging table is still there
    env.pop("PUBLISH_PAUSE_AT")
    assert (
        run_cli("recover", "--sink", "pg", "--dataset", "refunds_settled", "--run-date", DATE, "--apply", env=env).code
        == 10
    )
    assert run_cli(*args, env=env).code == 0


def test_credentials_never_appear_in_errors_or_logs(pg, small_inputs):
    cfg = pg.write_config()
    args = refunds_run_args(small_inputs, "--sink", "pg")
    wrong = run_cli(*args, env=cli_env(cfg, PGPASSWORD="not-the-password-" + uuid.uuid4().hex))
    # A login the server refused is the configuration's to fix, not a server to wait for (found
    # from outside: exit 5, "re-run when it is back", which a scheduler retries for ever).
    assert wrong.code == 2 and "password authentication failed" in wrong.stderr, wrong.stderr
    assert "refused this login" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert "not-the-password" not in wrong.stderr + wrong.stdout
    no_db = cfg.with_name("no-db.toml")
    no_db.write_text(cfg.read_text().replace(pg.conninfo, pg.conninfo.replace("dbname=", "dbname=nosuchdb")))
    assert "nosuchdb" in no_db.read_text()
    missing = run_cli(*args, env=cli_env(no_db, PGPASSWORD=pg.password))
    assert missing.code == 2 and 'database "nosuchdb' in missing.stderr, missing.stderr
    good = run_cli("-v", *args, env=cli_env(cfg, PGPASSWORD=pg.password))
    assert good.code == 0, good.stderr
    assert pg.password not in good.stderr + good.stdout


def _tables(pg):
    return pg.query(
        "SELECT n.nspname, c.relname, c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
    )


@pytest.mark.parametrize("staging_schema", [None, "elsewhere"])
def test_a_first_publish_makes_its_staging_the_target_then_runs_merge(pg, staging_schema):
    """With no target yet, the run's (logged) staging table becomes the target in the commit, its
    primary key built then; the next run MERGEs from an unlogged staging. Either way: the rows, the
    key, a logged target and no staging table left."""
    extra = {"staging_schema": f"{pg.schema}_{staging_schema}"} if staging_schema else {}
    publisher, diagnostic = pg.make(**extra)
    publish(publisher, diagnostic, Run.new("items", "2026-04-23"), table([1, 2, 3], ["a", "b", "c"]))
    mine = [t for t in _tables(pg) if t[0].startswith(pg.schema)]
    assert mine == [(pg.schema, "atomic_publish_ledger", "p"), (pg.schema, "items", "p")]
    key = pg.query(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (f'"{pg.schema}".items',),
    )
    assert key == [("id",)]
    comment = pg.query("SELECT obj_description(%s::regclass, 'pg_class')", (f'"{pg.schema}".items',))
    assert comment == [(None,)]  # the staging's comment (its run and pid) did not stay on the target
    publish(publisher, diagnostic, Run.new("items", "2026-04-24"), table([3, 4], ["C", "d"]))
    assert pg.query(f'SELECT id, v FROM "{pg.schema}".items ORDER BY id') == [(1, "a"), (2, "b"), (3, "C"), (4, "d")]
    assert [t for t in _tables(pg) if t[0].startswith(pg.schema)] == mine
    assert diagnostic.diagnose(Run.new("items", "2026-04-23")).state is State.DONE


def test_a_first_publish_analyzes_the_key_and_leaves_every_other_column_to_autovacuum(pg):
    """The staging that becomes the target is analyzed on its key columns only, as every staging is
    (a full ANALYZE was 0.19 s of a 1.2 s first publish of 350k rows). An ANALYZE of some columns
    leaves the table's count of changed rows as it was, so the table is due for autovacuum's
    ANALYZE of every column (threshold: 50 rows + 10% of the table): unless autovacuum has already
    been, the count must be over that line. A full ANALYZE, or none, fails the first assertion."""
    publisher, diagnostic = pg.make()
    rows = 2000
    publish(publisher, diagnostic, Run.new("items", DATE), table(list(range(rows)), [f"v{i}" for i in range(rows)]))
    where = (pg.schema, "items")
    deadline = time.monotonic() + 10
    while True:  # a closed session's statistics reach the server a moment after it closes
        ((pending, auto),) = pg.query(
            "SELECT n_mod_since_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE schemaname = %s"
            " AND relname = %s",
            where,
        )
        if auto is not None or pending >= rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    analyzed = {c for (c,) in pg.query("SELECT attname FROM pg_stats WHERE schemaname = %s AND tablename = %s", where)}
    if auto is None:
        assert analyzed == {"id"}
        assert pending >= 50 + 0.1 * rows
    else:  # autovacuum came by in between: it analyzed every column
        assert analyzed == {"id", "v", "part"}


def _changes(pg, table="items"):
    """(updated, deleted, inserted) rows of the target so far, from the server's statistics."""
    pg.execute("SELECT pg_stat_force_next_flush()")
    return pg.query(
        "SELECT n_tup_upd, n_tup_del, n_tup_ins FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
        (pg.schema, table),
    )[0]


BIG = 120_000  # over the 100,000 rows below which the sink does not sample the staging


def test_a_republish_that_changes_most_rows_deletes_and_inserts_and_one_that_changes_few_merges(pg):
    publisher, diagnostic = pg.make()
    ids = list(range(BIG))
    publish(publisher, diagnostic, Run.new("items", "2026-04-20"), table(ids, ["a"] * BIG))
    before = _changes(pg)
    publish(publisher, diagnostic, Run.new("items", "2026-04-21"), table(ids, ["b"] * BIG))  # every row changes
    after = _changes(pg)
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (0, BIG, BIG)
    few = ["b"] * BIG
    few[:10] = ["c"] * 10
    publish(publisher, diagnostic, Run.new("items", "2026-04-22"), table(ids, few))  # 10 rows change
    last = _changes(pg)
    assert (last[0] - after[0], last[1] - after[1], last[2] - after[2]) == (10, 0, 0)
    assert pg.query(f'SELECT v, count(*) FROM "{pg.schema}".items GROUP BY v ORDER BY v') == [
        ("b", BIG - 10),
        ("c", 10),
    ]


def test_a_target_with_columns_of_its_own_is_always_merged(pg):
    """DELETE + INSERT would lose the values of columns the run does not write: MERGE keeps them."""
    publisher, diagnostic = pg.make()
    pg.execute(f'CREATE SCHEMA "{pg.schema}"')
    pg.execute(f'CREATE TABLE "{pg.schema}".items (id bigint PRIMARY KEY, v text, part text, note text)')
    pg.execute(f"INSERT INTO \"{pg.schema}\".items SELECT g, 'a', 'p1', 'keep' FROM generate_series(0, {BIG - 1}) g")
    before = _changes(pg)
    publish(publisher, diagnostic, Run.new("items", "2026-04-21"), table(list(range(BIG)), ["b"] * BIG))
    after = _changes(pg)
    assert (after[0] - before[0], after[1] - before[1]) == (BIG, 0)
    assert pg.query(f'SELECT v, note, count(*) FROM "{pg.schema}".items GROUP BY 1, 2') == [("b", "keep", BIG)]


@pytest.mark.parametrize("unique_key", [True, False])
def test_duplicate_keys_into_an_existing_target_are_bad_input_and_change_nothing(pg, unique_key):
    """With a unique index on the key the index finds them; without one, a GROUP BY first."""
    publisher, diagnostic = pg.make()
    pg.execute(f'CREATE SCHEMA "{pg.schema}"')
    key = "PRIMARY KEY" if unique_key else ""
    pg.execute(f'CREATE TABLE "{pg.schema}".items (id bigint {key}, v text, part text)')
    pg.execute(f"INSERT INTO \"{pg.schema}\".items VALUES (1, 'old', 'p1')")
    for ids in ([1, 1, 2], [5, 5, 6]):  # a duplicated key that matches a row, and a new one
        with pytest.raises(InputError, match=r"duplicate values of the key \['id'\] \(e.g. [15]\)"):
            publish(publisher, diagnostic, Run.new("items", DATE), table(ids, ["a", "b", "c"]))
        assert pg.query(f'SELECT id, v FROM "{pg.schema}".items') == [(1, "old")]
        assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT


def test_a_publish_imports_no_pandas(pg, tmp_path):
    """ADBC's DB-API module imports pyarrow.dataset, which imports pandas: 0.3 s and ~40 MB of every
    Postgres publish, for nothing the load uses. The bulk load goes through ADBC's own API; a first
    publish (the staging becomes the target) and a second (a MERGE into it) both land every row."""
    cfg = pg.write_config()
    data = tmp_path / "in.csv"
    for date, rows in (("2026-05-16", "r1,10,a\nr2,20,a\n"), ("2026-05-17", "r2,21,b\nr3,30,b\n")):
        data.write_text("refund_id,amount_paise,_run_id\n" + rows)
        code, out, err, imported = cli_imports(
            "-q",
            "publish",
            "--sink",
            "pg",
            "--dataset",
            "refunds",
            "--run-date",
            date,
            str(data),
            env=cli_env(cfg),
            watch=("pandas", "pyarrow.dataset"),
        )
        assert (code, imported) == (0, []), out + err
    assert pg.query(f"SELECT refund_id, amount_paise FROM {pg.schema}.refunds ORDER BY 1") == [
        ("r1", 10),
        ("r2", 21),
        ("r3", 30),
    ]


def _wide(columns):
    ints = pa.array([1, 2], pa.int64())
    return pa.table({"id": ints, **{f"c{i}": ints for i in range(columns)}})


@pytest.mark.parametrize(
    "data, error, fragment",
    [
        (_wide(1700), SchemaMismatch, "1701 columns; a Postgres table holds at most 1600"),
        (_wide(1100), DataRejected, "row is too big"),  # 8 KiB of bigints: fits the column limit, not a page
    ],
)
def test_input_beyond_a_postgres_limit_is_bad_input_and_leaves_nothing(pg, data, error, fragment):
    """Found from outside: 1,700 columns exited 5 ("unreachable, re-run"), and so would every re-run.
    A limit of Postgres that the input exceeds is the input's to change: exit 2, nothing left."""
    publisher, diagnostic = pg.make()
    with pytest.raises(error, match=fragment) as caught:
        publish(publisher, diagnostic, Run.new("items", DATE), data)
    assert exit_code_for(caught.value) == 2
    assert [t for t in _tables(pg) if t[0] == pg.schema] == []
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT


def test_a_role_without_the_privilege_to_stage_is_a_configuration_error(pg, monkeypatch):
    """A role that may not create the staging schema exited 5, "re-run", forever: it is the
    configuration's to fix (exit 2), and the message names the privilege."""
    role = f"r_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    try:
        monkeypatch.setenv("PGPASSWORD", f"pw-{role}")
        conninfo = make_conninfo(pg.conninfo, user=role)
        publisher, diagnostic = pg.make(conninfo=conninfo)
        with pytest.raises(ConfigError, match=r"permission denied.*lacks this privilege") as caught:
            publish(publisher, diagnostic, Run.new("items", DATE), table([1], ["a"]))
        assert exit_code_for(caught.value) == 2
        assert pg.query("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (pg.schema,)) == [(0,)]
    finally:
        pg.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (pa.table({"v": ["a"]}), "column 'id' named in the sink config is not in the data"),
        (pa.table({"id": [1], "xmin": [2]}), "system column"),
        (pa.table({"id": pa.array([], pa.int64())}), "the input has no rows"),
    ],
    ids=["no-key-column", "system-column", "no-rows"],
)
def test_input_refused_from_its_schema_changes_nothing_not_even_the_schema(pg, data, fragment):
    """Refused before the run's lock (publish's ``check_schema`` hook): the sink's schema, which a
    first publish creates, does not appear."""
    publisher, diagnostic = pg.make()
    with pytest.raises(InputError, match=fragment):
        publish(publisher, diagnostic, Run.new("items", DATE), data)
    assert pg.query("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (pg.schema,)) == [(0,)]


def test_a_role_allowed_in_a_schema_its_owner_made_publishes_and_a_missing_privilege_is_exit_2(pg, monkeypatch):
    """Found from outside: a role with CREATE on a schema made beforehand by its owner (as the
    Postgres page offers) could never publish a new dataset: CREATE SCHEMA IF NOT EXISTS checks the
    database's CREATE privilege first (exit 5). And a privilege missing at the commit (the target
    made by another role) was exit 5, "re-run", forever: it is a ConfigRejected, exit 2, nothing
    published and the attempt's staging removed."""
    from atomic_publish import ConfigRejected

    role = f"r_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    pg.execute(f'CREATE SCHEMA "{pg.schema}"; GRANT USAGE, CREATE ON SCHEMA "{pg.schema}" TO {role}')
    try:
        monkeypatch.setenv("PGPASSWORD", f"pw-{role}")
        publisher, diagnostic = pg.make(conninfo=make_conninfo(pg.conninfo, user=role), staging_schema=pg.schema)
        assert publish(publisher, diagnostic, Run.new("items", DATE), table([1], ["a"])).receipt is not None
        pg.execute(f'CREATE TABLE "{pg.schema}".other (id bigint PRIMARY KEY, v text, part text)')  # not the role's
        with pytest.raises(ConfigRejected, match=r"permission denied.*lacks this privilege") as caught:
            publish(publisher, diagnostic, Run.new("other", DATE), table([1], ["a"]))
        assert exit_code_for(caught.value) == 2
        assert diagnostic.diagnose(Run.new("other", DATE)).state is State.NOTHING_IN_FLIGHT
    finally:
        pg.execute(f'DROP SCHEMA "{pg.schema}" CASCADE; DROP OWNED BY {role}; DROP ROLE {role}')


def test_string_view_and_date64_columns_are_published(pg):
    """Found from outside: string_view (as polars exports text) had "no Postgres column type"
    and date64 failed in the COPY with exit 5; they are text and dates."""
    publisher, diagnostic = pg.make()
    data = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "v": pa.array(["a", "b"], pa.string_view()),
            "part": pa.array([86_400_000, 2 * 86_400_000], pa.date64()),
        }
    )
    assert publish(publisher, diagnostic, Run.new("items", DATE), data).receipt is not None
    rows = pg.query(f'SELECT id, v, part::text FROM "{pg.schema}".items ORDER BY id')
    assert rows == [(1, "a", "1970-01-02"), (2, "b", "1970-01-03")]


def test_categorical_columns_are_published_as_their_values(pg):
    """Found from outside: a pandas or polars Categorical column (an Arrow dictionary) had "no
    Postgres column type", and a dictionary of integers failed inside the COPY with exit 5."""
    publisher, diagnostic = pg.make()
    data = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "v": pa.DictionaryArray.from_arrays(
                pa.array([0, 1, 0], pa.int8()), pa.array(["a", "b"], pa.large_string())
            ),
            "part": pa.DictionaryArray.from_arrays(
                pa.array([1, 0, 1], pa.int32()), pa.array(["x", "y"], pa.string_view())
            ),
            "n": pa.array([7, 9, 7], pa.int64()).dictionary_encode(),
        }
    )
    assert publish(publisher, diagnostic, Run.new("items", DATE), data).receipt is not None
    rows = pg.query(f'SELECT id, v, part, n FROM "{pg.schema}".items ORDER BY id')
    assert rows == [(1, "a", "y", 7), (2, "b", "x", 9), (3, "a", "y", 7)]
    assert pg.query(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        f" WHERE attrelid = '\"{pg.schema}\".items'::regclass AND attname IN ('v', 'n') ORDER BY attname"
    ) == [("bigint",), ("text",)]


def test_a_role_that_cannot_read_the_ledger_is_a_configuration_error(pg, monkeypatch):
    """Found from outside: a role without SELECT on the ledger exited 5 ("unreachable, re-run") on
    every publish, and diagnose said UNKNOWN; both are exit 2, naming the privilege, and nothing
    changes at the destination."""
    publisher, diagnostic = pg.make()
    assert publish(publisher, diagnostic, Run.new("items", DATE), table([1], ["a"])).receipt is not None
    role = f"r_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    try:
        pg.execute(f'GRANT USAGE, CREATE ON SCHEMA "{pg.schema}" TO {role}')
        pg.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{pg.schema}".items TO {role}')
        monkeypatch.setenv("PGPASSWORD", f"pw-{role}")
        publisher, diagnostic = pg.make(conninfo=make_conninfo(pg.conninfo, user=role), staging_schema=pg.schema)
        later = Run.new("items", "2026-04-25")
        with pytest.raises(ConfigError, match=r"permission denied for table .*lacks this privilege") as caught:
            publish(publisher, diagnostic, later, table([2], ["b"]))
        assert exit_code_for(caught.value) == 2
        with pytest.raises(ConfigError, match=r"reading the evidence of items/2026-04-25 .*lacks this privilege"):
            diagnostic.diagnose(later)
        assert pg.query(f'SELECT id FROM "{pg.schema}".items ORDER BY id') == [(1,)]
        assert pg.query(f"SELECT count(*) FROM pg_tables WHERE tableowner = '{role}'") == [(0,)]
    finally:
        pg.execute(f'DROP SCHEMA "{pg.schema}" CASCADE; DROP OWNED BY {role}; DROP ROLE {role}')


def test_another_table_with_the_ledgers_name_is_a_configuration_error(pg):
    """Found from outside: a table of the user's own under the ledger's name made every publish exit
    5 ("unreachable, re-run"), forever. It is exit 2, naming the table and the option to change, and
    nothing is created or changed."""
    pg.execute(f'CREATE SCHEMA "{pg.schema}"; CREATE TABLE "{pg.schema}".atomic_publish_ledger (note text)')
    pg.execute(f"INSERT INTO \"{pg.schema}\".atomic_publish_ledger VALUES ('mine')")
    publisher, diagnostic = pg.make()
    with pytest.raises(
        ConfigError, match=r"atomic_publish_ledger is not an atomic-publish ledger .*set ledger_table"
    ) as caught:
        publish(publisher, diagnostic, Run.new("items", DATE), table([1], ["a"]))
    assert exit_code_for(caught.value) == 2
    with pytest.raises(ConfigError, match="not an atomic-publish ledger"):
        diagnostic.diagnose(Run.new("items", DATE))
    assert pg.query(f'SELECT note FROM "{pg.schema}".atomic_publish_ledger') == [("mine",)]
    assert pg.query("SELECT tablename FROM pg_tables WHERE schemaname = %s", (pg.schema,)) == [
        ("atomic_publish_ledger",)
    ]


def test_nanosecond_timestamps_are_published_as_microseconds_or_refused_when_they_would_lose_some(pg):
    """Found from outside: a timestamp[ns] value (pandas' datetime64[ns]) lost its nanoseconds in
    the COPY without a word. Whole microseconds are published exactly (and time columns, which had
    no Postgres type); a value below the microsecond is refused, naming it, and nothing is published."""
    publisher, diagnostic = pg.make()
    data = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "v": pa.array(["a", "b", "c"]),
            "part": pa.array(["p", "p", "p"]),
            "at": pa.array([1_700_000_000_123_456_000, None, -1_000], pa.timestamp("ns", tz="Asia/Kolkata")),
            "on": pa.array([3_600_000_000_000, None, 1_000], pa.time64("ns")),
        }
    )
    assert publish(publisher, diagnostic, Run.new("items", DATE), data).receipt is not None
    rows = pg.query(f'SELECT id, "at", "on" FROM "{pg.schema}".items ORDER BY id')
    assert rows == [
        (1, dt.datetime(2023, 11, 14, 22, 13, 20, 123456, dt.UTC), dt.time(1, 0)),
        (2, None, None),
        (3, dt.datetime(1969, 12, 31, 23, 59, 59, 999999, dt.UTC), dt.time(0, 0, 0, 1)),
    ]
    later = Run.new("items", "2026-04-25")
    lossy = data.set_column(3, "at", pa.array([1_000, 1_700_000_000_123_456_789, None], pa.timestamp("ns", tz="UTC")))
    with pytest.raises(
        SchemaMismatch, match=r"column 'at' has a value with nanoseconds \(2023-11-14 22:13:20\.123456789"
    ):
        publish(publisher, diagnostic, later, lossy)
    assert diagnostic.diagnose(later).state is State.NOTHING_IN_FLIGHT
    assert pg.query(f'SELECT count(*) FROM "{pg.schema}".items') == [(3,)]


def test_unsigned_integers_are_published_in_a_column_that_holds_them(pg):
    """uint32 and uint64 columns had "no Postgres column type": a uint32 is a bigint, a uint64 (above
    bigint's range) a numeric(20,0), every value exact."""
    publisher, diagnostic = pg.make()
    data = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "v": pa.array(["a", "b"]),
            "part": pa.array(["p", "p"]),
            "u32": pa.array([2**32 - 1, None], pa.uint32()),
            "u64": pa.array([2**64 - 1, 0], pa.uint64()),
        }
    )
    assert publish(publisher, diagnostic, Run.new("items", DATE), data).receipt is not None
    assert pg.query(f'SELECT u32, u64::text FROM "{pg.schema}".items ORDER BY id') == [
        (2**32 - 1, str(2**64 - 1)),
        (None, "0"),
    ]
    # and a later run fits the columns the first one made
    assert publish(publisher, diagnostic, Run.new("items", "2026-04-25"), data).receipt is not None
