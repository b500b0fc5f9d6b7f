"""Diagnosis of the Iceberg sink, from the catalog, the table's files and the run's lease.

- published: a snapshot in the current history of main whose summary carries the run_id;
- orphans: data files under the run's attempt directories that the publishing snapshot did not add
  (attributed by path), manifests named with the commit uuid of an attempt that did not publish
  (attributed by name), and an expired lease; never by age alone;
- RUNNING: an unexpired lease of another attempt.

Cost: one catalog load, the run's own directory, the manifests the publishing snapshot added, and one
listing of the table's metadata directory; never the manifests of the rest of the history.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from publishers._types import Run
from publishers.iceberg import (
    SUMMARY_ATTEMPT,
    IcebergLayout,
    IcebergSinkConfig,
    attempt_uuid,
    published_snapshot,
    run_lease,
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


class IcebergDiagnostic:
    sink_name = "iceberg"

    def __init__(self, config: IcebergSinkConfig) -> None:
        self.config = config
        self.layout = IcebergLayout(config)

    def diagnose(self, run: Run) -> Diagnosis:
        now = dt.datetime.now(dt.UTC)

        verdict = verdict_factory(self.sink_name, run, self.layout.describe(run.dataset), now)

        lease = run_lease(self.layout, run)
        lease_doc = lease.read()
        holder = lease.live_holder()
        table = self.layout.load(run.dataset)
        data_files = self._data_files(table, run) if table is not None else []
        if holder is not None:
            return verdict(
                State.RUNNING,
                f"attempt {holder.get('attempt')} (pid {holder.get('pid')} on {holder.get('host')}) holds the run's "
                f"lease until {holder.get('expires_at')}",
                holder=LockHolder.from_lease(holder, self.layout.lease_path(run.dataset, run.run_date)),
                evidence=tuple(data_files),
            )
        # A dead attempt's lease is reported as evidence but is not an orphan: it holds no data,
        # stops counting the moment its holder is dead, and the next attempt overwrites it.
        stale: list[Artifact] = []
        if lease_doc and lease_doc.get("attempt") != run.attempt:
            stale.append(
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
            return verdict(
                State.NOTHING_IN_FLIGHT,
                f"table {self.layout.describe(run.dataset)} does not exist yet",
                evidence=tuple(stale),
            )

        snapshot = published_snapshot(table, run.run_id)
        attempts = {a.attempt for a in data_files}
        if snapshot is None:
            leftovers = data_files + self._manifests(table, attempts)
            if leftovers:
                return verdict(
                    State.ORPHANED,
                    f"no snapshot of {run.run_id} in the history; {len(leftovers)} leftover(s) of attempt(s) "
                    f"{attempts_of(leftovers)}",
                    evidence=tuple(leftovers + stale),
                    orphans=tuple(leftovers),
                )
            return verdict(
                State.NOTHING_IN_FLIGHT, f"no snapshot of {run.run_id} and nothing left behind", evidence=tuple(stale)
            )

        publisher = snapshot.summary.additional_properties.get(SUMMARY_ATTEMPT)
        added = self._added_files(table, snapshot)
        snap_art = Artifact(
            kind="snapshot",
            location=f"{self.layout.describe(run.dataset)}@{snapshot.snapshot_id}",
            modified_at=dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC),
            attempt=publisher,
            rows=sum(n for _, n in added.values()),
            detail=f"{len(added)} data file(s) added",
        )
        on_disk = {a.location: a for a in data_files}
        missing = [path for path in added if path not in on_disk and not self._exists(path)]
        if missing:
            return verdict(
                State.UNKNOWN,
                f"snapshot {snapshot.snapshot_id} of {run.run_id} references {len(missing)} data file(s) "
                f"that do not exist (e.g. {missing[0]})",
                evidence=(snap_art, *data_files),
            )
        orphans = [a for a in data_files if a.location not in added]
        orphans += self._manifests(table, {a.attempt for a in orphans} - {publisher})
        if orphans:
            return verdict(
                State.PUBLISHED_WITH_ORPHANS,
                f"published by attempt {publisher} (snapshot {snapshot.snapshot_id}); {len(orphans)} unreferenced "
                f"file(s) of attempt(s) {attempts_of(orphans)}",
                evidence=(snap_art, *orphans),
                orphans=tuple(orphans),
            )
        return verdict(
            State.DONE,
            f"published by attempt {publisher} in snapshot {snapshot.snapshot_id}: "
            f"{snapshot.summary.additional_properties.get('atomic-publish.rows')} rows, "
            f"{snapshot.summary.additional_properties.get('atomic-publish.checksum')}",
            evidence=(snap_art,),
        )

    # -- evidence -------------------------------------------------------------------------------

    def _data_files(self, table: Any, run: Run) -> list[Artifact]:
        from pyarrow import fs as pafs

        directory = self.layout.run_dir(table, run.run_date)
        filesystem, base = self.layout.filesystem(directory)
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except (FileNotFoundError, OSError):
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
        except (FileNotFoundError, OSError):
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

    def _added_files(self, table: Any, snapshot: Any) -> dict[str, tuple[int, int]]:
        """Data files the snapshot added (path -> (size, rows)), from its own manifests only."""
        added: dict[str, tuple[int, int]] = {}
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id != snapshot.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                if entry.snapshot_id == snapshot.snapshot_id:
                    added[entry.data_file.file_path] = (
                        entry.data_file.file_size_in_bytes,
                        entry.data_file.record_count,
                    )
        return added

    def _exists(self, location: str) -> bool:
        from pyarrow import fs as pafs

        filesystem, path = self.layout.filesystem(location)
        return bool(filesystem.get_file_info(path).type == pafs.FileType.File)

    # -- clean ----------------------------------------------------------------------------------

    def clean(self, diagnosis: Diagnosis, *, older_than: dt.timedelta | None = None) -> CleanReport:
        early = nothing_to_clean(diagnosis)
        if early is not None:
            return early
        operator = Run(diagnosis.dataset, diagnosis.run_date)
        with run_lease(self.layout, operator):  # a live attempt's lease makes this raise RunInProgress
            removed: list[Artifact] = []
            skipped: list[tuple[Artifact, str]] = []
            now = dt.datetime.now(dt.UTC)
            table = self.layout.load(diagnosis.dataset)
            published = published_snapshot(table, diagnosis.run_id) if table is not None else None
            added = self._added_files(table, published) if published is not None else {}
            for art in diagnosis.orphans:
                age = art.age_seconds(now)
                if older_than is not None and (age is None or age < older_than.total_seconds()):
                    skipped.append((art, f"younger than {older_than}"))
                    continue
                if art.location in added:
                    skipped.append((art, "referenced by the published snapshot"))
                    continue
                filesystem, path = self.layout.filesystem(art.location)
                try:
                    filesystem.delete_file(path)
                except FileNotFoundError:
                    skipped.append((art, "already gone"))
                    continue
                removed.append(art)
        return CleanReport(
            run_id=diagnosis.run_id, state_before=diagnosis.state, removed=tuple(removed), skipped=tuple(skipped)
        )

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        from pyarrow import fs as pafs

        table = self.layout.load(dataset)
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
