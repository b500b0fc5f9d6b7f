"""Diagnosis of the file sink: walk the output, the staging area and the run lock; name the state.

Read-only. The verdict is built from the disk alone (the chapter's "two ls commands and one
inequality", made exact by the success manifest and the per-attempt pending manifests).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

from publishers._fs import fsync_dir, read_json, sha256_file
from publishers._lock import hold_flock, probe_flock
from publishers._types import AttemptInfo, Run
from publishers.file import FileLayout, FileSinkConfig

from .taxonomy import Artifact, CleanReport, Diagnosis, State, nothing_to_clean, verdict_factory

# Removal order inside one clean: an output found without its marker goes before the pending
# manifest that explains it, so a crash during clean never leaves unexplained data behind.
_CLEAN_ORDER = {"unmarked-output": 0, "marker-temp": 1, "staging-data": 2, "pending-manifest": 3}


def _artifact(
    path: Path, kind: str, *, attempt: str | None = None, rows: int | None = None, detail: str = ""
) -> Artifact:
    st = path.lstat()
    return Artifact(
        kind=kind,
        location=str(path),
        size_bytes=st.st_size,
        modified_at=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
        attempt=attempt,
        rows=rows,
        detail=detail,
        identity=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
    )


class FileDiagnostic:
    sink_name = "file"

    def __init__(self, config: FileSinkConfig) -> None:
        self.config = config
        self.layout = FileLayout(config.root, config.format)

    # -- diagnose -------------------------------------------------------------------------------

    def diagnose(self, run: Run) -> Diagnosis:
        now = dt.datetime.now(dt.UTC)
        layout = self.layout

        verdict = verdict_factory(self.sink_name, run, str(layout.root), now)

        holder = probe_flock(layout.lock(run.dataset, run.run_date))
        if holder is not None and holder.attempt == run.attempt:
            holder = None  # the asking attempt itself (publish's own pre-flight check)
        staging = self._staging_artifacts(run.dataset, run.run_date)
        if holder is not None:
            return verdict(
                State.RUNNING,
                f"attempt {holder.attempt} (pid {holder.pid} on {holder.host}, started "
                f"{holder.started_at}) holds the run lock",
                holder=holder,
                evidence=tuple(staging),
            )

        final, marker = layout.final(run), layout.marker(run)
        if marker.exists():
            return self._published(run, final, marker, staging, verdict)

        orphans = list(staging)
        if final.exists():
            explained = self._explain_unmarked(run, final, staging)
            if explained is None:
                evidence = [
                    _artifact(final, "unexplained-output", detail="data without its .success manifest"),
                    *staging,
                ]
                return verdict(
                    State.UNKNOWN,
                    f"{final} exists without its success manifest and no attempt's pending manifest "
                    "matches its checksum: data that no evidence explains",
                    evidence=tuple(evidence),
                )
            orphans.insert(0, explained)
        if orphans:
            attempts = sorted({a.attempt for a in orphans if a.attempt})
            return verdict(
                State.ORPHANED,
                f"not published; {len(orphans)} leftover(s) of dead attempt(s) {', '.join(attempts)}",
                evidence=tuple(orphans),
                orphans=tuple(orphans),
            )
        reason = "not published and nothing left behind"
        if not layout.root.exists():
            # Worth saying: a typo in the configured root also looks like "nothing here".
            reason += f" (the destination root {layout.root} does not exist yet)"
        return verdict(State.NOTHING_IN_FLIGHT, reason, evidence=())

    def _published(
        self, run: Run, final: Path, marker: Path, staging: list[Artifact], verdict: Callable[..., Diagnosis]
    ) -> Diagnosis:
        try:
            doc = read_json(marker)
        except (OSError, ValueError) as exc:
            return verdict(
                State.UNKNOWN,
                f"success manifest {marker} is unreadable: {exc}",
                evidence=(_artifact(marker, "success-marker"), *staging),
            )
        marker_art = _artifact(marker, "success-marker", attempt=doc.get("attempt"), rows=doc.get("rows"))
        problems: list[str] = []
        if doc.get("run_id") != run.run_id:
            problems.append(f"manifest names run {doc.get('run_id')!r}, not {run.run_id!r}")
        if doc.get("data_file") != final.name:
            problems.append(f"manifest names data file {doc.get('data_file')!r}, not {final.name!r}")
        evidence = [marker_art]
        if not final.exists():
            problems.append(f"{final} is missing although its manifest exists")
        else:
            data_art = _artifact(final, "published-output", attempt=doc.get("attempt"), rows=doc.get("rows"))
            evidence.append(data_art)
            if data_art.size_bytes != doc.get("bytes"):
                problems.append(f"{final} has {data_art.size_bytes} bytes, manifest says {doc.get('bytes')}")
            elif self.config.verify_checksum:
                digest, _ = sha256_file(final)
                if digest != doc.get("sha256"):
                    problems.append(f"{final} sha256 {digest} does not match the manifest's {doc.get('sha256')}")
        if problems:
            return verdict(State.UNKNOWN, "; ".join(problems), evidence=tuple(evidence + staging))
        if staging:
            attempts = sorted({a.attempt for a in staging if a.attempt})
            return verdict(
                State.PUBLISHED_WITH_ORPHANS,
                f"published by attempt {doc.get('attempt')}; leftovers of attempt(s) {', '.join(attempts)}",
                evidence=tuple(evidence + staging),
                orphans=tuple(staging),
            )
        return verdict(
            State.DONE,
            f"published by attempt {doc.get('attempt')} at {doc.get('published_at')}: "
            f"{doc.get('rows')} rows, {doc.get('bytes')} bytes, checksum "
            + ("verified" if self.config.verify_checksum else "not verified (size matches)"),
            evidence=tuple(evidence),
        )

    def _explain_unmarked(self, run: Run, final: Path, staging: list[Artifact]) -> Artifact | None:
        """An output without its marker is explained only by a pending manifest of the same run
        whose size and sha256 match it: then it is a dead attempt's half-finished commit."""
        size = final.stat().st_size
        candidates = []
        for art in staging:
            if art.kind != "pending-manifest":
                continue
            try:
                doc = read_json(Path(art.location))
            except (OSError, ValueError):
                continue
            if doc.get("run_id") == run.run_id and doc.get("bytes") == size and doc.get("data_file") == final.name:
                candidates.append((art, doc))
        if not candidates:
            return None
        digest, _ = sha256_file(final)
        for art, doc in candidates:
            if doc.get("sha256") == digest:
                return _artifact(
                    final,
                    "unmarked-output",
                    attempt=art.attempt,
                    rows=doc.get("rows"),
                    detail="renamed into place, success manifest never written (crash between rename "
                    "and marker); checksum matches the attempt's pending manifest; not published",
                )
        return None

    def _staging_artifacts(self, dataset: str, run_date: dt.date | None) -> list[Artifact]:
        staging_dir = self.layout.staging_dir(dataset)
        found: list[Artifact] = []
        try:
            names = sorted(os.listdir(staging_dir))
        except FileNotFoundError:
            return found
        for name in names:
            parsed = self.layout.parse_staging_name(name)
            if parsed is None or (run_date is not None and parsed.run_date != run_date):
                continue
            path = staging_dir / name
            with contextlib.suppress(FileNotFoundError):  # an attempt may remove it as we look
                rows = None
                if parsed.kind == "pending-manifest":
                    with contextlib.suppress(OSError, ValueError):
                        rows = read_json(path).get("rows")
                found.append(_artifact(path, parsed.kind, attempt=parsed.attempt, rows=rows))
        return found

    # -- clean ----------------------------------------------------------------------------------

    def clean(self, diagnosis: Diagnosis, *, older_than: dt.timedelta | None = None) -> CleanReport:
        early = nothing_to_clean(diagnosis)
        if early is not None:
            return early

        operator = Run(diagnosis.dataset, diagnosis.run_date)
        final = self.layout.final(operator)
        marker = self.layout.marker(operator)
        staging_dir = self.layout.staging_dir(diagnosis.dataset)
        now = dt.datetime.now(dt.UTC)
        removed: list[Artifact] = []
        skipped: list[tuple[Artifact, str]] = []

        # Age is judged per attempt (its youngest leftover), so a sweep never splits an attempt's
        # evidence: an unmarked output is never kept while its explaining manifest goes.
        youngest: dict[str | None, float] = {}
        for art in diagnosis.orphans:
            age = art.age_seconds(now) or 0.0
            youngest[art.attempt] = min(youngest.get(art.attempt, age), age)

        # Holding the run lock while deleting proves no attempt of this run is alive, so nothing
        # removed here can belong to a live attempt, even one that started after the diagnosis.
        with hold_flock(
            self.layout.lock(diagnosis.dataset, diagnosis.run_date),
            AttemptInfo.current(operator.attempt),
            diagnosis.run_id,
        ):
            for art in sorted(diagnosis.orphans, key=lambda a: _CLEAN_ORDER.get(a.kind, 9)):
                path = Path(art.location)
                if older_than is not None and youngest[art.attempt] < older_than.total_seconds():
                    skipped.append((art, f"attempt is younger than {older_than}"))
                    continue
                if art.kind == "unmarked-output":
                    if path != final:
                        skipped.append((art, "not this run's output path"))
                        continue
                    if marker.exists():
                        skipped.append((art, "a success manifest appeared since the diagnosis"))
                        continue
                elif path.parent != staging_dir:
                    skipped.append((art, "not inside this dataset's staging directory"))
                    continue
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    skipped.append((art, "already gone"))
                    continue
                if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != art.identity:
                    skipped.append((art, "changed since the diagnosis; diagnose again"))
                    continue
                path.unlink()
                removed.append(art)
            for directory in {Path(a.location).parent for a in removed}:
                fsync_dir(directory)
        return CleanReport(
            run_id=diagnosis.run_id, state_before=diagnosis.state, removed=tuple(removed), skipped=tuple(skipped)
        )

    # -- sweep support --------------------------------------------------------------------------

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        dates = {a_date for a_date in self._staging_dates(dataset)}
        out_dir = self.layout.dataset_dir(dataset)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(out_dir):
                stem, _, ext = name.partition(".")
                if ext == self.layout.ext and not (out_dir / (name + ".success")).exists():
                    with contextlib.suppress(ValueError):
                        dates.add(dt.date.fromisoformat(stem))
        return sorted(dates)

    def _staging_dates(self, dataset: str) -> set[dt.date]:
        try:
            names = os.listdir(self.layout.staging_dir(dataset))
        except FileNotFoundError:
            return set()
        return {p.run_date for n in names if (p := self.layout.parse_staging_name(n))}
