"""Evidence of the Iceberg sink, from the catalog, the table's files and the run's lease.

- commit record: a snapshot in the current history of main whose summary carries the run_id; the
  data files it added must exist, and its manifest list must be readable;
- leftovers: data files under the run's attempt directories that the publishing snapshot did not
  add (attributed by path), and manifests named with the commit uuid of an attempt that did not
  publish (attributed by name); never by age alone;
- holder: an unexpired lease of another attempt whose holder is not known dead.

Read-only: the catalog is opened without creating anything (a missing SQLite catalog is reported,
not created). Cost: one catalog load, the run's own directory, the manifests the publishing
snapshot added, and one listing of the table's metadata directory.

``clean`` fences before it removes: an empty snapshot (``atomic-publish.fence``) moves main, so the
catalog's compare-and-swap refuses a commit of a dead attempt that arrives late (its base is gone).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from atomic_publish.publishers._errors import RecoveryNeeded, RunInProgress
from atomic_publish.publishers._lease import Lease
from atomic_publish.publishers._types import Run
from atomic_publish.publishers.layouts.iceberg import (
    FENCE_PROPERTY,
    SUMMARY_ATTEMPT,
    CatalogMissing,
    IcebergLayout,
    IcebergSinkConfig,
    _bounded,
    added_files,
    attempt_uuid,
    published_snapshot,
    run_lease,
)
from atomic_publish.publishers.taxonomy import Artifact, Diagnosis, Evidence, LockHolder, State

from .engine import Gone, SinkDiagnostic


class IcebergDiagnostic(SinkDiagnostic):
    sink_name = "iceberg"

    def __init__(self, config: IcebergSinkConfig) -> None:
        self.config = config
        self.layout = IcebergLayout(config)
        self.diagnose_timeout = config.diagnose_timeout_seconds

    def destination(self, run: Run) -> str:
        uri = self.config.catalog_properties(create=False).get("uri", "")
        return f"{self.layout.describe(run.dataset)} in catalog {self.config.catalog_name} ({_hide(uri)})"

    # -- evidence -------------------------------------------------------------------------------

    def evidence(self, run: Run) -> Evidence:
        destination = self.destination(run)
        lease = run_lease(self.layout, run)
        lease_doc = lease.read()
        live = lease.live_holder()
        holder = LockHolder.from_lease(live, self.layout.lease_path(run.dataset, run.run_date)) if live else None
        try:
            table = self.layout.load(run.dataset, create=False)
        except CatalogMissing as exc:
            return Evidence(destination, holder=holder, missing=str(exc))
        context: list[Artifact] = []
        if lease_doc and not live and lease_doc.get("attempt") != run.attempt:
            # A dead attempt's lease is evidence, not an orphan: it holds no data, stops counting
            # the moment its holder is dead, and the next attempt takes it over.
            context.append(
                Artifact(
                    kind="stale-lease",
                    location=self.layout.lease_path(run.dataset, run.run_date),
                    modified_at=_parse_time(lease_doc.get("renewed_at")),
                    attempt=lease_doc.get("attempt"),
                    detail=f"holder pid {lease_doc.get('pid')} on {lease_doc.get('host')} is gone or the lease "
                    f"expired ({lease_doc.get('expires_at')})",
                )
            )
        if table is None:
            table_name = self.layout.describe(run.dataset)
            absent = f"the table {table_name} does not exist yet in catalog {self.config.catalog_name}"
            return Evidence(destination, holder=holder, context=tuple(context), absent=absent)
        data_files = self._data_files(table, run)
        snapshot = published_snapshot(table, run.run_id)
        if snapshot is None:
            leftovers = data_files + self._manifests(table, {a.attempt for a in data_files})
            return Evidence(destination, holder=holder, leftovers=tuple(leftovers), context=tuple(context))

        publisher = snapshot.summary.additional_properties.get(SUMMARY_ATTEMPT)
        problems: list[str] = []
        try:
            added = added_files(table, snapshot)
        except (FileNotFoundError, OSError) as exc:
            added = {}
            problems.append(
                f"snapshot {snapshot.snapshot_id} of {run.run_id} references metadata that cannot be read "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            )
        summary = snapshot.summary.additional_properties
        record = Artifact(
            kind="snapshot",
            location=f"{self.layout.describe(run.dataset)}@{snapshot.snapshot_id}",
            modified_at=dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC),
            attempt=publisher,
            rows=sum(n for _, n in added.values()),
            detail=f"in snapshot {snapshot.snapshot_id}: {summary.get('atomic-publish.rows')} rows in "
            f"{len(added)} data file(s), {summary.get('atomic-publish.checksum')}",
        )
        on_disk = {a.location for a in data_files}
        missing = [path for path in added if path not in on_disk and not self._exists(path)]
        if missing:
            problems.append(
                f"snapshot {snapshot.snapshot_id} of {run.run_id} references {len(missing)} data file(s) "
                f"that do not exist (e.g. {missing[0]})"
            )
        leftovers = [a for a in data_files if a.location not in added]
        leftovers += self._manifests(table, {a.attempt for a in leftovers} - {publisher})
        return Evidence(
            destination,
            record=record,
            holder=holder,
            leftovers=tuple(leftovers),
            problems=tuple(problems),
            context=tuple(context),
        )

    def _data_files(self, table: Any, run: Run) -> list[Artifact]:
        from pyarrow import fs as pafs

        directory = self.layout.run_dir(table, run.run_date)
        filesystem, base = self.layout.filesystem(directory)
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except FileNotFoundError:
            return []
        prefix = directory[: len(directory) - len(base)] if directory.endswith(base) else ""
        found = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(base) :].lstrip("/")
            attempt = relative.split("/", 1)[0] if "/" in relative else None
            found.append(
                Artifact(
                    kind="data-file",
                    location=prefix + info.path,
                    size_bytes=info.size,
                    modified_at=info.mtime.astimezone(dt.UTC) if info.mtime else None,
                    attempt=attempt,
                    identity=("file", prefix + info.path, info.size),
                )
            )
        return found

    def _manifests(self, table: Any, attempts: set[str | None]) -> list[Artifact]:
        from pyarrow import fs as pafs

        tags = {str(attempt_uuid(a)): a for a in attempts if a}
        if not tags:
            return []
        directory = f"{table.location().rstrip('/')}/metadata"
        filesystem, base = self.layout.filesystem(directory)
        prefix = directory[: len(directory) - len(base)] if directory.endswith(base) else ""
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except FileNotFoundError:
            return []
        found = []
        for info in infos:
            name = info.base_name
            tag = next((t for t in tags if t in name), None)
            if tag is None or info.type != pafs.FileType.File:
                continue
            found.append(
                Artifact(
                    kind="manifest",
                    location=prefix + info.path,
                    size_bytes=info.size,
                    modified_at=info.mtime.astimezone(dt.UTC) if info.mtime else None,
                    attempt=tags[tag],
                    detail="written for a commit that did not land",
                    identity=("file", prefix + info.path, info.size),
                )
            )
        return found

    def _exists(self, location: str) -> bool:
        from pyarrow import fs as pafs

        filesystem, path = self.layout.filesystem(location)
        return bool(filesystem.get_file_info(path).type == pafs.FileType.File)

    # -- clean (the loop is SinkDiagnostic.clean) -------------------------------------------------

    def run_lock(self, run: Run) -> Lease:
        # A live attempt's lease makes this raise RunInProgress.
        return run_lease(self.layout, run, purpose="recover")

    def fence(self, diagnosis: Diagnosis, attempts: set[str]) -> None:
        """An empty snapshot that moves main (summary ``atomic-publish.fence``): a commit of a dead
        attempt still in flight carries the old base (the SQL catalog's compare-and-swap on the
        metadata pointer, the REST catalog's assert-ref-snapshot-id) and is refused. Only when the
        run is not published (a published run's snapshot already moved main past their base).
        Bounded: a catalog row locked by a commit still in flight makes this refuse to clean."""
        if diagnosis.state is not State.ORPHANED:
            return
        table = self.layout.load(diagnosis.dataset)
        if table is None:
            return
        if published_snapshot(table, diagnosis.run_id) is not None:
            raise RecoveryNeeded(f"run {diagnosis.run_id} was published since the diagnosis; diagnose again", diagnosis)
        props = {FENCE_PROPERTY: diagnosis.run_id, f"{FENCE_PROPERTY}.attempts": ",".join(sorted(attempts))}
        tx = table.transaction()
        with tx.update_snapshot(snapshot_properties=props).fast_append():
            pass
        try:
            _bounded(tx.commit_transaction, self.config.timeout_seconds)
        except Exception as exc:
            raise RunInProgress(
                f"could not fence {self.layout.describe(diagnosis.dataset)} ({type(exc).__name__}: {exc}); a commit "
                "may still be in flight: nothing was removed; try again later",
                diagnosis,
            ) from exc

    def recheck(self, diagnosis: Diagnosis, artifact: Artifact) -> str | None:
        from pyarrow import fs as pafs

        table = self.layout.load(diagnosis.dataset)
        published = published_snapshot(table, diagnosis.run_id) if table is not None else None
        if published is not None and artifact.location in added_files(table, published):
            return "referenced by the published snapshot"
        filesystem, path = self.layout.filesystem(artifact.location)
        info = filesystem.get_file_info(path)
        if info.type != pafs.FileType.File:
            return "already gone"
        if info.size != artifact.identity[2]:
            return "changed since the diagnosis; diagnose again"
        return None

    def remove(self, diagnosis: Diagnosis, artifact: Artifact) -> None:
        filesystem, path = self.layout.filesystem(artifact.location)
        try:
            filesystem.delete_file(path)
        except FileNotFoundError:
            raise Gone(artifact.location) from None

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        from pyarrow import fs as pafs

        try:
            table = self.layout.load(dataset, create=False)
        except CatalogMissing:
            return []
        if table is None:
            return []
        directory = f"{table.location().rstrip('/')}/data/atomic-publish"
        filesystem, base = self.layout.filesystem(directory)
        infos = filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        dates = set()
        for info in infos:
            try:
                dates.add(dt.date.fromisoformat(info.base_name))
            except ValueError:
                continue
        return sorted(dates)


def _parse_time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _hide(uri: str) -> str:
    from atomic_publish.publishers._secrets import redact

    return redact(uri)
