"""A sixth sink, written only against the public SDK (``atomic_publish.sdk``): a SQLite database file.

- **stage**: each part becomes a staging table ``_ap_stg/<dataset>/<run date>/<attempt>/<part>``,
  created and filled in one transaction (it exists complete or not at all);
- **commit**: one transaction inserts every staged part into the ``<dataset>`` table, writes the
  run's row in the ledger ``_ap_ledger`` (its primary key is the run: a second attempt loses) and
  drops the staging tables. The ledger row is the commit record;
- **run lock**: an flock on ``<database>.locks/<dataset>.<run date>.lock``, held only by a live
  process, so a crashed attempt's staging is an orphan the moment it dies;
- **fence**: none needed: a commit checks its staging tables inside its own transaction, so once
  ``recover`` has dropped them (under the run lock) a late commit finds nothing and is refused.

Use it with ``type = "sqlite_sink:SINK"`` (this folder on PYTHONPATH) and ``path = "<file>"``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from atomic_publish.sdk import (
    Artifact,
    AttemptInfo,
    Capabilities,
    CommitOutcomeUnknown,
    CommitRejected,
    DestinationUnavailable,
    Evidence,
    Gone,
    LostRace,
    ProgressCallback,
    Receipt,
    Run,
    SinkDefinition,
    SinkDiagnostic,
    SinkOptions,
    Staged,
    check_parts,
    combine_checksums,
    crash_point,
    hold_flock,
    part_suffix,
    probe_flock,
)

STAGING = "_ap_stg"
LEDGER = "_ap_ledger"
CAPABILITIES = Capabilities(max_parts=None)


class SqliteSinkConfig(SinkOptions):
    """Options of a SQLite sink."""

    type: Literal["sqlite"] = "sqlite"
    path: str


def quote(name: str) -> str:
    """An SQL identifier, whatever it contains (SQLite has no bound parameters for names)."""
    return '"' + name.replace('"', '""') + '"'


def sql(template: str, *names: str) -> str:
    """SQL composed from parts: each ``{}`` of ``template`` becomes a quoted identifier (values are
    always bound parameters, never text)."""
    return template.format(*(quote(name) for name in names))


def _exists(conn: sqlite3.Connection, table: str) -> bool:
    return int(conn.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]) > 0


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(sql("SELECT count(*) FROM {}", table)).fetchone()[0])


def staging_name(run: Run, part: int, token: str) -> str:
    return "/".join([STAGING, run.dataset, run.run_date.isoformat(), run.attempt, part_suffix(part, token) or "p"])


def parse_staging(name: str) -> tuple[str, str, str] | None:
    """(dataset, run date, attempt) of a staging table's name, or None for any other table."""
    fields = name.split("/")
    return (fields[1], fields[2], fields[3]) if len(fields) == 5 and fields[0] == STAGING else None


def _attempt_time(attempt: str) -> dt.datetime:
    return dt.datetime.strptime(attempt.split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


class _Database:
    """What the publisher and the diagnostic share: the file, its connections and the run lock."""

    def __init__(self, config: SqliteSinkConfig) -> None:
        self.config = config
        self.path = Path(config.path)

    def connect(self) -> sqlite3.Connection:
        if not self.path.exists():  # never create a database where the configuration points by mistake
            raise DestinationUnavailable(f"no SQLite database at {self.path}")
        try:
            conn = sqlite3.connect(self.path, timeout=self.config.timeout_seconds, isolation_level=None)
        except sqlite3.Error as exc:
            raise DestinationUnavailable(f"cannot open {self.path}: {exc}") from exc
        return conn

    def lock_path(self, run: Run) -> Path:
        return self.path.with_name(self.path.name + ".locks") / f"{run.dataset}.{run.run_date.isoformat()}.lock"

    def run_lock(self, run: Run) -> contextlib.AbstractContextManager[None]:
        return hold_flock(self.lock_path(run), AttemptInfo.current(run.attempt), run.run_id)

    def staging_tables(self, conn: sqlite3.Connection, dataset: str) -> list[tuple[str, str, str]]:
        """(table, run date, attempt) of every staging table of ``dataset``."""
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [(n, p[1], p[2]) for n in names if (p := parse_staging(n)) and p[0] == dataset]


def _sqlite_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
        return "INTEGER"
    if pa.types.is_floating(arrow_type):
        return "REAL"
    return "BLOB" if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) else "TEXT"


