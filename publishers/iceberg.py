"""The Iceberg sink: Parquet data files written by the attempt, committed as ONE snapshot whose
summary carries the run_id and the attempt.

Layout (``<location>`` is the table's location; ``<work>`` is ``<warehouse>/_atomic_publish``)::

    <location>/data/atomic-publish/<run_date>/<attempt>/part-00000.parquet   data files of one attempt
    <location>/metadata/<attempt uuid>-m0.avro, snap-...-<attempt uuid>.avro manifests of its commit
    <work>/<namespace>/<table>/<run_date>.lease.json                         the run's lease (RUNNING)

The commit point is the catalog's swap of the table's metadata pointer. Before every try the
publisher reloads the table and looks for its run_id in the current history: pyiceberg's own retry
would re-apply a conflicting append and publish the run twice, so it is switched off for our
transactions and replaced by this loop. A catalog error after which the commit may have landed is
``CommitOutcomeUnknown`` and no file is deleted; the diagnosis settles it from the snapshots.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import warnings
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._arrow import nanoseconds_refused, rechunk, release_freed_memory
from ._crash import crash_point
from ._errors import (
    CommitAborted,
    CommitOutcomeUnknown,
    CommitRejected,
    DestinationUnavailable,
    Fenced,
    LostRace,
    SchemaMismatch,
    first_line,
)
from ._fs import HashingWriter
from ._lease import Lease
from ._parquet import parquet_writer
from ._protocol import ProgressCallback
from ._types import Receipt, Run, Staged, check_parts, combine_checksums, part_suffix
from .layouts.iceberg import (
    _COMMIT_TRIES,
    CAPABILITIES,
    ROW_GROUP_ROWS,
    SUMMARY_ATTEMPT,
    SUMMARY_CHECKSUM,
    SUMMARY_ROWS,
    SUMMARY_RUN_ID,
    IcebergLayout,
    IcebergSinkConfig,
    _bounded,
    _promotion,
    added_files,
    attempt_uuid,
    fences,
    log,
    normalize_schema,
    published_snapshot,
    run_lease,
)


def data_file_name(part: int, token: str, index: int) -> str:
    """``part-<file>.parquet`` for a run staged in one piece; ``part-<part>-<token>-<file>.parquet``
    for a part of several (so two stagings of a part never share a name)."""
    suffix = part_suffix(part, token)
    return f"part-{index:05d}.parquet" if not suffix else f"part-{suffix[1:]}-{index:05d}.parquet"


class IcebergPublisher:
    sink_name = "iceberg"
    capabilities = CAPABILITIES

    def __init__(self, config: IcebergSinkConfig) -> None:
        self.config = config
        self.layout = IcebergLayout(config)

    def run_lock(self, run: Run) -> Lease:
        return run_lease(self.layout, run)

    def _table_for(self, run: Run, schema: pa.Schema) -> tuple[Any, bool]:
        """The run's table, created from the Arrow schema if missing; and whether this call created it."""
        from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError

        table = self.layout.load(run.dataset)
        created = False
        if table is None:
            catalog = self.layout.bounded(self.layout.catalog, "opening the catalog")
            try:
                self.layout.bounded(lambda: catalog.create_namespace(self.config.namespace), "creating the namespace")
            except NamespaceAlreadyExistsError:
                pass
            except Exception as exc:
                # Two writers creating it at once (Spark tasks of a first run): the SQL catalog checks,
                # then inserts, and the loser's insert fails on the key. It exists now: go on.
                try:
                    exists = self.layout.bounded(
                        lambda: catalog.namespace_exists(self.config.namespace), "looking up the namespace"
                    )
                except Exception:
                    raise exc from None
                if not exists:
                    raise
            try:
                table = self.layout.bounded(
                    lambda: catalog.create_table(self.layout.identifier(run.dataset), schema=schema),
                    f"creating {self.layout.describe(run.dataset)}",
                )
                created = True
            except TableAlreadyExistsError:  # another attempt created it first
                table = self.layout.load(run.dataset)
        return table, created

    def _drop_if_still_empty(self, table: Any, run: Run) -> None:
        """After a failed stage, remove the table this attempt created, if it still has no snapshot:
        nothing was ever published into it, so nothing visible is lost (another run staging into
        it meanwhile finds it gone at its commit and is refused, publishing nothing)."""
        current = self.layout.load(run.dataset)
        if current is None or current.metadata.table_uuid != table.metadata.table_uuid or current.snapshots():
            return
        catalog = self.layout.catalog()
        self.layout.bounded(
            lambda: catalog.drop_table(self.layout.identifier(run.dataset)),
            f"dropping {self.layout.describe(run.dataset)}",
        )
        fs, base = self.layout.filesystem(table.location())
        with contextlib.suppress(OSError):
            fs.delete_dir(base)

    def _check_schema(self, table: Any, schema: pa.Schema, run: Run) -> pa.Schema:
        """The schema to write the data in, if the data fits the table (the same types, or a
        lossless promotion: int to long, float to double); else SchemaMismatch naming every column."""
        from pyiceberg.io.pyarrow import _pyarrow_schema_ensure_small_types, schema_to_pyarrow

        have = _pyarrow_schema_ensure_small_types(schema_to_pyarrow(table.schema(), include_field_ids=False))
        problems = []
        fields = []
        for field in schema:
            index = have.get_field_index(field.name)
            if index < 0:
                problems.append(f"column {field.name!r} is not in {self.layout.describe(run.dataset)}")
                continue
            want = have.field(index).type
            if not want.equals(field.type) and not _promotion(field.type, want):
                iceberg_type = table.schema().find_field(field.name).field_type
                problems.append(f"column {field.name!r} is {iceberg_type} in the table but {field.type} in the data")
            fields.append(field.with_type(want))
        if self.config.partition_column and self.config.partition_column not in schema.names:
            problems.append(f"partition_column {self.config.partition_column!r} is not in the data")
        if problems:
            raise SchemaMismatch("the data does not fit the Iceberg table: " + "; ".join(problems))
        return pa.schema(fields)

    def check_schema(self, schema: pa.Schema) -> None:
        """Before the lock: a type no Iceberg table can keep (timestamp[ns], a null column, ...), and
        the configured partition_column missing."""
        normalize_schema(schema)
        if self.config.partition_column and self.config.partition_column not in schema.names:
            raise SchemaMismatch(
                f"partition_column {self.config.partition_column!r} is not in the data (columns: {schema.names})"
            )

    def stage(
        self,
        run: Run,
        batches: pa.RecordBatchReader,
        *,
        progress: ProgressCallback | None = None,
        part: int = 0,
        token: str = "",
    ) -> Staged:
        try:
            return self._stage(run, batches, progress, part, token)
        except OSError as exc:
            # pyarrow's filesystems (local disk full or read-only, S3 refusing) raise OSError.
            raise DestinationUnavailable(
                f"the warehouse of {self.layout.describe(run.dataset)} refused a write: {exc}"
            ) from exc

    def _stage(
        self, run: Run, batches: pa.RecordBatchReader, progress: ProgressCallback | None, part: int, token: str
    ) -> Staged:
        schema = normalize_schema(batches.schema)
        table, created = self._table_for(run, schema)
        try:
            schema = self._check_schema(table, schema, run)
            return self._write_files(run, batches, progress, schema, table, part, token)
        except BaseException:
            if created:
                with contextlib.suppress(Exception):
                    self._drop_if_still_empty(table, run)
            raise

    def _write_files(
        self,
        run: Run,
        batches: pa.RecordBatchReader,
        progress: ProgressCallback | None,
        schema: pa.Schema,
        table: Any,
        part: int,
        token: str,
    ) -> Staged:
        directory = self.layout.attempt_dir(table, run)
        fs, base = self.layout.filesystem(directory)
        fs.create_dir(base, recursive=True)
        files: list[str] = []
        digests: list[str] = []
        rows = stored = 0  # stored: bytes of the finished data files (what the warehouse holds)
        partition_values: set[Any] = set()
        current: _DataFileWriter | None = None
        limit = self.config.target_file_mb << 20
        try:
            # Row groups of ROW_GROUP_ROWS whatever the input batching (the memory a stage holds).
            for index, batch in enumerate(rechunk(batches, ROW_GROUP_ROWS)):
                if batch.schema != schema:
                    try:
                        batch = batch.cast(schema)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        refused = nanoseconds_refused(batch, schema, "an Iceberg v2 table")
                        raise refused or SchemaMismatch(
                            f"the data does not fit the Iceberg table: {first_line(exc)}"
                        ) from None
                if current is None or current.size >= limit:
                    if current is not None:
                        digests.append(current.finish())
                        stored += current.size
                    name = data_file_name(part, token, len(files))
                    files.append(f"{directory}/{name}")
                    current = _DataFileWriter(fs, f"{base}/{name}", schema)
                current.write(batch)
                rows += batch.num_rows
                if self.config.partition_column:
                    partition_values.update(batch.column(self.config.partition_column).unique().to_pylist())
                del batch  # the row group's buffers are free now: their pages go back too
                release_freed_memory()
                if progress:
                    progress(rows, stored + current.size)
                if index == 0:
                    crash_point("mid_stage")
            if current is not None:
                digests.append(current.finish())
                stored += current.size
                current = None
        except BaseException:
            if current is not None:
                with contextlib.suppress(Exception):
                    current.finish()
            for path in files:  # this part's own files (other parts of the attempt share the directory)
                with contextlib.suppress(Exception):
                    fs.delete_file(f"{base}/{path.rsplit('/', 1)[1]}")
            raise
        # One file: its sha256. Several: the sha256 of their sha256s, in order.
        checksum = digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()
        crash_point("after_stage")
        return Staged(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=run.attempt,
            location=directory,
            rows=rows,
            bytes=stored,
            checksum=f"sha256:{checksum}",
            details={"files": files, "partition_values": sorted(partition_values, key=str)},
            part=part,
            token=token,
        )

    def commit(self, run: Run, staged: Sequence[Staged]) -> Receipt:
        """One snapshot carrying the run_id, by the catalog's compare-and-swap. Before every try the
        table is reloaded and its history searched for the run_id (pyiceberg's own retry is off).
        Bounded by ``commit_timeout_seconds``: a catalog that does not answer is an unknown outcome."""
        from pyiceberg.exceptions import CommitFailedException

        check_parts(run, staged)
        staged = sorted(staged, key=lambda p: p.part)
        files = [f for part in staged for f in part.details["files"]]
        rows = sum(p.rows for p in staged)
        checksum = combine_checksums(staged)
        props = {
            SUMMARY_RUN_ID: run.run_id,
            SUMMARY_ATTEMPT: run.attempt,
            SUMMARY_ROWS: str(rows),
            SUMMARY_CHECKSUM: checksum,
        }
        for _ in range(_COMMIT_TRIES):
            try:
                loaded = self.layout.load(run.dataset)
                fenced = loaded is not None and fences(loaded, run)
                if loaded is not None and not fenced and published_snapshot(loaded, run.run_id) is None:
                    tx = self._transaction(loaded, run, staged, files, props)
            except Exception as exc:
                # Nothing was sent to the catalog yet: proven not to have landed.
                raise CommitAborted(f"cannot prepare the commit of {run.run_id}: {type(exc).__name__}: {exc}") from exc
            if loaded is None:
                raise CommitRejected(f"table {self.layout.describe(run.dataset)} does not exist any more")
            existing = published_snapshot(loaded, run.run_id)
            if existing is not None:
                winner = existing.summary.additional_properties.get(SUMMARY_ATTEMPT)
                if winner == run.attempt:  # an earlier try of this very commit landed: success
                    return self._receipt(run, staged, files, rows, checksum, existing)
                raise LostRace(
                    f"run {run.run_id} is already in the history of {self.layout.describe(run.dataset)} "
                    f"(snapshot {existing.snapshot_id}, attempt {winner})"
                )
            if fenced:
                raise Fenced(
                    f"recover fenced attempt {run.attempt} of {run.run_id} ({self.layout.describe(run.dataset)}): it "
                    "did not publish, and its staged files may be gone; run `atomic-publish diagnose`"
                )
            try:
                result = _bounded(tx.commit_transaction, self.config.commit_timeout_seconds)
            except CommitFailedException as exc:
                log.warning("commit of %s conflicted (%s); re-checking the history", run.run_id, exc)
                continue
            except TimeoutError:
                raise CommitOutcomeUnknown(
                    f"the catalog did not answer the commit of {run.run_id} within "
                    f"{self.config.commit_timeout_seconds:g} s; run `atomic-publish diagnose` (the table history "
                    "settles it)"
                ) from None
            except Exception as exc:
                # The catalog may have swapped the pointer before failing: never delete files here.
                raise CommitOutcomeUnknown(
                    f"the catalog failed during the commit of {run.run_id} ({type(exc).__name__}: {exc}); "
                    "run `atomic-publish diagnose` (the table history settles it)"
                ) from exc
            crash_point("after_commit")
            snapshot = published_snapshot(result, run.run_id)
            if snapshot is None:  # the catalog took the commit but the history does not show it
                raise CommitOutcomeUnknown(f"committed {run.run_id} but its snapshot is not in the history")
            return self._receipt(run, staged, files, rows, checksum, snapshot)
        raise CommitAborted(f"the commit of {run.run_id} conflicted {_COMMIT_TRIES} times in a row; try again later")

    def _receipt(
        self, run: Run, staged: Sequence[Staged], files: list[str], rows: int, checksum: str, snapshot: Any
    ) -> Receipt:
        return Receipt(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=run.attempt,
            location=self.layout.describe(run.dataset),
            rows=rows,
            bytes=sum(p.bytes for p in staged),
            checksum=checksum,
            published_at=dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC).isoformat(timespec="seconds"),
            details={"snapshot_id": snapshot.snapshot_id, "files": len(files)},
        )

    def _transaction(
        self, loaded: Any, run: Run, staged: Sequence[Staged], files: list[str], props: dict[str, str]
    ) -> Any:
        """The transaction of one commit try: (in replace_partition mode, a delete, then) one fast
        append of the staged files, whose manifests are named with the attempt's commit uuid."""
        from pyiceberg.io.pyarrow import parquet_file_to_data_file
        from pyiceberg.table import Table, TableProperties

        # pyiceberg would retry a conflicting commit by re-applying our append on top of the
        # winner's, which publishes the run twice if the winner was another attempt of it.
        # Its retry is switched off (in memory only); the commit loop re-checks the history instead.
        no_retry = loaded.metadata.model_copy(
            update={"properties": {**loaded.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}}
        )
        table = Table(
            loaded.name(),
            metadata=no_retry,
            metadata_location=loaded.metadata_location,
            io=loaded.io,
            catalog=loaded.catalog,
        )
        tx = table.transaction()
        if tx.table_metadata.name_mapping() is None:
            mapping: dict[str, Any] = {
                TableProperties.DEFAULT_NAME_MAPPING: tx.table_metadata.schema().name_mapping.model_dump_json()
            }
            tx.set_properties(**mapping)
        if self.config.mode == "replace_partition":
            from pyiceberg.expressions import In, IsNull, Or

            values = [v for p in staged for v in p.details.get("partition_values", [])]
            column = self.config.partition_column
            if values and column:
                # The null partition is one too: In() takes no None (pyiceberg's "Invalid literal
                # value: None", found from outside, made such a run exit 5, "re-run", forever).
                present = [v for v in values if v is not None]
                # In.__new__ and IsNull.__new__ take a term (a name); mypy reads the pydantic fields instead.
                parts: list[Any] = [In(column, present)] if present else []  # type: ignore[call-arg,arg-type]
                if len(present) < len(values):
                    parts.append(IsNull(column))  # type: ignore[call-arg,arg-type]
                delete_filter: Any = parts[0] if len(parts) == 1 else Or(*parts)
                with warnings.catch_warnings():
                    # The first publish of a partition deletes nothing, and pyiceberg says so with a
                    # UserWarning that Python printed on the operator's stderr, with our source line
                    # (found from outside): expected here, so not shown.
                    warnings.filterwarnings("ignore", "Delete operation did not match any records", UserWarning)
                    tx.delete(delete_filter, snapshot_properties=props)
        with tx.update_snapshot(snapshot_properties=props).fast_append() as append:
            append.commit_uuid = attempt_uuid(run.attempt)  # as pyiceberg's own append does
            for path in files:
                append.append_data_file(parquet_file_to_data_file(table.io, tx.table_metadata, path))
        return tx

    def read_published(self, run: Run) -> pa.RecordBatchReader:
        """The published run read back exactly (``Capabilities.reads_back``): the data files its
        snapshot added, in the order the commit listed them (by name: part, then file), one file at a
        time. FileNotFoundError when the history holds no snapshot of ``run.attempt``."""
        table = self.layout.load(run.dataset, create=False)
        snapshot = None if table is None else published_snapshot(table, run.run_id)
        if (
            table is None
            or snapshot is None
            or snapshot.summary.additional_properties.get(SUMMARY_ATTEMPT) != run.attempt
        ):
            raise FileNotFoundError(
                f"{self.layout.describe(run.dataset)} holds no snapshot of {run.run_id} by attempt {run.attempt}"
            )
        paths = sorted(added_files(table, snapshot))
        fs, first = self.layout.filesystem(paths[0])
        schema = pq.read_schema(first, filesystem=fs)

        def batches() -> Any:
            for path in paths:
                filesystem, inside = self.layout.filesystem(path)
                with filesystem.open_input_file(inside) as source:
                    for batch in pq.ParquetFile(source).iter_batches():
                        yield batch if batch.schema == schema else batch.cast(schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def discard(self, run: Run, staged: Sequence[Staged]) -> None:
        table = self.layout.load(run.dataset)
        if table is None:
            return
        for attempt in sorted({run.attempt} | {s.attempt for s in staged}):
            fs, base = self.layout.filesystem(self.layout.attempt_dir(table, Run(run.dataset, run.run_date, attempt)))
            with contextlib.suppress(FileNotFoundError, OSError):
                fs.delete_dir(base)


class _DataFileWriter:
    """One Parquet data file, hashed on the way out (on a second thread, like the file sink)."""

    def __init__(self, fs: Any, path: str, schema: pa.Schema) -> None:
        self._stream = fs.open_output_stream(path)
        self._sink = HashingWriter(self._stream)
        self._writer = parquet_writer(self._sink, schema, compression="zstd")  # columns on threads

    @property
    def size(self) -> int:
        return self._sink.size

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table, row_group_size=table.num_rows)

    def finish(self) -> str:
        try:
            self._writer.close()
        finally:
            digest = self._sink.finish()
            self._stream.close()
        return digest
