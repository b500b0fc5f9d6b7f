"""Evidence of the Postgres sink, from the database alone (``taxonomy.decide`` makes the verdict).

- commit record: the ledger row for the run_id (written in the same transaction as the data);
- leftovers: the run's staging tables (named for the run and the attempt), prepared transactions
  whose global id names the run (``atomic-publish:<run_id>:...``), and zombie sessions: a session of
  the run whose client is dead (on this host: its pid is gone) but which the server keeps, e.g.
  while a network path holds the connection; it may still be holding a COMMIT that was never
  answered;
- holder: a session of the run (its advisory lock, or a lock on its staging) whose client is alive,
  or whose client is on another host (there the server ends it when the connection is found dead,
  or when its transaction idles past ``commit_timeout_seconds``).

Never blocks on a lock: the connection has ``lock_timeout``, and a staging table locked by another
session is reported from the catalog (estimated size, no row count) instead of being read.
``clean`` fences before it removes: it terminates the dead attempts' sessions and waits until they
are gone, so a COMMIT of theirs that arrives late finds no session to commit.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from atomic_publish.publishers._errors import ConfigError, first_line
from atomic_publish.publishers._types import Run
from atomic_publish.publishers.layouts.postgres import (
    APPLICATION_PREFIX,
    PREPARED_PREFIX,
    PostgresLayout,
    PostgresSinkConfig,
    acquire_run_lock,
    application_name,
    client_is_gone,
    connect,
    dataset_hash,
    parse_application_name,
    parse_staging_name,
    refused,
    staging_prefix,
    terminate_backends,
)
from atomic_publish.publishers.taxonomy import Artifact, Diagnosis, Evidence, LockHolder

from .engine import Gone, SinkDiagnostic


class PostgresDiagnostic(SinkDiagnostic):
    sink_name = "postgres"
    removal_order = {"zombie-session": 0, "prepared-transaction": 1, "staging-table": 2}

    def __init__(self, config: PostgresSinkConfig) -> None:
        self.config = config
        self.layout = PostgresLayout(config)
        self.diagnose_timeout = config.diagnose_timeout_seconds

    def destination(self, run: Run) -> str:
        return self.layout.describe(run.dataset)

    # -- evidence -------------------------------------------------------------------------------

    def evidence(self, run: Run) -> Evidence:
        import psycopg

        try:
            with connect(self.config, application_name(run.attempt, "diagnose ")) as conn:
                conn.read_only = True
                staging = self._staging(conn, run.dataset, run.run_date)
                sessions = self._sessions(conn, run, staging)
                staging = [self._describe_staging(conn, art, sessions) for art in staging]
                prepared = self._prepared(conn, run)
                ledger_exists = self._relation_exists(conn, self.layout.ledger())
                ledger = self._ledger_row(conn, run) if ledger_exists else None
                target_exists = self._relation_exists(conn, self.layout.target(run.dataset))
        except psycopg.errors.InsufficientPrivilege as exc:
            # The role cannot read the ledger: the configuration's to fix (exit 2), not a server to
            # wait for (a publish said exit 5, "re-run", forever; found from outside).
            raise refused(exc, f"reading the evidence of {run.run_id} in {self.destination(run)}") from None
        live = [s for s in sessions if not client_is_gone(s["app"])]
        zombies = [self._zombie(s) for s in sessions if client_is_gone(s["app"])]
        holder = None
        if live:
            first = live[0]
            holder = LockHolder(
                attempt=first["attempt"],
                pid=first["pid"],
                host=first["client"],
                started_at=first["since"],
                location=f"backend {first['pid']} ({first['state']}) of {first['app']!r}",
                purpose="recover" if str(first["app"] or "").startswith(f"{APPLICATION_PREFIX}recover ") else None,
            )
        record = None
        problems = []
        if ledger is not None:
            record = Artifact(
                kind="ledger-row",
                location=f"{self.layout.schema}.{self.config.ledger_table}[{run.run_id}]",
                modified_at=ledger["published_at"],
                attempt=ledger["attempt"],
                rows=ledger["rows"],
                detail=f"at {ledger['published_at'].astimezone(dt.UTC).isoformat(timespec='seconds')}: "
                f"{ledger['rows']} rows, {ledger['checksum']}, into {ledger['target']}",
            )
            if ledger["target"] != self.layout.describe(run.dataset):
                problems.append(
                    f"the ledger says {run.run_id} went to {ledger['target']}, not {self.layout.describe(run.dataset)}"
                )
            if not target_exists:
                problems.append(
                    f"the ledger has {run.run_id} but the target {self.layout.describe(run.dataset)} does not exist"
                )
        return Evidence(
            destination=self.layout.describe(run.dataset),
            record=record,
            holder=holder,
            live_attempts=frozenset(s["attempt"] for s in live if s["attempt"]),
            leftovers=(*zombies, *prepared, *staging),
            problems=tuple(problems),
            absent=self._absent(run, target_exists, ledger_exists),
        )

    def _absent(self, run: Run, target_exists: bool, ledger_exists: bool) -> str | None:
        missing = [
            f"the {what} {name}"
            for what, name, exists in (
                ("target", self.layout.describe(run.dataset), target_exists),
                ("ledger", f"{self.layout.schema}.{self.config.ledger_table}", ledger_exists),
            )
            if not exists
        ]
        return " and ".join(missing) + (" do" if len(missing) > 1 else " does") + " not exist yet" if missing else None

    @staticmethod
    def _relation_exists(conn: Any, identifier: Any) -> bool:
        return conn.execute("SELECT to_regclass(%s)", (identifier.as_string(conn),)).fetchone()[0] is not None

    def _sessions(self, conn: Any, run: Run, staging: list[Artifact]) -> list[dict[str, Any]]:
        """Sessions of this run: holders of its advisory lock (session or transaction level) or of a
        lock on one of its staging tables. Never this diagnosis's own session."""
        k1, k2 = self.layout.lock_key(run.run_id)
        oids = [a.identity[1] for a in staging]
        rows = conn.execute(
            "SELECT DISTINCT a.pid, a.application_name, a.backend_start, a.state,"
            " coalesce(host(a.client_addr), 'local')"
            " FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.granted AND a.pid <> pg_backend_pid() AND ("
            "  (l.locktype = 'advisory' AND l.classid = %s::oid AND l.objid = %s::oid)"
            "  OR (l.locktype = 'relation' AND l.relation = ANY(%s::oid[])))"
            " ORDER BY a.backend_start",
            (k1 & 0xFFFFFFFF, k2 & 0xFFFFFFFF, oids),
        ).fetchall()
        sessions = []
        for pid, app, started, state, client in rows:
            attempt, client_pid, host, _ = parse_application_name(app)
            sessions.append(
                {
                    "pid": pid,
                    "app": app,
                    "attempt": attempt,
                    "client_pid": client_pid,
                    "client": f"{host or client} (client pid {client_pid})",
                    "state": state,
                    "since": started.astimezone(dt.UTC).isoformat(timespec="seconds") if started else None,
                    "started": started,
                }
            )
        return sessions

    def _zombie(self, session: dict[str, Any]) -> Artifact:
        return Artifact(
            kind="zombie-session",
            location=f"backend pid {session['pid']}",
            modified_at=session["started"],
            attempt=session["attempt"],
            detail=f"{session['state']}; its client {session['client']} is gone: a COMMIT of it may still be in "
            "flight; recover terminates it before removing anything",
            identity=("session", session["pid"], session["started"]),
        )

    def _staging(self, conn: Any, dataset: str, run_date: dt.date | None) -> list[Artifact]:
        """The run's staging tables, from the catalog only (no lock on the tables themselves)."""
        rows = conn.execute(
            "SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class'), c.relpages::bigint * 8192"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(c.relname, %s) ORDER BY c.relname",
            (self.layout.staging_schema, staging_prefix(dataset, run_date)),
        ).fetchall()
        found = []
        for oid, name, comment, pages in rows:
            parsed = parse_staging_name(name)
            if parsed is None:
                continue
            try:
                meta = json.loads(comment or "{}")
            except ValueError:
                meta = {}
            created = meta.get("created_at")
            found.append(
                Artifact(
                    kind="staging-table",
                    location=f"{self.layout.staging_schema}.{name}",
                    size_bytes=pages,
                    modified_at=dt.datetime.fromisoformat(created) if created else None,
                    attempt=meta.get("attempt") or parsed[2],
                    detail=f"created by pid {meta.get('pid')}" if meta.get("pid") else "",
                    identity=("table", oid, name),
                )
            )
        return found

    def _describe_staging(self, conn: Any, art: Artifact, sessions: list[dict[str, Any]]) -> Artifact:
        """Exact size and row count of a staging table nobody else holds a lock on; one that a
        session holds (a commit in flight) keeps its catalog estimate, and says who holds it."""
        from psycopg import errors, sql

        _, oid, name = art.identity
        holders = conn.execute(
            "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'relation' AND relation = %s::oid AND granted"
            " AND pid <> pg_backend_pid()",
            (oid,),
        ).fetchall()
        if holders:
            return _replace(art, detail=f"{art.detail}; locked by backend(s) {', '.join(str(h[0]) for h in holders)}")
        try:
            with conn.transaction():
                size = conn.execute("SELECT pg_total_relation_size(%s::oid)", (oid,)).fetchone()[0]
                count = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(self.layout.staging_schema, name))
                ).fetchone()[0]
        except (errors.LockNotAvailable, errors.UndefinedTable):
            return art  # taken, or dropped, since we looked: the estimate stands
        return _replace(art, size_bytes=size, rows=count)

    def _prepared(self, conn: Any, run: Run) -> list[Artifact]:
        rows = conn.execute(
            "SELECT gid, prepared, owner FROM pg_prepared_xacts"
            " WHERE starts_with(gid, %s) AND database = current_database()",
            (f"{PREPARED_PREFIX}{run.run_id}:",),
        ).fetchall()
        return [
            Artifact(
                kind="prepared-transaction",
                location=gid,
                modified_at=prepared,
                attempt=gid.rsplit(":", 1)[-1] or None,
                detail=f"owner {owner}",
                identity=("prepared", gid),
            )
            for gid, prepared, owner in rows
        ]

    def _ledger_row(self, conn: Any, run: Run) -> dict[str, Any] | None:
        from psycopg import errors, sql
        from psycopg.rows import dict_row

        cur = conn.cursor(row_factory=dict_row)
        try:
            return cur.execute(
                sql.SQL("SELECT attempt, rows, checksum, target, published_at FROM {} WHERE run_id = %s").format(
                    self.layout.ledger()
                ),
                (run.run_id,),
            ).fetchone()
        except errors.UndefinedColumn as exc:
            # Another table holds the ledger's name: no run can be told from it, and waiting will not
            # change that (a publish said exit 5, "re-run"). The configuration's to fix: exit 2.
            where = f"{self.layout.schema}.{self.config.ledger_table}"
            raise ConfigError(
                f"{where} is not an atomic-publish ledger ({first_line(exc)}): set ledger_table to another name"
            ) from None

    # -- clean (the loop is SinkDiagnostic.clean) -------------------------------------------------

    @contextmanager
    def run_lock(self, run: Run) -> Iterator[None]:
        """The run's advisory lock on a session of its own, held while removing: no attempt of the
        run can be alive meanwhile. A lock held by a dead client's session is no lock: that session
        is terminated (the fence) and the lock taken."""
        conn = connect(self.config, application_name(run.attempt, "recover "), autocommit=True)
        try:
            acquire_run_lock(
                conn, self.layout.lock_key(run.run_id), run.run_id, self.config.timeout_seconds, zombie=client_is_gone
            )
            self._conn = conn
            yield
        finally:
            self._conn = None
            conn.close()

    def fence(self, diagnosis: Diagnosis, attempts: set[str]) -> None:
        """Terminate every session of the dead attempts and wait until they are gone: a COMMIT of
        theirs still in the network then arrives at no session, and their locks are released."""
        rows = self._conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity"
            " WHERE starts_with(application_name, 'atomic-publish ') AND pid <> pg_backend_pid()"
        ).fetchall()
        doomed = [pid for pid, app in rows if parse_application_name(app)[0] in attempts]
        terminate_backends(self._conn, doomed, self.config.timeout_seconds)

    def recheck(self, diagnosis: Diagnosis, artifact: Artifact) -> str | None:
        kind = artifact.identity[0] if artifact.identity else None
        if kind == "table":
            _, oid, name = artifact.identity
            if parse_staging_name(name) is None or not name.startswith(
                staging_prefix(diagnosis.dataset, diagnosis.run_date)
            ):
                return "not a staging table of this run"
            still = self._conn.execute(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.oid = %s AND c.relname = %s AND n.nspname = %s",
                (oid, name, self.layout.staging_schema),
            ).fetchone()
            return None if still else "already gone"
        if kind == "prepared":
            found = self._conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (artifact.identity[1],))
            return None if found.fetchone() else "already gone"
        if kind == "session":
            return None  # removal checks the backend's identity itself
        return "not an artifact this diagnostic cleans"

    def remove(self, diagnosis: Diagnosis, artifact: Artifact) -> None:
        from psycopg import errors, sql

        kind = artifact.identity[0]
        try:
            if kind == "table":
                name = artifact.identity[2]
                self._conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(self.layout.staging_schema, name)))
            elif kind == "prepared":
                self._conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(artifact.identity[1])))
            elif kind == "session":
                _, pid, started = artifact.identity
                same = self._conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE pid = %s AND backend_start = %s", (pid, started)
                ).fetchall()
                terminate_backends(self._conn, [r[0] for r in same], self.config.timeout_seconds)
        except (errors.UndefinedTable, errors.UndefinedObject):
            raise Gone(artifact.location) from None

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        with connect(self.config, application_name("sweep", "")) as conn:
            names = conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(c.relname, %s)",
                (self.layout.staging_schema, staging_prefix(dataset)),
            ).fetchall()
            prepared = conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, %s)", (f"{PREPARED_PREFIX}{dataset}/",)
            ).fetchall()
        dates = {p[1] for (n,) in names if (p := parse_staging_name(n)) and p[0] == dataset_hash(dataset)}
        for (gid,) in prepared:
            try:
                dates.add(dt.date.fromisoformat(gid[len(PREPARED_PREFIX) + len(dataset) + 1 :][:10]))
            except ValueError:
                continue
        return sorted(dates)


def _replace(art: Artifact, **changes: Any) -> Artifact:
    import dataclasses

    return dataclasses.replace(art, **changes)