def _rows(batch: pa.RecordBatch) -> Iterator[tuple[Any, ...]]:
    """The batch's rows as SQLite values: temporal and decimal columns as their ISO text."""
    columns = []
    for column in batch.columns:
        if _sqlite_type(column.type) == "TEXT" and not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        columns.append(column.to_pylist())
    return zip(*columns, strict=True)


class SqlitePublisher:
    sink_name = "sqlite"
    capabilities = CAPABILITIES

    def __init__(self, config: SqliteSinkConfig) -> None:
        self.db = _Database(config)

    def run_lock(self, run: Run) -> contextlib.AbstractContextManager[None]:
        return self.db.run_lock(run)

    def stage(
        self,
        run: Run,
        batches: pa.RecordBatchReader,
        *,
        progress: ProgressCallback | None = None,
        part: int = 0,
        token: str = "",
    ) -> Staged:
        name = staging_name(run, part, token)
        types = [_sqlite_type(f.type) for f in batches.schema]
        create = sql("CREATE TABLE {} (" + ", ".join("{} " + t for t in types) + ")", name, *batches.schema.names)
        placeholders = ", ".join("?" * len(types))  # the values are bound, never text
        insert = sql("INSERT INTO {} VALUES (" + placeholders + ")", name)  # noqa: S608
        digest, rows, size = hashlib.sha256(), 0, 0
        conn = self.db.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")  # the table appears complete, or not at all
            conn.execute(create)
            for batch in batches:
                conn.executemany(insert, _rows(batch))
                message = batch.serialize()
                digest.update(message)
                rows, size = rows + batch.num_rows, size + message.size
                if progress is not None:
                    progress(rows, size)
                crash_point("mid_stage")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise DestinationUnavailable(f"staging {name} in {self.db.path} failed: {exc}") from exc
        finally:
            conn.close()  # an open transaction (an error, a signal) is rolled back: nothing is left
        crash_point("after_stage")
        location, checksum = f"{self.db.path}#{name}", f"sha256:{digest.hexdigest()}"
        return Staged(self.sink_name, run.run_id, run.attempt, location, rows, size, checksum, {}, part, token)

    def commit(self, run: Run, staged: Sequence[Staged]) -> Receipt:
        check_parts(run, staged)
        tables = [s.location.partition("#")[2] for s in staged]
        rows, checksum = sum(s.rows for s in staged), combine_checksums(staged)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        conn = self.db.connect()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    sql("CREATE TABLE IF NOT EXISTS {} (run_id TEXT PRIMARY KEY, attempt TEXT NOT NULL, ", LEDGER)
                    + "rows INTEGER NOT NULL, checksum TEXT NOT NULL, published_at TEXT NOT NULL)"
                )
                winner = conn.execute(sql("SELECT attempt FROM {} WHERE run_id = ?", LEDGER), (run.run_id,)).fetchone()
                if winner is not None:
                    raise LostRace(f"run {run.run_id} was published by attempt {winner[0]}")
                for table, part in zip(tables, staged, strict=True):  # each staging is still whole and ours
                    if not _exists(conn, table) or _count(conn, table) != part.rows:
                        raise CommitRejected(f"staging {table} is gone or changed (recover removed it?)")
                conn.execute(sql("CREATE TABLE IF NOT EXISTS {} AS SELECT * FROM {} WHERE 0", run.dataset, tables[0]))
                for table in tables:
                    conn.execute(sql("INSERT INTO {} SELECT * FROM {}", run.dataset, table))
                    conn.execute(sql("DROP TABLE {}", table))
                record = (run.run_id, run.attempt, rows, checksum, now)
                conn.execute(sql("INSERT INTO {} VALUES (?, ?, ?, ?, ?)", LEDGER), record)
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")  # no COMMIT was sent: nothing of it can land
                if isinstance(exc, sqlite3.Error):
                    raise CommitRejected(f"commit of {run.run_id} refused: {exc}") from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise CommitOutcomeUnknown(f"COMMIT of {run.run_id} failed: {exc}; run diagnose") from exc
        finally:
            conn.close()
        crash_point("after_commit")
        size, location = sum(s.bytes for s in staged), f"{self.db.path}#{run.dataset}"
        return Receipt(self.sink_name, run.run_id, run.attempt, location, rows, size, checksum, now)

    def discard(self, run: Run, staged: Sequence[Staged]) -> None:
        conn = self.db.connect()
        try:
            for table, date, attempt in self.db.staging_tables(conn, run.dataset):
                if attempt == run.attempt and date == run.run_date.isoformat():
                    conn.execute(sql("DROP TABLE IF EXISTS {}", table))
        finally:
            conn.close()


