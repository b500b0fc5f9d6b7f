"""Diagnosis of the Postgres sink, from the database alone.

- published: a ledger row for the run_id (written in the same transaction as the data);
- orphans: the run's staging tables (named for the run and the attempt), and prepared transactions
  whose global id names the run (``atomic-publish:<run_id>:...``);
- RUNNING: the run's advisory lock held by a live backend (``application_name`` names the attempt).

Read-only: ``diagnose`` runs in a read-only transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from publishers._errors import RunInProgress
from publishers._types import Run
from publishers.postgres import (
    APPLICATION_PREFIX,
    PREPARED_PREFIX,
    PostgresLayout,
    PostgresSinkConfig,
    connect,
    dataset_hash,
    parse_staging_name,
    run_lock_key,
    staging_prefix,
)

from .taxonomy import (
    Artifact,
    CleanReport,
    Diagnosis,
    LockHolder,
    State,
    attempts_of,
    nothing_to_clean,
    verdict_factory,
)


class PostgresDiagnostic:
    sink_name = "postgres"

    def __init__(self, config: PostgresSinkConfig) -> None:
        self.config = config
        self.layout = PostgresLayout(config)

    def diagnose(self, run: Run) -> Diagnosis:
        now = dt.datetime.now(dt.UTC)
        with connect(self.config, APPLICATION_PREFIX + "diagnose " + run.attempt) as conn:
            conn.read_only = True
            holder = self._holder(conn, run)
            staging = self._staging(conn, run.dataset, run.run_date)
            prepared = self._prepared(conn, run)
            ledger = self._ledger_row(conn, run)
            target_exists = self._target_exists(conn, run)

        verdict = verdict_factory(self.sink_name, run, self.layout.describe(run.dataset), now)

        leftovers = staging + prepared
        if holder is not None:
            return verdict(
                State.RUNNING,
                f"attempt {holder.attempt} (backend pid {holder.pid} from {holder.host}, since "
                f"{holder.started_at}) holds the run's advisory lock",
                holder=holder,
                evidence=tuple(leftovers),
            )
        if ledger is not None:
            ledger_art = Artifact(
                kind="ledger-row",
                location=f"{self.layout.schema}.{self.config.ledger_table}[{run.run_id}]",
                modified_at=ledger["published_at"],
                attempt=ledger["attempt"],
                rows=ledger["rows"],
                detail=f"checksum {ledger['checksum']}, target {ledger['target']}",
            )
            problems = []
            if ledger["target"] != self.layout.describe(run.dataset):
                problems.append(
                    f"the ledger says {run.run_id} went to {ledger['target']}, not {self.layout.describe(run.dataset)}"
                )
            if not target_exists:
                problems.append(
                    f"the ledger has {run.run_id} but the target {self.layout.describe(run.dataset)} does not exist"
                )
            if problems:
                return verdict(State.UNKNOWN, "; ".join(problems), evidence=(ledger_art, *leftovers))
            if leftovers:
                return verdict(
                    State.PUBLISHED_WITH_ORPHANS,
                    f"published by attempt {ledger['attempt']}; {len(leftovers)} leftover(s) of "
                    f"attempt(s) {attempts_of(leftovers)}",
                    evidence=(ledger_art, *leftovers),
                    orphans=tuple(leftovers),
                )
            return verdict(
                State.DONE,
                f"published by attempt {ledger['attempt']} at {ledger['published_at']:%Y-%m-%dT%H:%M:%S%z}: "
                f"{ledger['rows']} rows, {ledger['checksum']}",
                evidence=(ledger_art,),
            )
        if leftovers:
            return verdict(
                State.ORPHANED,
                f"not published; {len(leftovers)} leftover(s) of dead attempt(s) {attempts_of(leftovers)}",
                evidence=tuple(leftovers),
                orphans=tuple(leftovers),
            )
        return verdict(State.NOTHING_IN_FLIGHT, "no ledger row and nothing left behind")

    # -- evidence -------------------------------------------------------------------------------

    def _holder(self, conn: Any, run: Run) -> LockHolder | None:
        k1, k2 = run_lock_key(run.run_id)
        row = conn.execute(
            "SELECT a.pid, a.application_name, a.backend_start, coalesce(host(a.client_addr), 'local')"
            " FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.classid = %s::oid AND l.objid = %s::oid"
            " AND l.objsubid = 2 AND l.granted",
            (k1 & 0xFFFFFFFF, k2 & 0xFFFFFFFF),
        ).fetchone()
        if row is None:
            return None
        pid, app, started, client = row
        attempt = app[len(APPLICATION_PREFIX) :] if app and app.startswith(APPLICATION_PREFIX) else None
        if attempt == run.attempt:
            return None  # the asking attempt itself
        return LockHolder(
            attempt=attempt,
            pid=pid,
            host=client,
            started_at=started.isoformat(timespec="seconds") if started else None,
            location=f"pg_locks advisory ({k1}, {k2})",
        )

    def _staging(self, conn: Any, dataset: str, run_date: dt.date | None) -> list[Artifact]:
        from psycopg import sql

        rows = conn.execute(
            "SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class'), pg_total_relation_size(c.oid)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(c.relname, %s) ORDER BY c.relname",
            (self.layout.staging_schema, staging_prefix(dataset, run_date)),
        ).fetchall()
        found = []
        for oid, name, comment, size in rows:
            parsed = parse_staging_name(name)
            if parsed is None:
                continue
            try:
                meta = json.loads(comment or "{}")
            except ValueError:
                meta = {}
            created = meta.get("created_at")
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(self.layout.staging_schema, name))
            ).fetchone()[0]
            found.append(
                Artifact(
                    kind="staging-table",
                    location=f"{self.layout.staging_schema}.{name}",
                    size_bytes=size,
                    modified_at=dt.datetime.fromisoformat(created) if created else None,
                    attempt=meta.get("attempt") or parsed[2],
                    rows=count,
                    detail=f"created by pid {meta.get('pid')}" if meta.get("pid") else "",
                    identity=("table", oid, name),
                )
            )
        return found

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
        from psycopg import sql
        from psycopg.rows import dict_row

        exists = conn.execute("SELECT to_regclass(%s)", (self.layout.ledger().as_string(conn),)).fetchone()[0]
        if exists is None:
            return None
        cur = conn.cursor(row_factory=dict_row)
        return cur.execute(
            sql.SQL("SELECT attempt, rows, checksum, target, published_at FROM {} WHERE run_id = %s").format(
                self.layout.ledger()
            ),
            (run.run_id,),
        ).fetchone()

    def _target_exists(self, conn: Any, run: Run) -> bool:
        return (
            conn.execute("SELECT to_regclass(%s)", (self.layout.target(run.dataset).as_string(conn),)).fetchone()[0]
            is not None
        )

    # -- clean ----------------------------------------------------------------------------------

    def clean(self, diagnosis: Diagnosis, *, older_than: dt.timedelta | None = None) -> CleanReport:
        from psycopg import sql

        early = nothing_to_clean(diagnosis)
        if early is not None:
            return early
        operator = Run(diagnosis.dataset, diagnosis.run_date)
        now = dt.datetime.now(dt.UTC)
        removed: list[Artifact] = []
        skipped: list[tuple[Artifact, str]] = []
        with connect(self.config, APPLICATION_PREFIX + operator.attempt, autocommit=True) as conn:
            # Holding the run's advisory lock while dropping proves no attempt of the run is alive.
            if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", run_lock_key(diagnosis.run_id)).fetchone()[0]:
                raise RunInProgress(f"run {diagnosis.run_id} became RUNNING since the diagnosis; nothing is cleaned")
            for art in diagnosis.orphans:
                age = art.age_seconds(now)
                if older_than is not None and (age is None or age < older_than.total_seconds()):
                    skipped.append((art, f"younger than {older_than}"))
                    continue
                kind = art.identity[0] if art.identity else None
                if kind == "table":
                    _, oid, name = art.identity
                    if parse_staging_name(name) is None or not name.startswith(
                        staging_prefix(diagnosis.dataset, diagnosis.run_date)
                    ):
                        skipped.append((art, "not a staging table of this run"))
                        continue
                    still = conn.execute(
                        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE c.oid = %s AND c.relname = %s AND n.nspname = %s",
                        (oid, name, self.layout.staging_schema),
                    ).fetchone()
                    if not still:
                        skipped.append((art, "already gone"))
                        continue
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(self.layout.staging_schema, name)))
                    removed.append(art)
                elif kind == "prepared":
                    gid = art.identity[1]
                    if not conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone():
                        skipped.append((art, "already gone"))
                        continue
                    conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
                    removed.append(art)
                else:
                    skipped.append((art, "not an artifact this diagnostic cleans"))
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", run_lock_key(diagnosis.run_id))
        return CleanReport(
            run_id=diagnosis.run_id, state_before=diagnosis.state, removed=tuple(removed), skipped=tuple(skipped)
        )

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        with connect(self.config, APPLICATION_PREFIX + "sweep") as conn:
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
