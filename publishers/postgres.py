"""The Postgres sink: bulk-load into a per-attempt staging table, then ONE transaction that MERGEs
into the target, writes a ledger row and drops the staging table.

Where things live (all names composed with ``psycopg.sql.Identifier``, never formatted)::

    <schema>.<table>                 the target, created from the Arrow schema if missing
    <schema>.<ledger_table>          one row per published run_id: the published evidence
    <staging_schema>._ap_stg_<dataset hash>_<yyyymmdd>_<attempt>   UNLOGGED staging of one attempt

The run lock is a session advisory lock keyed by the run_id, held by the attempt's own connection
(``application_name`` names the attempt), so a live attempt shows in ``pg_locks`` and a dead one's
lock vanishes with its connection.

What a crash leaves, and what the diagnosis says:
- before the staging table exists: nothing (NOTHING_IN_FLIGHT);
- staging table created/loaded, commit not done: the staging table (ORPHANED);
- anywhere inside the commit transaction: Postgres rolls it back; the staging table (ORPHANED);
- after COMMIT: ledger row, target rows, no staging (DONE).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from ._arrow import IpcHasher, as_microseconds, decode_dictionaries
from ._crash import crash_point
from ._errors import (
    AlreadyPublished,
    CommitAborted,
    CommitOutcomeUnknown,
    CommitRejected,
    DataRejected,
    DestinationUnavailable,
    InputError,
    LostRace,
    Terminated,
    first_line,
)
from ._protocol import ProgressCallback
from ._types import Receipt, Run, Staged, check_parts, combine_checksums
from .layouts.postgres import (
    CAPABILITIES,
    LOCK_NAMESPACE,
    PostgresLayout,
    PostgresSinkConfig,
    _cancelled,
    _own_error_in_chain,
    _StallWatchdog,
    acquire_run_lock,
    adbc_uri,
    application_name,
    attempt_table_prefix,
    check_schema,
    connect,
    connection_params,
    create_schema,
    deadline,
    describe_server,
    ensure_ledger,
    open_sockets,
    opened_since,
    pg_type,
    redact,
    refused,
    staging_table_name,
    target_columns,
)

log = logging.getLogger("atomic_publish.postgres")


class PostgresPublisher:
    sink_name = "postgres"
    capabilities = CAPABILITIES

    def __init__(self, config: PostgresSinkConfig) -> None:
        self.config = config
        self.layout = PostgresLayout(config)
        self._lock_conn: Any = None
        self._lock_socket = -1
        self._opening: _OpeningLoad | None = None

    def _connect(self, run: Run) -> Any:
        return connect(self.config, application_name(run.attempt), autocommit=True)

    def _adbc_uri(self, run: Run) -> str:
        return adbc_uri(self.config.conninfo, connection_params(self.config, application_name(run.attempt)))

    @contextlib.contextmanager
    def run_lock(self, run: Run) -> Iterator[None]:
        # The bulk load's connection opens meanwhile (see _OpeningLoad): it is the first load's.
        self._opening = _OpeningLoad(self._adbc_uri(run), run.attempt, self.config.timeout_seconds)
        try:
            conn = self._connect(run)
            try:
                acquire_run_lock(conn, self.layout.lock_key(run.run_id), run.run_id, self.config.timeout_seconds)
                self._lock_conn, self._lock_socket = conn, conn.pgconn.socket
                yield
            finally:
                self._lock_conn, self._lock_socket = None, -1
                with contextlib.suppress(Exception):
                    conn.close()  # closing the session releases the advisory lock
        finally:
            opening, self._opening = self._opening, None
            if opening is not None:
                opening.abandon()

    def check_schema(self, schema: pa.Schema) -> None:
        """Before the lock: what no Postgres table could take whatever the target holds (column
        names and count, the configured key and partition columns present)."""
        check_schema(schema, None, self.config, f"sink {self.sink_name}")

    def stage(
        self,
        run: Run,
        batches: pa.RecordBatchReader,
        *,
        progress: ProgressCallback | None = None,
        part: int = 0,
        token: str = "",
    ) -> Staged:
        import psycopg
        from psycopg import sql

        layout = self.layout
        table = layout.table_name(run.dataset)
        staging = layout.staging(run, part, token)
        batches = decode_dictionaries(batches)  # the COPY takes none; the column holds the values
        batches = as_microseconds(batches, "Postgres")  # the COPY would drop nanoseconds silently
        name = staging_table_name(run, part, token)
        conn = self._connect(run)
        try:
            existing = target_columns(conn, layout.schema, table)
            check_schema(batches.schema, existing, self.config, layout.describe(run.dataset))
            columns = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(pg_type(f.type))) for f in batches.schema
            )
            comment = json.dumps(
                {
                    "run_id": run.run_id,
                    "attempt": run.attempt,
                    "pid": os.getpid(),
                    "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
            )
            with conn.transaction():
                quoted = sql.Identifier(layout.staging_schema).as_string(conn)
                if conn.execute("SELECT to_regnamespace(%s)", (quoted,)).fetchone()[0] is None:
                    # Workers staging parts at once would race on the schema's catalog row: the
                    # first publish into a schema serialises its creators (a transaction lock).
                    conn.execute("SELECT pg_advisory_xact_lock(%s, 1)", (LOCK_NAMESPACE,))
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(layout.staging_schema))
                    )
                # UNLOGGED: no WAL for data that is thrown away after the MERGE; a regular table (not
                # TEMP) so it outlives this session, which lets separate workers stage parts. When
                # there is no target yet, the staging of a run in one part may become the target
                # (see _adopt): then it is logged, like any table that keeps its data.
                may_become_target = existing is None and not part and not token
                create = "CREATE TABLE {} ({})" if may_become_target else "CREATE UNLOGGED TABLE {} ({})"
                conn.execute(sql.SQL(create).format(staging, columns))
                conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(staging, sql.Literal(comment)))
        except psycopg.OperationalError as exc:
            raise refused(exc, f"{describe_server(self.config)} failed while creating the staging table") from None
        except psycopg.Error as exc:
            raise refused(exc, f"{describe_server(self.config)} refused the staging table") from None
        finally:
            with contextlib.suppress(Exception):
                conn.close()

        hasher = IpcHasher(batches.schema)
        counter = {"rows": 0, "bytes": 0, "first": True}
        # An error raised by the records themselves (bad input, a signal) reaches ADBC's C code, which
        # reports it as its own error: kept here so it is raised as what it is.
        source_error: list[BaseException] = []

        def counted() -> Iterator[pa.RecordBatch]:
            try:
                for batch in batches:
                    hasher.add(batch)
                    counter["rows"] += batch.num_rows
                    counter["bytes"] += batch.nbytes
                    if progress:
                        progress(counter["rows"], counter["bytes"])
                    yield batch
                    if counter["first"]:
                        counter["first"] = False
                        crash_point("mid_stage")
            except BaseException as exc:
                source_error.append(exc)
                raise

        try:
            self._bulk_load(run, name, pa.RecordBatchReader.from_batches(batches.schema, counted()), source_error)
            # Fresh statistics let the MERGE plan a hash join instead of guessing the staging size:
            # the row count and the key columns are what the join needs (the other columns' were
            # 60-70% of the ANALYZE's time). A staging that becomes the target (_adopt) gets the
            # same: an ANALYZE of some columns leaves the table's count of changed rows as it was,
            # so autovacuum analyzes every column within autovacuum_naptime (a full ANALYZE here
            # was 0.19 s of a 1.2 s first publish of 350k rows; docs/decisions.md).
            keys = sql.SQL(", ").join(map(sql.Identifier, self.config.key_columns))
            with self._connect(run) as conn:
                conn.execute(sql.SQL("ANALYZE {} ({})").format(staging, keys))
        except psycopg.OperationalError as exc:
            self._drop_tables(run, [name])
            raise refused(exc, f"{describe_server(self.config)} failed while staging") from None
        except BaseException:
            self._drop_tables(run, [name])
            raise
        checksum = hasher.hexdigest()
        crash_point("after_stage")
        return Staged(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=run.attempt,
            location=f"{layout.staging_schema}.{name}",
            rows=counter["rows"],
            bytes=counter["bytes"],
            checksum=f"sha256:{checksum}",
            details={"staging_table": name, "staging_schema": layout.staging_schema},
            part=part,
            token=token,
        )

    def _bulk_load(self, run: Run, table: str, reader: pa.RecordBatchReader, source_error: list[BaseException]) -> None:
        """Arrow straight into the staging table with binary COPY (ADBC): measured 2.9x faster than
        streaming pyarrow-encoded CSV through psycopg's COPY."""
        watchdog = _StallWatchdog(self.config.timeout_seconds)
        opening, self._opening = self._opening, None
        try:
            # Every other connection of this publish is closed now, but the lock's session.
            taken = opening.take(besides={self._lock_socket}) if opening and opening.attempt == run.attempt else None
            if taken is not None:
                guarded = watchdog.guarding(*taken)
            else:
                uri = self._adbc_uri(run)
                guarded = watchdog.sockets_opened_by(lambda: _AdbcLoad(uri))
            with guarded as conn, watchdog:
                conn.append(self.layout.staging_schema, table, watchdog.watch(reader))
        except Exception as exc:
            if source_error:
                raise source_error[0] from None
            if watchdog.expired:
                raise DestinationUnavailable(
                    f"bulk load into staging on {describe_server(self.config)}: no progress and no answer for "
                    f"{self.config.timeout_seconds:g} s (timeout_seconds); the connection was closed"
                ) from None
            own = _own_error_in_chain(exc)
            if own is not None:
                raise own from None
            if _cancelled(exc):
                # During a bulk load ADBC handles Ctrl-C itself (it cancels the COPY, and Python's
                # handler never runs): the CANCELLED it reports is the user's SIGINT, not a fault.
                raise Terminated("received SIGINT; stopped before the commit point", signal.SIGINT) from None
            if str(getattr(exc, "sqlstate", None) or "").startswith("22"):
                # A data exception: a value the server cannot hold (a NUL in text, a date out of its
                # range). Input to fix, not a server to wait for (found from outside: exit 5).
                raise DataRejected(
                    f"{describe_server(self.config)} refused a value of the input: {redact(first_line(exc))}"
                ) from None
            raise refused(exc, f"bulk load into staging on {describe_server(self.config)} failed") from None
        finally:
            if opening is not None:
                opening.abandon()  # if a signal came while it opened: closed once it opens

    def _drop_tables(self, run: Run, names: Sequence[str]) -> None:
        from psycopg import sql

        with contextlib.suppress(Exception), self._connect(run) as conn:
            for name in names:
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.layout.staging_schema, name))
                )

    def commit(self, run: Run, staged: Sequence[Staged]) -> Receipt:
        """One transaction: MERGE, ledger row, DROP of the staging, COMMIT. Bounded from the client
        side by ``commit_timeout_seconds`` (``deadline``). Before COMMIT is sent, any failure is a
        proven rejection (a transaction never commits without COMMIT); after it, only the server's
        answer proves anything, and no answer is CommitOutcomeUnknown."""
        import psycopg
        from psycopg import errors, sql

        check_parts(run, staged)
        layout = self.layout
        target = layout.target(run.dataset)
        parts = sorted(staged, key=lambda p: p.part)
        # The commit runs on the session that holds the run's advisory lock: the transaction-level
        # lock below is then re-entrant instead of waiting for our own session lock forever.
        owned = self._lock_conn is None
        conn = self._connect(run) if owned else self._lock_conn

        def rollback_and_release() -> None:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            if owned:
                with contextlib.suppress(Exception):
                    conn.close()

        rows = sum(part.rows for part in staged)
        checksum = combine_checksums(staged)
        server = describe_server(self.config)
        with deadline(conn, self.config.commit_timeout_seconds) as timer:
            try:
                cur = conn.cursor()
                cur.execute("BEGIN")
                # Serialises commits of the same run even if the session lock was bypassed.
                cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", layout.lock_key(run.run_id))
                self._refuse_if_in_ledger(cur, run)
                source = self._source(parts, cur)
                adopted = self._adopt(cur, run, parts)
                if not adopted:
                    self._create_target(cur, run, like=layout.staged_table(parts[0]))
                    self._merge(cur, target, source, parts)
                ensure_ledger(cur, layout)
                self._refuse_if_in_ledger(cur, run)  # a ledger created meanwhile by another run's commit
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (run_id, dataset, run_date, attempt, rows, checksum, target, published_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, clock_timestamp()) RETURNING published_at"
                    ).format(layout.ledger()),
                    (run.run_id, run.dataset, run.run_date, run.attempt, rows, checksum, layout.describe(run.dataset)),
                )
                published_at = cur.fetchone()[0]
                # What the run weighs in the database (its staging tables, as loaded), for the receipt.
                stored = 0
                if adopted:
                    cur.execute("SELECT pg_total_relation_size(%s::regclass)", (target.as_string(cur),))
                    stored = int(cur.fetchone()[0])
                for part in parts if not adopted else ():
                    table = layout.staged_table(part)
                    cur.execute("SELECT pg_total_relation_size(%s::regclass)", (table.as_string(cur),))
                    stored += int(cur.fetchone()[0])
                    cur.execute(sql.SQL("DROP TABLE {}").format(table))
                crash_point("before_commit")
            except AlreadyPublished as exc:
                rollback_and_release()
                raise LostRace(str(exc)) from None
            except CommitRejected:
                rollback_and_release()
                raise
            except InputError as exc:
                # Found inside the transaction before COMMIT (duplicate keys): refused, nothing landed.
                rollback_and_release()
                raise DataRejected(str(exc)) from None
            except errors.UniqueViolation as exc:
                rollback_and_release()
                if exc.diag.table_name == self.config.ledger_table:
                    raise LostRace(
                        f"another attempt of {run.run_id} committed first: {redact(first_line(exc))}"
                    ) from None
                # MERGE in Postgres 15 is not a safe upsert under concurrency: the loser of two inserts
                # of the same new key gets a unique violation. Nothing of it is visible; try again.
                raise CommitAborted(
                    f"a concurrent transaction inserted the same key into {layout.describe(run.dataset)} "
                    f"({redact(first_line(exc))}); nothing of {run.run_id} was published: re-run"
                ) from None
            except (errors.IntegrityError, errors.DataError) as exc:
                rollback_and_release()
                raise DataRejected(
                    f"{layout.describe(run.dataset)} refused the data of {run.run_id}: {redact(first_line(exc))}"
                ) from None
            except psycopg.OperationalError as exc:
                rollback_and_release()
                # COMMIT was never sent: the server rolls the transaction back (or already did).
                why = f"no answer within {self.config.commit_timeout_seconds:g} s" if timer["expired"] else None
                raise CommitAborted(
                    f"{server} failed before COMMIT of {run.run_id} ({why or redact(first_line(exc))}); "
                    "not published: run `atomic-publish diagnose`, then re-run"
                ) from None
            except psycopg.Error as exc:
                rollback_and_release()
                raise refused(exc, f"commit of {run.run_id} refused by {server}", at_commit=True) from None
            try:
                # The comment names the run in pg_stat_activity while the COMMIT is in flight.
                conn.execute(
                    sql.SQL("COMMIT /* atomic-publish {} {} */").format(sql.SQL(run.run_id), sql.SQL(run.attempt))
                )
            except psycopg.OperationalError as exc:
                why = (
                    f"no answer to COMMIT within {self.config.commit_timeout_seconds:g} s"
                    if timer["expired"]
                    else f"the connection broke while COMMIT was in flight ({redact(first_line(exc))})"
                )
                raise CommitOutcomeUnknown(
                    f"{server}: {why}; whether {run.run_id} landed is unknown: run `atomic-publish diagnose` "
                    "(the ledger settles it)"
                ) from None
            except psycopg.Error as exc:
                # The server answered COMMIT with an error: it rolled the transaction back.
                raise CommitRejected(f"COMMIT of {run.run_id} refused by {server}: {redact(first_line(exc))}") from None
            finally:
                if owned:
                    with contextlib.suppress(Exception):
                        conn.close()
        crash_point("after_commit")
        return Receipt(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=run.attempt,
            location=layout.describe(run.dataset),
            rows=rows,
            bytes=stored,
            checksum=checksum,
            published_at=published_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
            details={"ledger": f"{layout.schema}.{self.config.ledger_table}"},
        )

    def _refuse_if_in_ledger(self, cur: Any, run: Run) -> None:
        from psycopg import sql

        if cur.execute("SELECT to_regclass(%s)", (self.layout.ledger().as_string(cur),)).fetchone()[0] is None:
            return
        winner = cur.execute(
            sql.SQL("SELECT attempt FROM {} WHERE run_id = %s").format(self.layout.ledger()), (run.run_id,)
        ).fetchone()
        if winner:
            raise AlreadyPublished(f"run {run.run_id} is already in the ledger (attempt {winner[0]})")

    def _source(self, parts: list[Staged], cur: Any) -> Any:
        """The rows of every part: its staging table, or their UNION ALL."""
        from psycopg import sql

        for part in parts:
            name = part.details["staging_table"]
            found = cur.execute(
                "SELECT c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s",
                (self.layout.staging_schema, name),
            ).fetchone()
            if not found:
                raise CommitRejected(f"staging table {name} does not exist")
            if found[0] == "u":
                # An UNLOGGED table is emptied when the server recovers from a crash (or a standby is
                # promoted): a part staged before that, committed after it (a group rolled forward, a
                # driver committing its tasks' parts), would publish nothing. Found from outside.
                held = cur.execute(sql.SQL("SELECT count(*) FROM {}").format(self.layout.staged_table(part)))
                rows = held.fetchone()[0]
                if rows != part.rows:
                    raise CommitRejected(
                        f"staging table {name} holds {rows} rows, {part.rows} were staged (an UNLOGGED table is "
                        "emptied when the server recovers from a crash); nothing was committed: stage the run again"
                    )
        if len(parts) == 1:
            return self.layout.staged_table(parts[0])
        return sql.SQL("({})").format(
            sql.SQL(" UNION ALL ").join(sql.SQL("SELECT * FROM {}").format(self.layout.staged_table(p)) for p in parts)
        )

    def _adopt(self, cur: Any, run: Run, parts: list[Staged]) -> bool:
        """The first run into a table that does not exist yet: its staging table (logged, made so by
        ``stage`` for this case) becomes the target, inside the commit transaction: moved into the
        target's schema, renamed, its primary key built in one sorted pass. Measured against loading
        the staging a second time with MERGE: about half the time of a first publish. A duplicate
        key fails the primary key: refused as the MERGE path refuses it. False (the MERGE path) when
        the target exists, or the run came in several parts, or the staging is unlogged."""
        from psycopg import errors, sql

        if len(parts) != 1 or parts[0].part or parts[0].token:
            return False
        layout = self.layout
        if cur.execute("SELECT to_regclass(%s)", (layout.target(run.dataset).as_string(cur),)).fetchone()[0]:
            return False
        staged = layout.staged_table(parts[0])
        persistence = cur.execute(
            "SELECT relpersistence FROM pg_class WHERE oid = %s::regclass", (staged.as_string(cur),)
        )
        if persistence.fetchone()[0] != "p":
            return False
        name = parts[0].details["staging_table"]
        create_schema(cur, layout.schema)
        if layout.staging_schema != layout.schema:
            cur.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(staged, sql.Identifier(layout.schema)))
        moved = sql.Identifier(layout.schema, name)
        cur.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(moved, sql.Identifier(layout.table_name(run.dataset)))
        )
        target = layout.target(run.dataset)
        cur.execute(sql.SQL("COMMENT ON TABLE {} IS NULL").format(target))
        keys = sql.SQL(", ").join(map(sql.Identifier, self.config.key_columns))
        cur.execute("SAVEPOINT ap_key")
        try:
            cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(target, keys))
        except errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT ap_key")
            self._check_duplicates(cur, target)  # names a few of them
            raise  # not reached: the key failed, so there are duplicates
        return True

    def _create_target(self, cur: Any, run: Run, like: Any) -> None:
        from psycopg import sql

        # The target takes the staging table's columns (made from the Arrow schema) and the key.
        create_schema(cur, self.layout.schema)
        cur.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE {}, PRIMARY KEY ({}))").format(
                self.layout.target(run.dataset),
                like,
                sql.SQL(", ").join(map(sql.Identifier, self.config.key_columns)),
            )
        )

    def _check_duplicates(self, cur: Any, source: Any) -> None:
        from psycopg import sql

        keys = sql.SQL(", ").join(map(sql.Identifier, self.config.key_columns))
        dup = cur.execute(
            sql.SQL("SELECT {k}, count(*) FROM {s} AS s GROUP BY {k} HAVING count(*) > 1 LIMIT 3").format(
                k=keys, s=source
            )
        ).fetchall()
        if dup:
            sample = ", ".join(str(row[:-1] if len(row) > 2 else row[0]) for row in dup)
            raise InputError(
                f"the data has duplicate values of the key {list(self.config.key_columns)} (e.g. {sample}); "
                "a MERGE cannot apply two rows to one key"
            )

    def _merge(self, cur: Any, target: Any, source: Any, parts: list[Staged]) -> None:
        """Apply the staged rows to an existing target, in one of two shapes chosen from what the
        staging shows (``_rewrite_matched``): MERGE, or DELETE of the matched keys + INSERT of every
        staged row when most matched rows change. Duplicate keys in the data are refused (InputError)
        either way: by a GROUP BY before, or, when the target has a unique index on the key (it
        always does when this sink made it), by that index, then named by the same GROUP BY."""
        from psycopg import errors, sql

        first = parts[0]
        # The staged columns (made from the Arrow schema) are what the run writes; a target that
        # has more columns keeps its other values.
        cols = list(target_columns(cur, self.layout.staging_schema, first.details["staging_table"]) or {})
        keys = list(self.config.key_columns)
        on = sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(k)) for k in keys)
        non_keys = [c for c in cols if c not in keys]
        unique_key = self._key_is_unique(cur, target, keys)
        if not unique_key:
            self._check_duplicates(cur, source)
        column_list = sql.SQL(", ").join(map(sql.Identifier, cols))
        # A matched row that the run changes (None: no column besides the key, nothing can change).
        differs = (
            sql.SQL("({}) IS DISTINCT FROM ({})").format(
                sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in non_keys),
                sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in non_keys),
            )
            if non_keys
            else None
        )
        cur.execute("SAVEPOINT ap_merge")
        try:
            if len(parts) == 1 and self._rewrite_matched(cur, target, self.layout.staged_table(first), on, differs):
                cur.execute(sql.SQL("DELETE FROM {t} AS t USING {s} AS s WHERE {on}").format(t=target, s=source, on=on))
                cur.execute(
                    sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} AS s").format(
                        t=target, s=source, cols=column_list
                    )
                )
            else:
                # Rows whose values did not change are not rewritten: no dead tuple, no WAL, no index
                # churn for the (usual) re-publish where most rows are the same.
                matched = (
                    sql.SQL("WHEN MATCHED AND {differs} THEN UPDATE SET {sets}").format(
                        differs=differs,
                        sets=sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in non_keys),
                    )
                    if differs is not None
                    else sql.SQL("WHEN MATCHED THEN DO NOTHING")
                )
                cur.execute(
                    sql.SQL(
                        "MERGE INTO {t} AS t USING {s} AS s ON {on} {matched}"
                        " WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals})"
                    ).format(
                        t=target,
                        s=source,
                        on=on,
                        matched=matched,
                        cols=column_list,
                        vals=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in cols),
                    )
                )
        except (errors.UniqueViolation, errors.CardinalityViolation):
            # Two staged rows with one key (MERGE: "cannot affect row a second time"; an insert:
            # the unique index), or another transaction's insert of the same new key: the GROUP BY
            # tells which, and names the duplicates.
            if not unique_key:
                raise
            cur.execute("ROLLBACK TO SAVEPOINT ap_merge")
            self._check_duplicates(cur, source)
            raise
        part = self.config.replace_partition_column
        if part:
            cur.execute(
                sql.SQL(
                    "DELETE FROM {t} AS t WHERE t.{p} IN (SELECT DISTINCT s.{p} FROM {s} AS s)"
                    " AND NOT EXISTS (SELECT 1 FROM {s} AS s WHERE {on})"
                ).format(t=target, s=source, p=sql.Identifier(part), on=on)
            )

    @staticmethod
    def _key_is_unique(cur: Any, target: Any, keys: list[str]) -> bool:
        """The target has a unique index (or primary key) on exactly the key columns."""
        return bool(
            cur.execute(
                "SELECT 1 FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indpred IS NULL"
                " AND i.indexprs IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a"
                " WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = %s::text[]",
                (target.as_string(cur), sorted(keys)),
            ).fetchone()
        )

    def _rewrite_matched(self, cur: Any, target: Any, staged: Any, on: Any, differs: Any) -> bool:
        """Whether DELETE + INSERT beats MERGE: when most of the staged rows that match a target row
        change it (measured on the same server, 1M rows all changed: MERGE 5.0 s, DELETE + INSERT
        3.5 s; with few changes MERGE rewrites only those, DELETE + INSERT all of them). Estimated
        from a 1% sample of the staging's pages (a big staging only: below 100,000 rows either shape
        is quick). Only where a DELETE does nothing but delete: the target has no column beyond the
        staged ones (MERGE keeps their values), no trigger of its own, and no foreign key points at it."""
        from psycopg import sql

        rows = cur.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (staged.as_string(cur),))
        if differs is None or (rows.fetchone()[0] or 0) < 100_000:
            return False
        name = target.as_string(cur)
        plain = cur.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal)"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE confrelid = %s::regclass AND contype = 'f')"
            " AND (SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped) = (SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attnum > 0 AND NOT attisdropped)",
            (name, name, name, staged.as_string(cur)),
        ).fetchone()[0]
        if not plain:
            return False
        first_key = sql.Identifier(self.config.key_columns[0])
        matched, changed = cur.execute(
            sql.SQL(
                "SELECT count(t.{k}), count(*) FILTER (WHERE {differs})"
                " FROM (SELECT * FROM {s} TABLESAMPLE SYSTEM (1) REPEATABLE (0)) AS s JOIN {t} AS t ON {on}"
            ).format(k=first_key, differs=differs, s=staged, t=target, on=on)
        ).fetchone()
        log.debug("postgres: %s of %s sampled matched rows change", changed, matched)
        return bool(matched) and changed * 2 > matched

    def discard(self, run: Run, staged: Sequence[Staged]) -> None:
        """Drop every staging table of this attempt (all its parts, found by name) and of the
        attempts the given parts name."""
        with contextlib.suppress(Exception), self._connect(run) as conn:
            for attempt in sorted({run.attempt} | {s.attempt for s in staged}):
                prefix = attempt_table_prefix(Run(run.dataset, run.run_date, attempt))
                names = [
                    row[0]
                    for row in conn.execute(
                        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(c.relname, %s)",
                        (self.layout.staging_schema, prefix),
                    ).fetchall()
                ]
                self._drop_tables(run, names)