class SqliteDiagnostic(SinkDiagnostic):
    sink_name = "sqlite"

    def __init__(self, config: SqliteSinkConfig) -> None:
        self.db = _Database(config)
        self.diagnose_timeout = config.diagnose_timeout_seconds

    def destination(self, run: Run) -> str:
        return str(self.db.path)

    def run_lock(self, run: Run) -> contextlib.AbstractContextManager[None]:
        return self.db.run_lock(run)

    def evidence(self, run: Run) -> Evidence:
        where = str(self.db.path)
        if not self.db.path.exists():
            return Evidence(destination=where, missing=f"no SQLite database at {self.db.path}")
        holder = probe_flock(self.db.lock_path(run))
        conn = self.db.connect()
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")  # one snapshot: the ledger and the staging tables as of one instant
            leftovers = tuple(
                self._staging(conn, table, attempt)
                for table, date, attempt in self.db.staging_tables(conn, run.dataset)
                if date == run.run_date.isoformat()
            )
            if not _exists(conn, LEDGER):
                return Evidence(where, holder=holder, leftovers=leftovers, absent=f"no {LEDGER} table yet")
            query = sql("SELECT attempt, rows, published_at FROM {} WHERE run_id = ?", LEDGER)
            row = conn.execute(query, (run.run_id,)).fetchone()
            # Every row of the table came in with a run the ledger accounts for; anything else is UNKNOWN.
            ledger = sql("SELECT coalesce(sum(rows), 0) FROM {} WHERE substr(run_id, 1, ?) = ?", LEDGER)
            accounted = conn.execute(ledger, (len(run.dataset) + 1, f"{run.dataset}/")).fetchone()[0]
            held = _count(conn, run.dataset) if _exists(conn, run.dataset) else 0
        finally:
            conn.close()
        record = None
        if row is not None:
            at, location = dt.datetime.fromisoformat(row[2]), f"{self.db.path}#{LEDGER}/{run.run_id}"
            record = Artifact("ledger-row", location, None, at, row[0], row[1], f"{row[1]} rows in {run.dataset}")
        problems = (
            () if held == accounted else (f"{run.dataset} holds {held} rows; the ledger accounts for {accounted}",)
        )
        return Evidence(where, record=record, holder=holder, leftovers=leftovers, problems=problems)

    def _staging(self, conn: sqlite3.Connection, table: str, attempt: str) -> Artifact:
        rows, location = _count(conn, table), f"{self.db.path}#{table}"
        return Artifact("staging-table", location, None, _attempt_time(attempt), attempt, rows, identity=(table, rows))

    def recheck(self, diagnosis: Any, artifact: Artifact) -> str | None:
        table, rows = artifact.identity
        conn = self.db.connect()
        try:
            found = _count(conn, table) if _exists(conn, table) else rows  # gone: remove() says so
        finally:
            conn.close()
        return None if found == rows else f"{table} changed since the diagnosis ({rows} -> {found} rows)"

    def remove(self, diagnosis: Any, artifact: Artifact) -> None:
        table = artifact.identity[0]
        conn = self.db.connect()
        try:
            if not _exists(conn, table):
                raise Gone(artifact.location)
            conn.execute(sql("DROP TABLE {}", table))
        finally:
            conn.close()

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        if not self.db.path.exists():
            return []
        conn = self.db.connect()
        try:
            return sorted({dt.date.fromisoformat(date) for _, date, _ in self.db.staging_tables(conn, dataset)})
        finally:
            conn.close()


SINK = SinkDefinition(
    name="sqlite",
    config_model=SqliteSinkConfig,
    make_publisher=SqlitePublisher,
    make_diagnostic=SqliteDiagnostic,
    description="SQLite: staging tables + one transaction that inserts the run and its ledger row",
    capabilities=CAPABILITIES,
)
