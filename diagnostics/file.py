"""Diagnosis of the file sink: walk the output, the staging area and the run lock; name the state.

Read-only. The evidence is the disk alone: the success manifest (the commit record), the output,
the per-attempt staging and pending manifests, and the run lock (flock: held only by a live
process). ``taxonomy.decide`` turns it into the verdict.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from contextlib import AbstractContextManager
from pathlib import Path

from atomic_publish.publishers._errors import ConfigError
from atomic_publish.publishers._fs import fsync_dir, read_json, sha256_file
from atomic_publish.publishers._lock import hold_flock, probe_flock
from atomic_publish.publishers._types import AttemptInfo, Run
from atomic_publish.publishers.layouts.file import FileLayout, FileSinkConfig
from atomic_publish.publishers.taxonomy import Artifact, Diagnosis, Evidence, LockHolder

from .engine import Gone, SinkDiagnostic

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


class FileDiagnostic(SinkDiagnostic):
    sink_name = "file"
    removal_order = _CLEAN_ORDER

    def __init__(self, config: FileSinkConfig) -> None:
        self.config = config
        self.layout = FileLayout(config.root, config.format)
        self.diagnose_timeout = config.diagnose_timeout_seconds

    def destination(self, run: Run) -> str:
        return str(self.layout.root)

    # -- evidence -------------------------------------------------------------------------------

    def evidence(self, run: Run) -> Evidence:
        layout = self.layout
        if problem := layout.root_problem():
            return Evidence(str(layout.root), problems=(problem,))
        if not layout.root.is_dir():
            missing = f"the root {layout.root} does not exist (a first publish creates it)"
            return Evidence(destination=str(layout.root), missing=missing)
        holder = probe_flock(layout.lock(run.dataset, run.run_date))
        staging = self._staging_artifacts(run.dataset, run.run_date)
        # The run's output in any format (the config's format may have changed since it was written).
        published = [fmt for fmt in layout.formats() if layout.marker(run, fmt).exists()]
        if published:
            fmt = published[0]
            twice = [
                f"the run is published twice: as {layout.final(run, fmt).name} and as {layout.final(run, other).name}"
                for other in published[1:]
            ]
            return self._published(run, layout.final(run, fmt), layout.marker(run, fmt), staging, holder, twice)
        problems: list[str] = []
        context: list[Artifact] = []
        for fmt in layout.formats():
            final = layout.final(run, fmt)
            # A recover running meanwhile may remove the output as we look at it: then it is simply gone.
            with contextlib.suppress(FileNotFoundError):
                if final.exists():
                    explained = self._explain_unmarked(run, final, staging)
                    if explained is None:
                        context.append(
                            _artifact(final, "unexplained-output", detail="data without its .success manifest")
                        )
                        problems.append(
                            f"{final} exists without its success manifest and no attempt's pending manifest matches "
                            "its checksum: data that no evidence explains"
                        )
                    else:
                        staging.insert(0, explained)
        return Evidence(
            destination=str(layout.root),
            holder=holder,
            leftovers=tuple(staging),
            problems=tuple(problems),
            context=tuple(context),
        )

    def _published(
        self,
        run: Run,
        final: Path,
        marker: Path,
        staging: list[Artifact],
        holder: LockHolder | None,
        problems_found: list[str],
    ) -> Evidence:
        destination = str(self.layout.root)
        try:
            doc = read_json(marker)
        except (OSError, ValueError) as exc:
            record = _artifact(marker, "success-marker")
            return Evidence(
                destination,
                record=record,
                holder=holder,
                leftovers=tuple(staging),
                problems=(f"success manifest {marker} is unreadable: {exc}", *problems_found),
            )
        problems = list(problems_found)
        if doc.get("run_id") != run.run_id:
            problems.append(f"manifest names run {doc.get('run_id')!r}, not {run.run_id!r}")
        if doc.get("data_file") != final.name:
            problems.append(f"manifest names data file {doc.get('data_file')!r}, not {final.name!r}")
        context: list[Artifact] = []
        if not final.exists():
            problems.append(f"{final} is missing although its manifest exists")
        else:
            data_art = _artifact(final, "published-output", attempt=doc.get("attempt"), rows=doc.get("rows"))
            context.append(data_art)
            if data_art.size_bytes != doc.get("bytes"):
                problems.append(f"{final} has {data_art.size_bytes} bytes, manifest says {doc.get('bytes')}")
            elif self.config.verify_checksum:
                digest, _ = sha256_file(final)
                if digest != doc.get("sha256"):
                    problems.append(f"{final} sha256 {digest} does not match the manifest's {doc.get('sha256')}")
        record = _artifact(
            marker,
            "success-marker",
            attempt=doc.get("attempt"),
            rows=doc.get("rows"),
            detail=f"at {doc.get('published_at')}: {doc.get('rows')} rows, {doc.get('bytes')} bytes, checksum "
            + ("verified" if self.config.verify_checksum else "not verified (size matches)"),
        )
        return Evidence(
            destination,
            record=record,
            holder=holder,
            leftovers=tuple(staging),
            problems=tuple(problems),
            context=tuple(context),
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

    # -- clean (the loop is SinkDiagnostic.clean) -------------------------------------------------

    def run_lock(self, run: Run) -> AbstractContextManager[None]:
        # Holding the run lock while deleting proves no attempt of this run is alive, so nothing
        # removed can belong to a live attempt, even one that started after the diagnosis.
        return hold_flock(self.layout.lock(run.dataset, run.run_date), AttemptInfo.current(run.attempt), run.run_id)

    def fence(self, diagnosis: Diagnosis, attempts: set[str]) -> None:
        """None needed: the file sink's commit is a local rename and a marker written by the attempt
        itself, and the run lock (flock, released by the kernel when a process dies) proves the
        attempt is dead. A dead process has no request in flight that could land later."""

    def recheck(self, diagnosis: Diagnosis, artifact: Artifact) -> str | None:
        path = Path(artifact.location)
        run = Run(diagnosis.dataset, diagnosis.run_date)
        if artifact.kind == "unmarked-output":
            if not any(path == self.layout.final(run, fmt) for fmt in self.layout.formats()):
                return "not this run's output path"
            if any(self.layout.marker(run, fmt).exists() for fmt in self.layout.formats()):
                return "a success manifest appeared since the diagnosis"
        elif path.parent != self.layout.staging_dir(run.dataset):
            return "not inside this dataset's staging directory"
        try:
            st = path.lstat()
        except FileNotFoundError:
            return "already gone"
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != artifact.identity:
            return "changed since the diagnosis; diagnose again"
        return None

    def remove(self, diagnosis: Diagnosis, artifact: Artifact) -> None:
        path = Path(artifact.location)
        try:
            path.unlink()
        except FileNotFoundError:
            raise Gone(str(path)) from None
        fsync_dir(path.parent)

    # -- sweep support --------------------------------------------------------------------------

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        if problem := self.layout.root_problem():
            raise ConfigError(problem)
        dates = {a_date for a_date in self._staging_dates(dataset)}
        out_dir = self.layout.dataset_dir(dataset)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(out_dir):
                stem, _, ext = name.partition(".")
                if ext in self.layout.formats() and not (out_dir / (name + ".success")).exists():
                    with contextlib.suppress(ValueError):
                        dates.add(dt.date.fromisoformat(stem))
        return sorted(dates)

    def _staging_dates(self, dataset: str) -> set[dt.date]:
        try:
            names = os.listdir(self.layout.staging_dir(dataset))
        except FileNotFoundError:
            return set()
        return {p.run_date for n in names if (p := self.layout.parse_staging_name(n))}
