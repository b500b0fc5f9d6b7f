"""The file sink: staging + no-clobber rename + a ``.success`` manifest, on one filesystem.

Layout under the configured ``root`` (all on one filesystem, so the rename is atomic)::

    <root>/<dataset>/<run_date>.<ext>                 published data
    <root>/<dataset>/<run_date>.<ext>.success         the manifest: the commit point readers gate on
    <root>/_staging/<dataset>/<run_date>.<attempt>.<ext>           staged data of one attempt
    <root>/_staging/<dataset>/<run_date>.<attempt>.pending.json    intent: what the attempt staged
    <root>/_staging/<dataset>/<run_date>.<attempt>.success.tmp     manifest being written
    <root>/_staging/<dataset>/<run_date>.<attempt>.p<part>-<token>.<ext>   a part staged by a worker
    <root>/_locks/<dataset>/<run_date>.lock           the run lock (flock)

Commit sequence and what a crash between steps leaves (the diagnostic names each):

1. staged data fsync'd, pending manifest fsync'd     -> ORPHANED (staging of a dead attempt)
2. rename data to its final name (never clobbering), fsync both directories
                                                     -> ORPHANED: output without manifest, but its
                                                        checksum matches the attempt's pending
                                                        manifest, so recover removes it, no human
3. manifest written beside it atomically             -> the commit point: published
4. pending manifest removed                          -> before this, PUBLISHED_WITH_ORPHANS

A run staged in parts by several workers (Spark tasks; ``stage(..., part=, token=)``) is still
published as one file: ``commit`` first assembles the parts it is given, in part order, into the
attempt's staging file (each part's size and sha256 checked as it is read; CSV bytes copied with
one header; Parquet column chunks copied as they are under one footer, the parts' row groups kept,
or re-encoded when the parts' schemas or writers differ: ``_parquet``), writes the pending manifest,
removes the parts, and then goes on with step 2. A crash while assembling leaves only staging of the
attempt (ORPHANED). The parts must be on a filesystem the committing process sees (on a cluster: a
shared one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._crash import crash_point
from ._errors import (
    CommitAborted,
    CommitOutcomeUnknown,
    CommitRejected,
    ConfigError,
    DestinationUnavailable,
    InputError,
    LostRace,
    first_line,
)
from ._fs import (
    HashingWriter,
    fsync_dir,
    json_bytes,
    publish_json_noreplace,
    read_json,
    rename_noreplace,
    sha256_file,
    write_durable,
)
from ._lock import hold_flock
from ._protocol import ProgressCallback
from ._types import AttemptInfo, Receipt, Run, Staged, check_parts

if TYPE_CHECKING:
    import pyarrow as pa
from .layouts.file import (
    CAPABILITIES,
    MANIFEST_VERSION,
    MARKER_SUFFIX,
    FileLayout,
    FileSinkConfig,
    _appears,
    log,
)


class FilePublisher:
    sink_name = "file"
    # One published file per run, also from several workers' parts (commit assembles them).
    capabilities = CAPABILITIES

    def __init__(self, config: FileSinkConfig) -> None:
        self.config = config
        self.layout = FileLayout(config.root, config.format)
        # Only Parquet gives back every value exactly (CSV: a null string and an empty one are the same).
        self.capabilities = dataclasses.replace(CAPABILITIES, reads_back=config.format == "parquet")

    @contextlib.contextmanager
    def run_lock(self, run: Run) -> Iterator[None]:
        if problem := self.layout.root_problem():
            raise ConfigError(f"{problem} in the sink's config")
        try:
            self.layout.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot create the root {self.layout.root}: {exc.strerror or exc}") from exc
        with hold_flock(self.layout.lock(run.dataset, run.run_date), AttemptInfo.current(run.attempt), run.run_id):
            yield

    def check_schema(self, schema: pa.Schema) -> None:
        """Before the lock: CSV holds flat values only."""
        from ._arrow import refuse_nested_for_csv

        if self.config.format == "csv":
            refuse_nested_for_csv(schema, f"sink {self.sink_name}")

    def stage(
        self,
        run: Run,
        batches: pa.RecordBatchReader,
        *,
        progress: ProgressCallback | None = None,
        part: int = 0,
        token: str = "",
    ) -> Staged:
        from ._arrow import refuse_nested_for_csv, refuse_schema_drift

        staging_dir = self.layout.staging_dir(run.dataset)
        try:
            staging_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot create {staging_dir}: {exc.strerror or exc}") from exc
        self.layout.check_same_filesystem()
        if self.config.format == "csv":
            refuse_nested_for_csv(batches.schema, f"sink {self.sink_name}")
        if not self.config.allow_schema_change:
            refuse_schema_drift(batches.schema, *self._latest_schema(run))
        if part or token:
            return self._stage_part(run, batches, progress, part, token)
        data_path = self.layout.staging_data(run)
        pending_path = self.layout.pending(run)
        with _nothing_left_on_error(data_path) as created:
            rows, size, checksum = _write_new(data_path, lambda sink: self._write(sink, batches, progress), created)
            intent = self._manifest(run, rows=rows, size=size, checksum=checksum, schema=batches.schema)
            # The pending manifest is what lets a diagnosis explain an output found without its
            # success marker (crash right after the rename): same checksum, same attempt.
            created.append(pending_path)
            write_durable(pending_path, json_bytes(intent))
            fsync_dir(staging_dir)
        crash_point("after_stage")
        return Staged(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=run.attempt,
            location=str(data_path),
            rows=rows,
            bytes=size,
            checksum=f"sha256:{checksum}",
            details={"pending_manifest": str(pending_path), **self._part_details(batches.schema)},
        )

    def _part_details(self, schema: pa.Schema) -> dict[str, Any]:
        """What the commit needs to assemble a staging with others: its format, schema, host, and
        the length of its CSV header (skipped in every part but the first)."""
        from ._arrow import csv_header, schema_to_json

        details: dict[str, Any] = {
            "format": self.config.format,
            "host": os.uname().nodename,
            "schema": schema_to_json(schema),
        }
        if self.config.format == "csv":
            details["header_bytes"] = len(csv_header(schema))
        return details

    def _stage_part(
        self, run: Run, batches: pa.RecordBatchReader, progress: ProgressCallback | None, part: int, token: str
    ) -> Staged:
        """One worker's part: a complete file of its own (CSV with its header, or Parquet), and no
        pending manifest: the commit assembles the parts and writes that."""
        path = self.layout.staging_part(run, part, token)
        with _nothing_left_on_error(path) as created:
            rows, size, checksum = _write_new(path, lambda sink: self._write(sink, batches, progress), created)
            fsync_dir(path.parent)
        return Staged(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=run.attempt,
            location=str(path),
            rows=rows,
            bytes=size,
            checksum=f"sha256:{checksum}",
            details=self._part_details(batches.schema),
            part=part,
            token=token,
        )

    def assemble(self, run: Run, parts: Sequence[Staged]) -> Staged:
        """The parts, in part order, as the attempt's one staging file with its pending manifest
        (what a single-process stage leaves); the parts are removed once that is durable. Every
        error here is before the commit point: CommitRejected, nothing visible."""
        check_parts(run, parts)
        attempts = {p.attempt for p in parts}
        if len(attempts) != 1:
            raise CommitRejected(f"the parts of {run.run_id} come from several attempts: {sorted(attempts)}")
        owner = Run(run.dataset, run.run_date, attempts.pop())
        ordered = sorted(parts, key=lambda p: p.part)
        schema = _one_schema(run, ordered)
        # Part 0 staged without a token (by stage() in one piece) sits at the attempt's staging name.
        paths = [
            self.layout.staging_part(owner, p.part, p.token) if p.part or p.token else self.layout.staging_data(owner)
            for p in ordered
        ]
        for staged, path in zip(ordered, paths, strict=True):
            if not path.is_file():
                host, here = staged.details.get("host", "?"), os.uname().nodename
                raise CommitRejected(
                    f"part {staged.part} of {run.run_id}, staged at {path}, is missing: it was removed since its "
                    "worker staged it"
                    if host == here
                    else f"part {staged.part} of {run.run_id}, staged at {path} on {host}, is not on this host's "
                    f"filesystem ({here}): on a cluster the file sink needs a root on a filesystem shared by the "
                    "driver and every executor"
                )
        data_path, pending_path = self.layout.staging_data(owner), self.layout.pending(owner)
        assembling = self.layout.staging_part(owner, 0, "all")
        created: list[Path] = []
        concat = self._concat_csv if self.config.format == "csv" else self._join_parquet
        try:
            rows, size, checksum = _write_new(assembling, lambda sink: concat(sink, ordered, paths), created)
            # Assembled and durable: the parts go, then the whole takes the attempt's staging name.
            for path in [*paths, pending_path]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            rename_noreplace(assembling, data_path)
            intent = self._manifest(owner, rows=rows, size=size, checksum=checksum, schema=schema)
            write_durable(pending_path, json_bytes(intent))
            fsync_dir(data_path.parent)
        except BaseException as exc:
            if created:  # never a file this call did not create
                with contextlib.suppress(OSError):
                    assembling.unlink()
            if isinstance(exc, Exception) and not isinstance(exc, CommitRejected):
                # Before the rename: whatever went wrong, nothing was published (a proven refusal).
                raise CommitRejected(f"could not assemble the parts of {run.run_id}: {first_line(exc)}") from exc
            raise
        return Staged(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=owner.attempt,
            location=str(data_path),
            rows=rows,
            bytes=size,
            checksum=f"sha256:{checksum}",
            details={"pending_manifest": str(pending_path), "format": self.config.format, "parts": len(ordered)},
        )

    @staticmethod
    def _checked(staged: Staged, path: Path, digest: str, size: int) -> None:
        if size != staged.bytes or f"sha256:{digest}" != staged.checksum:
            raise CommitRejected(
                f"part {staged.part} at {path} is not what its task staged ({size} bytes, the task said "
                f"{staged.bytes}; or its sha256 differs): not published"
            )

    def _concat_csv(self, sink: HashingWriter, ordered: Sequence[Staged], paths: Sequence[Path]) -> int:
        """The parts' bytes one after the other, the header once (each part's sha256 checked)."""
        import hashlib

        header = b""
        rows = 0
        for staged, path in zip(ordered, paths, strict=True):
            skip = int(staged.details.get("header_bytes", 0))
            digest, size = hashlib.sha256(), 0
            with open(path, "rb", buffering=0) as fh:
                first = fh.read(skip)
                digest.update(first)
                size += len(first)
                if not header:
                    header = first
                    sink.write(first)
                elif first != header:
                    raise CommitRejected(f"part {staged.part} at {path} has another header than part {ordered[0].part}")
                while chunk := fh.read(4 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    sink.write(chunk)
            self._checked(staged, path, digest.hexdigest(), size)
            rows += staged.rows
        return rows

    def _join_parquet(self, sink: HashingWriter, ordered: Sequence[Staged], paths: Sequence[Path]) -> int:
        """The parts' column chunks copied as they are, one after the other, under one footer (no
        decoding, no re-compression: as parquet-mr's appendFile); row groups are the parts' own. Parts
        that cannot be joined so (another schema, as an all-null column gives; another writer; a page
        index) are re-encoded instead, which nothing was written for yet."""
        from . import _parquet

        try:
            joined = _parquet.plan(paths)
        except _parquet.NotConcatenable as exc:
            log.info("re-encoding the %d parts (they cannot be joined byte for byte: %s)", len(paths), exc)
            return self._rewrite_parquet(sink, ordered, paths)
        return joined.write(sink, lambda i, path, digest, size: self._checked(ordered[i], path, digest, size))

    def _rewrite_parquet(self, sink: HashingWriter, ordered: Sequence[Staged], paths: Sequence[Path]) -> int:
        """The parts' rows in one Parquet file, row groups at the configured size (as one stage)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for staged, path in zip(ordered, paths, strict=True):
            self._checked(staged, path, *sha256_file(path))
        # The run's schema: each column's type from a part where it is not all null (_one_schema
        # checked that the parts agree otherwise); a part's all-null column is cast to it.
        schemas = [pq.read_schema(path) for path in paths]
        schema = pa.schema(
            [
                next((s.field(i) for s in schemas if not pa.types.is_null(s.field(i).type)), schemas[0].field(i))
                for i in range(len(schemas[0]))
            ]
        )

        def batches() -> Iterator[pa.RecordBatch]:
            for path in paths:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
                    yield batch if batch.schema.equals(schema) else batch.cast(schema)

        rows = self._write(sink, pa.RecordBatchReader.from_batches(schema, batches()), None)
        return rows

    def _latest_schema(self, run: Run) -> tuple[list[dict[str, Any]] | None, str]:
        """The schema in the manifest of the dataset's most recent published run (not this one)."""
        directory = self.layout.dataset_dir(run.dataset)
        markers = (
            sorted(
                (
                    p
                    for p in directory.glob(f"*.{self.layout.ext}{MARKER_SUFFIX}")
                    if not p.name.startswith(run.run_date.isoformat())
                ),
                reverse=True,
            )
            if directory.is_dir()
            else []
        )
        for marker in markers:
            try:
                doc = read_json(marker)
            except (OSError, ValueError):
                continue
            return doc.get("schema"), f"the run {doc.get('run_id')} ({marker})"
        return None, ""

    def _write(self, sink: HashingWriter, batches: pa.RecordBatchReader, progress: ProgressCallback | None) -> int:
        from ._arrow import CsvWriter, rechunk, release_freed_memory
        from ._parquet import parquet_writer

        rows = 0
        first = True
        if self.config.format == "csv":
            writer: Any = CsvWriter(sink, batches.schema, str(self.layout.root))
            chunks: Iterator[pa.RecordBatch | pa.Table] = iter(batches)
        else:
            compression = None if self.config.parquet_compression == "none" else self.config.parquet_compression
            writer = parquet_writer(sink, batches.schema, compression=compression)  # columns on threads
            # Fixed-size row groups, whatever the input batching, keep re-runs byte-identical.
            chunks = rechunk(batches, self.config.parquet_row_group_rows)
        with writer:
            for batch in chunks:
                rows += batch.num_rows
                if self.config.format == "csv":
                    writer.write(batch)
                else:
                    writer.write_table(batch, row_group_size=batch.num_rows)
                    del batch  # the row group's buffers are free now: their pages go back too
                    release_freed_memory()
                if progress:
                    progress(rows, sink.size)
                if first:
                    first = False
                    crash_point("mid_stage")
        return rows

    def _manifest(
        self, run: Run, *, rows: int, size: int, checksum: str, schema: pa.Schema | list[dict[str, Any]]
    ) -> dict[str, Any]:
        import pyarrow as pa

        from ._arrow import schema_to_json

        return {
            "manifest_version": MANIFEST_VERSION,
            "run_id": run.run_id,
            "dataset": run.dataset,
            "run_date": run.run_date.isoformat(),
            "attempt": run.attempt,
            "data_file": self.layout.final(run).name,
            "format": self.config.format,
            "rows": rows,
            "bytes": size,
            "sha256": checksum,
            "schema": schema_to_json(schema) if isinstance(schema, pa.Schema) else schema,
        }

    def commit(self, run: Run, staged: Sequence[Staged]) -> Receipt:
        if len(staged) != 1 or staged[0].part or staged[0].token:
            staged = [self.assemble(run, staged)]
        part = staged[0]
        if part.run_id != run.run_id:
            raise CommitRejected(f"staged part belongs to run {part.run_id}, not {run.run_id}")
        owner = Run(run.dataset, run.run_date, part.attempt)
        data_path = self.layout.staging_data(owner)
        pending_path = self.layout.pending(owner)
        final, marker = self.layout.final(run), self.layout.marker(run)
        try:
            intent = read_json(pending_path)
        except (OSError, ValueError) as exc:
            raise CommitRejected(f"pending manifest {pending_path} is unreadable: {exc}") from None
        if marker.exists():
            raise LostRace(f"run {run.run_id} is already published ({marker} exists)")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if self._renamed_by(owner, intent, data_path, final):
                log.info("%s: the commit of attempt %s stopped after its rename; finishing it", final, part.attempt)
            else:
                rename_noreplace(data_path, final)
        except FileExistsError:
            if _appears(marker, min(self.config.timeout_seconds, 2.0)):
                raise LostRace(
                    f"{final} already exists and is published: another attempt of {run.run_id} got there "
                    "first; this attempt's staging is discarded"
                ) from None
            raise CommitRejected(
                f"{final} already exists without its manifest (another attempt's commit, finished or not); "
                f"this attempt did not publish: run `atomic-publish diagnose` for {run.run_id}"
            ) from None
        except OSError as exc:
            # rename(2) either happened or not; an error return means it did not.
            raise CommitRejected(f"could not move {data_path} to {final}: {exc.strerror or exc}") from exc

        # From here the data sits at its final name. Until the marker's temporary file is written,
        # a failure (a full disk) is known not to have published: the data goes back to staging
        # (a rename: no space needed) and the attempt ends as not published (exit 5). After it,
        # any failure is an unknown outcome, and nothing may be cleaned up by this process (the
        # diagnosis settles it from the disk).
        marker_tmp = self.layout.marker_tmp(owner)
        try:
            fsync_dir(final.parent)
            fsync_dir(data_path.parent)
            crash_point("after_data_rename")
            published_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            with contextlib.suppress(FileNotFoundError):
                marker_tmp.unlink()  # a leftover of this same attempt (it never reuses names otherwise)
            write_durable(marker_tmp, json_bytes({**intent, "published_at": published_at}))
        except OSError as exc:
            raise self._undo_rename(run, final, data_path, marker_tmp, exc) from exc
        try:
            publish_json_noreplace(marker_tmp, marker, None)
        except OSError as exc:
            raise CommitOutcomeUnknown(
                f"{final} is in place but its manifest {marker} may not be: {exc}; "
                f"run `atomic-publish diagnose` for {run.run_id}"
            ) from exc
        crash_point("after_commit")
        try:
            pending_path.unlink()
            fsync_dir(pending_path.parent)
        except OSError as exc:  # published already; a leftover is reported as an orphan, not an error
            log.warning("published, but could not remove %s: %s", pending_path, exc)
        return Receipt(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=part.attempt,
            location=str(final),
            rows=int(intent["rows"]),
            bytes=int(intent["bytes"]),
            checksum=f"sha256:{intent['sha256']}",
            published_at=published_at,
            details={"manifest": str(marker), "format": intent["format"]},
        )

    @staticmethod
    def _undo_rename(run: Run, final: Path, data_path: Path, marker_tmp: Path, exc: OSError) -> Exception:
        """The marker could not be written (found from outside: a disk that filled at this step gave
        exit 14 and left the data at its final name). No marker: not published; the data goes back
        to its staging name, which the attempt's discard then removes: CommitAborted (exit 5)."""
        try:
            marker_tmp.unlink(missing_ok=True)
            rename_noreplace(final, data_path)
            fsync_dir(final.parent)
        except OSError:
            return CommitOutcomeUnknown(
                f"{final} is in place but its manifest could not be written: {exc.strerror or exc}; "
                f"run `atomic-publish diagnose` for {run.run_id}"
            )
        return CommitAborted(
            f"could not write the manifest of {final}: {exc.strerror or exc}; the run is not published"
        )

    @staticmethod
    def _renamed_by(owner: Run, intent: dict[str, Any], data_path: Path, final: Path) -> bool:
        """Whether an earlier commit of this same attempt stopped after its rename (a group rolling a
        decided run forward commits a dead process's staging): the staging is gone, and the file at
        the final name is exactly the one the attempt's pending manifest describes (size and
        sha256). Then the commit goes on from the marker; anything else is refused as before."""
        if data_path.exists() or not final.is_file() or intent.get("attempt") != owner.attempt:
            return False
        if final.stat().st_size != intent.get("bytes"):
            return False
        return sha256_file(final)[0] == intent.get("sha256")

    def read_published(self, run: Run) -> Any:
        """The published run read back exactly (``Capabilities.reads_back``), only when its marker says
        it is published (FileNotFoundError otherwise), and only from Parquet: CSV cannot give back
        every value (a null string and an empty one are the same text, "007" reads as 7), so a
        CSV run is refused (InputError)."""
        from ._arrow import open_input

        if not self.layout.marker(run).exists():
            raise FileNotFoundError(self.layout.marker(run))
        if self.config.format != "parquet":
            raise InputError(f"{self.layout.final(run)} is CSV, which does not give back the run's exact values")
        return open_input(self.layout.final(run))

    def discard(self, run: Run, staged: Sequence[Staged]) -> None:
        attempts = {run.attempt} | {s.attempt for s in staged}
        for attempt in sorted(attempts):
            owner = Run(run.dataset, run.run_date, attempt)
            data_path, pending_path = self.layout.staging_data(owner), self.layout.pending(owner)
            final, marker = self.layout.final(run), self.layout.marker(run)
            if not data_path.exists() and final.exists() and not marker.exists():
                # The data was renamed but the marker never landed: the pending manifest is the only
                # evidence that explains the output. Keep it; the diagnosis needs it.
                log.warning("kept %s: it explains %s, whose commit did not finish", pending_path, final)
                paths = [self.layout.marker_tmp(owner)]
            else:
                paths = [data_path, pending_path, self.layout.marker_tmp(owner)]
            paths += self.layout.staged_parts(owner)
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _one_schema(run: Run, parts: Sequence[Staged]) -> list[dict[str, Any]]:
    """The schema of a run staged in parts: the parts' own, which must agree column by column,
    except that a column one part saw only as nulls (type ``null``: Ray infers each block's types
    apart) takes the type the other parts give it. Otherwise CommitRejected naming the columns."""
    found = [p.details.get("schema") for p in parts]
    if any(not isinstance(s, list) for s in found):
        raise CommitRejected(f"a part of {run.run_id} does not say its schema: it was staged by another version")
    schemas: list[list[dict[str, Any]]] = [s for s in found if isinstance(s, list)]
    names = [[c["name"] for c in s] for s in schemas]
    if any(n != names[0] for n in names):
        other = next(n for n in names if n != names[0])
        raise CommitRejected(f"the parts of {run.run_id} have different columns: {names[0]} and {other}; not published")
    merged, problems = [], []
    for i, name in enumerate(names[0]):
        typed = {s[i]["type"] for s in schemas} - {"null"}
        if len(typed) > 1:
            problems.append(f"{name!r} is {' / '.join(sorted(typed))}")
        column = next((s[i] for s in schemas if s[i]["type"] != "null"), schemas[0][i])
        merged.append({**column, "nullable": any(s[i]["nullable"] for s in schemas) or column["nullable"]})
    if problems:
        raise CommitRejected(
            f"the parts of {run.run_id} disagree on column types ({'; '.join(problems)}): every worker must stage "
            "one schema; not published"
        )
    return merged


@contextlib.contextmanager
def _nothing_left_on_error(where: Path) -> Iterator[list[Path]]:
    """Staging at ``where``: the caller lists every file it creates in the yielded list, and on any
    error none of those stays (never a file this call did not create: a second staging under a
    taken name must not remove the first). An OSError becomes DestinationUnavailable naming the file."""
    created: list[Path] = []
    try:
        yield created
    except BaseException as exc:
        for path in created:
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(exc, OSError):
            raise DestinationUnavailable(f"cannot write {exc.filename or where}: {exc.strerror or exc}") from exc
        raise


def _write_new(
    path: Path, write: Callable[[HashingWriter], int], created: list[Path] | None = None
) -> tuple[int, int, str]:
    """Create ``path`` (O_EXCL: never another staging's name), write it through a hashing sink with
    ``write`` (which returns the rows), fsync it; (rows, bytes, sha256). ``created`` gets ``path``
    once this call made it."""
    with open(path, "xb", buffering=0) as fh:
        if created is not None:
            created.append(path)
        sink = HashingWriter(fh)
        try:
            rows = write(sink)
        finally:
            checksum = sink.finish()
        os.fsync(fh.fileno())
    return rows, sink.size, checksum