class _OpeningLoad:
    """The bulk load's ADBC connection, opened on a thread from the moment the run's lock is asked
    for, while this process imports psycopg, takes the lock and checks the run under it. ADBC's
    database init (a round trip that loads the server's type catalog, ~60 ms of every publish) waits
    with the GIL released, so it costs nothing there (measured: docs/performance.md). Nothing is
    written through it before the load, and an idle session holds no lock that a diagnosis reads.

    Its sockets, which the load's stall watchdog shuts down, are the ones opened since it started
    and still open when the load takes it, but the lock's session (``besides``): by then every other
    connection of the publish is closed. ``abandon`` (the lock released without a load) closes it, or
    has the thread close it when it opens: a signal never waits on a connect. Not taken within
    ``keep_seconds`` of opening, the thread closes it: a process that holds the lock and loads
    nothing itself (a Spark job's holder, a group's roll-forward) keeps no idle session for the
    run's length, and a load that starts later opens its own (``take`` gives None)."""

    def __init__(self, uri: str, attempt: str, keep_seconds: float) -> None:
        self.attempt = attempt
        self._uri = uri
        self._keep_seconds = keep_seconds
        self._before = open_sockets()
        self._guard = threading.Lock()
        self._conn: _AdbcLoad | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._settled = threading.Event()  # the connection opened or failed
        self._detached = threading.Event()  # taken or abandoned
        self._thread = threading.Thread(target=self._open, name="adbc-connect", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        try:
            conn = _AdbcLoad(self._uri)
        except BaseException as exc:  # raised by take(), in the thread that loads
            self._error = exc
            self._settled.set()
            return
        with self._guard:
            kept = not self._abandoned
            if kept:
                self._conn = conn
        self._settled.set()
        if not kept:
            conn.__exit__(None, None, None)
        elif not self._detached.wait(self._keep_seconds):
            self.abandon()

    def _detach(self) -> _AdbcLoad | None:
        """The connection if it has opened (then it is the caller's), and from now on the thread
        closes what it opens."""
        with self._guard:
            self._abandoned = True
            conn, self._conn = self._conn, None
        self._detached.set()
        return conn

    def take(self, *, besides: set[int]) -> tuple[_AdbcLoad, set[int]] | None:
        """The open connection and its sockets, once it has opened (its error, if it failed);
        None if it was closed unused (``keep_seconds``)."""
        self._settled.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        conn = self._detach()
        if conn is None:
            return None
        return conn, opened_since(self._before) - besides

    def abandon(self) -> None:
        conn = self._detach()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.__exit__(None, None, None)


class _AdbcLoad:
    """One ADBC connection for a bulk load, through ADBC's own API (``adbc_driver_manager``), not
    its DB-API module: that one imports ``pyarrow.dataset``, which imports pandas (0.3 s of every
    Postgres publish, measured 2026-12-04). The connection is in autocommit mode (ADBC's default):
    the load is one COPY, its own transaction, as the DB-API's ``adbc_ingest`` + ``commit`` was."""

    def __init__(self, uri: str) -> None:
        import adbc_driver_manager as adbc
        import adbc_driver_postgresql

        self._db = adbc_driver_postgresql.connect(uri)
        try:
            self._conn = adbc.AdbcConnection(self._db)
        except BaseException:
            self._db.close()
            raise

    def __enter__(self) -> _AdbcLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.close()
        finally:
            self._db.close()

    def append(self, schema: str, table: str, reader: pa.RecordBatchReader) -> None:
        """Binary COPY of ``reader`` into the existing ``schema.table``. While it
        runs, Ctrl-C cancels the COPY (ADBC's own handling, as its DB-API does)."""
        import adbc_driver_manager as adbc
        from adbc_driver_manager._lib import _blocking_call

        with adbc.AdbcStatement(self._conn) as statement:
            statement.set_options(
                **{
                    adbc.StatementOptions.INGEST_TARGET_TABLE.value: table,
                    adbc.StatementOptions.INGEST_TARGET_DB_SCHEMA.value: schema,
                    adbc.INGEST_OPTION_MODE: adbc.INGEST_OPTION_MODE_APPEND,
                }
            )
            stream = adbc.ArrowArrayStreamHandle()
            reader._export_to_c(stream.address)
            statement.bind_stream(stream)
            _blocking_call(statement.execute_update, (), {}, statement.cancel)
