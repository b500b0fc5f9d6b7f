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
import json
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import LocalFileSystem
from pydantic import Field, SecretStr, field_validator, model_validator

from ._arrow import rechunk
from ._crash import crash_point
from ._errors import (
    CommitAborted,
    CommitOutcomeUnknown,
    CommitRejected,
    DestinationUnavailable,
    InputError,
    LostRace,
    SchemaMismatch,
    UnsafeLayout,
    first_line,
)
from ._fs import HashingWriter
from ._lease import Lease, local_conditional, unconditional
from ._protocol import Capabilities, ProgressCallback, SinkDefinition, SinkOptions
from ._types import Receipt, Run, Staged, check_parts, combine_checksums, part_suffix

log = logging.getLogger("atomic_publish.iceberg")

SUMMARY_RUN_ID = "atomic-publish.run-id"
SUMMARY_ATTEMPT = "atomic-publish.attempt"
SUMMARY_ROWS = "atomic-publish.rows"
SUMMARY_CHECKSUM = "atomic-publish.checksum"
DATA_SUBDIR = "data/atomic-publish"
_ATTEMPT_NAMESPACE = uuid.UUID("6f1d3c9e-8a55-4b4e-9a1e-61746f6d6963")
_COMMIT_TRIES = 5
# With no catalog configured here or in pyiceberg's own configuration: a SQLite catalog and a local
# warehouse, resolved against the working directory (`publish --sink iceberg` needs nothing else).
EMBEDDED_CATALOG = {"type": "sql", "uri": "sqlite:///data/iceberg/catalog.db", "warehouse": "data/iceberg/warehouse"}
# pyiceberg's own default (write.parquet.row-group-limit): what Iceberg readers expect; it also
# bounds the memory a stage holds, whatever the input size.
ROW_GROUP_ROWS = 1_048_576


def attempt_uuid(attempt: str) -> uuid.UUID:
    """The commit uuid of an attempt: pyiceberg puts it in its manifest file names, which makes
    manifests of a commit that never landed attributable to the attempt that wrote them."""
    return uuid.uuid5(_ATTEMPT_NAMESPACE, attempt)


class IcebergSinkConfig(SinkOptions):
    """Options of a ``type = "iceberg"`` sink. Catalog properties are pyiceberg's own; anything a
    ``.pyiceberg.yaml`` or ``PYICEBERG_CATALOG__<NAME>__...`` variable sets for ``catalog_name``
    applies too (secrets belong there or in the environment, never in publish.toml)."""

    type: Literal["iceberg"] = "iceberg"
    catalog_name: str = "default"
    catalog: dict[str, str | SecretStr] | None = Field(
        default=None,
        description="pyiceberg catalog properties (type, uri, warehouse, s3.endpoint, ...), merged over "
        "pyiceberg's own configuration for catalog_name (.pyiceberg.yaml, PYICEBERG_CATALOG__<NAME>__*); "
        "with neither, the embedded default: a SQLite catalog and a warehouse under ./data/iceberg",
    )
    namespace: str = "default"
    table: str | None = Field(default=None, description="default: the dataset name")
    mode: Literal["append", "replace_partition"] = "append"
    partition_column: str | None = None
    target_file_mb: int = Field(default=128, gt=0, description="roll to a new data file past this size")
    lease_seconds: int = Field(default=60, ge=5)
    work_location: str | None = Field(
        default=None, description="where leases live; default <warehouse>/_atomic_publish"
    )

    @field_validator("catalog")
    @classmethod
    def _catalog_secrets(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from ._secrets import hide_secret_values

        return None if value is None else hide_secret_values(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        from . import _names

        return _names.iceberg_namespace(value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        from . import _names

        return None if value is None else _names.iceberg_table(value)

    @model_validator(mode="after")
    def _partition(self) -> IcebergSinkConfig:
        if self.mode == "replace_partition" and not self.partition_column:
            raise ValueError("mode = 'replace_partition' needs partition_column")
        return self

    def catalog_properties(self, *, create: bool = True) -> dict[str, str]:
        """The catalog properties, with local paths resolved (relative ones against the working
        directory, so the embedded default works out of the box into ./data/iceberg), and every
        wait on a Postgres-backed SQL catalog bounded (connect, TCP, statements, locks). With
        ``create=False`` (diagnose), nothing is created on disk."""
        props = self.merged_catalog()
        uri = props.get("uri", "")
        if uri.startswith("sqlite:///"):
            path = Path(uri[len("sqlite:///") :]).resolve()  # sqlite:////abs is "/" + an absolute path
            if create:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DestinationUnavailable(
                        f"cannot create {path.parent} for the catalog: {exc.strerror}"
                    ) from exc
            props["uri"] = f"sqlite:///{path}"
        elif uri.startswith(("postgresql", "postgres")):
            props["uri"] = _bounded_postgres_uri(uri, self)
        warehouse = props.get("warehouse")
        if warehouse and "://" not in warehouse:
            path = Path(warehouse).resolve()
            if create:
                path.mkdir(parents=True, exist_ok=True)
            props["warehouse"] = path.as_uri()
        # pyiceberg's S3 FileIO waits forever by default: bounded like every request of the sink.
        props.setdefault("s3.connect-timeout", str(self.timeout_seconds))
        props.setdefault("s3.request-timeout", str(self.timeout_seconds))
        return props

    def merged_catalog(self) -> dict[str, str]:
        """pyiceberg's own configuration for ``catalog_name`` with this sink's ``catalog`` table over
        it (exactly as pyiceberg's ``load_catalog`` merges them); the embedded default when there is
        neither."""
        from pyiceberg.utils.config import Config

        own = {k: str(v) for k, v in (Config().get_catalog_config(self.catalog_name) or {}).items()}
        if not own and self.catalog is None:
            return dict(EMBEDDED_CATALOG)
        from ._secrets import reveal

        return {**own, **reveal(self.catalog or {})}

    @model_validator(mode="after")
    def _catalog_is_complete(self) -> IcebergSinkConfig:
        props = self.merged_catalog()
        uri = props.get("uri", "")
        if props.get("type", "sql") == "sql" and uri:
            from sqlalchemy.engine import make_url

            try:
                make_url(uri)
            except Exception:
                from ._names import show
                from ._secrets import redact

                raise ValueError(
                    f"catalog.uri = {show(redact(uri))} is not a database URL (e.g. sqlite:///path/catalog.db)"
                ) from None
        kind = props.get("type", "rest" if "uri" in props and props["uri"].startswith("http") else "")
        if kind == "sql":
            missing = [key for key in ("uri", "warehouse") if not props.get(key)]
            if missing:
                raise ValueError(
                    f'a SQL catalog needs {" and ".join(missing)} (e.g. uri = "sqlite:///data/catalog.db", '
                    'warehouse = "data/warehouse"), in [sinks.<name>.catalog] or pyiceberg\'s own configuration'
                )
        return self

    def sqlite_file(self) -> Path | None:
        """The SQLite file of a SQL catalog on SQLite, else None."""
        uri = self.catalog_properties(create=False).get("uri", "")
        return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _bounded_postgres_uri(uri: str, config: IcebergSinkConfig) -> str:
    """libpq settings for the catalog's SQLAlchemy engine (passed through the URL's query): every
    wait bounded, and a session whose client vanished mid-transaction ended by the server."""
    import urllib.parse

    ms = lambda seconds: str(int(seconds * 1000))  # noqa: E731
    extra = {
        "connect_timeout": str(int(min(config.timeout_seconds, 10))),
        "keepalives": "1",
        "keepalives_idle": "5",
        "keepalives_interval": "2",
        "keepalives_count": "3",
        "tcp_user_timeout": ms(config.timeout_seconds),
        "options": f"-c statement_timeout={ms(config.timeout_seconds)} -c lock_timeout={ms(config.timeout_seconds)}"
        f" -c idle_in_transaction_session_timeout={ms(config.commit_timeout_seconds)}",
    }
    parts = urllib.parse.urlsplit(uri)
    query = dict(urllib.parse.parse_qsl(parts.query))
    for key, value in extra.items():
        query.setdefault(key, value)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote)))


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema the data files are written in: what the Iceberg table keeps, in Arrow's small
    types. Lossless widenings first (Iceberg has no unsigned, half-float, date64, time32 or dictionary
    types: uint32 becomes long, not pyiceberg's int). A timestamp with a time zone is an instant
    (Arrow keeps UTC epoch values whatever the zone's name): timestamptz, labelled UTC (Spark sends
    its session zone, e.g. Etc/UTC). A type Iceberg cannot keep is refused here, naming the column,
    before any table is created."""
    from pyiceberg.io.pyarrow import (
        _pyarrow_schema_ensure_small_types,
        _pyarrow_to_schema_without_ids,
        schema_to_pyarrow,
    )
    from pyiceberg.schema import assign_fresh_schema_ids

    fields = []
    for field in schema:
        typ = _widened(field.name, field.type)
        try:
            iceberg = assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(pa.schema([field.with_type(typ)])))
        except Exception as exc:
            raise SchemaMismatch(
                f"column {field.name!r} is {field.type}, which an Iceberg table cannot store ({first_line(exc)})"
            ) from None
        written = _pyarrow_schema_ensure_small_types(schema_to_pyarrow(iceberg, include_field_ids=False))
        fields.append(written.field(0).with_nullable(field.nullable))
    return pa.schema(fields)


def _widened(name: str, typ: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(typ):
        return _widened(name, typ.value_type)
    if pa.types.is_timestamp(typ):
        if typ.unit == "ns":
            raise SchemaMismatch(f"column {name!r} is timestamp[ns]; Iceberg v2 keeps microseconds")
        return pa.timestamp("us", tz=None if typ.tz is None else "UTC")
    if pa.types.is_time(typ):
        if typ.unit == "ns":
            raise SchemaMismatch(f"column {name!r} is time64[ns]; Iceberg keeps microseconds")
        return pa.time64("us")
    if pa.types.is_null(typ):
        raise SchemaMismatch(f"column {name!r} has only nulls and no type: give it one (Iceberg v2 has no null type)")
    widenings = {
        pa.uint8(): pa.int32(),
        pa.uint16(): pa.int32(),
        pa.uint32(): pa.int64(),
        pa.uint64(): pa.int64(),  # values above 2**63-1 are refused when the batch is cast
        pa.float16(): pa.float32(),
        pa.date64(): pa.date32(),
    }
    return widenings.get(typ, typ)


def _promotion(data: pa.DataType, table: pa.DataType) -> bool:
    """The lossless promotions Iceberg allows from the data's type to the table's."""
    return (pa.types.is_int32(data) and pa.types.is_int64(table)) or (
        pa.types.is_float32(data) and pa.types.is_float64(table)
    )


def _bound_rest_requests(catalog: Any, seconds: float) -> None:
    """A REST catalog's HTTP session sends every request with no timeout (pyiceberg sets none and
    has no property for it): a catalog that stops answering would hang publish and diagnose. Each
    request now gets ``timeout_seconds`` to connect and to read, unless its caller gave one."""
    session = getattr(catalog, "_session", None)
    if session is None or getattr(session, "_atomic_publish_bounded", False):
        return
    session.request = _timeout_by_default(session.request, seconds)
    session._atomic_publish_bounded = True


def _timeout_by_default(send: Any, seconds: float) -> Any:
    """``send`` (a requests ``request``), with ``timeout=(seconds, seconds)`` unless its caller gave one."""

    def request(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", (seconds, seconds))
        return send(*args, **kwargs)

    return request


@contextlib.contextmanager
def _first_requests_bounded(seconds: float) -> Iterator[None]:
    """While a catalog is built: a REST catalog fetches its config in its constructor, before its
    session can be bounded, so requests made meanwhile get the bound by default."""
    try:
        import requests
    except ImportError:
        yield
        return
    unbounded = requests.Session.request
    requests.Session.request = _timeout_by_default(unbounded, seconds)  # type: ignore[method-assign]
    try:
        yield
    finally:
        requests.Session.request = unbounded  # type: ignore[method-assign]


class CatalogMissing(Exception):
    """A read-only look found no catalog to read (its SQLite file does not exist)."""


# Catalogs and FileIOs are costly to build (a SQL catalog opens an engine and checks its tables;
# measured 60-90 ms each) and the publisher and its diagnostic need the same ones, several times per
# run: one of each per configuration and process.
_shared: dict[str, Any] = {}
_ios: dict[str, Any] = {}


class IcebergLayout:
    def __init__(self, config: IcebergSinkConfig) -> None:
        self.config = config
        # The cache key: the options, and a digest of the catalog table's plain values (a secret prints
        # as ********** in the dump, and two credentials must not share one catalog).
        from ._secrets import reveal

        plain = json.dumps(reveal(config.catalog or {}), sort_keys=True, default=str)
        self._key = config.model_dump_json() + hashlib.sha256(plain.encode()).hexdigest()

    def catalog(self, *, create: bool = True) -> Any:
        """The catalog, shared per configuration and process. ``create=False`` (diagnose) creates
        nothing: a SQLite catalog whose file is missing raises CatalogMissing, and a catalog's own
        tables are not created. A catalog opened for writing serves reads too."""
        if self._key in _shared:
            return _shared[self._key]
        read_only = self._key + "/read-only"
        if not create and read_only in _shared:
            return _shared[read_only]
        from pyiceberg.catalog import load_catalog

        properties = self.config.catalog_properties(create=create)
        if not create:
            sqlite = self.config.sqlite_file()
            if sqlite is not None and not sqlite.exists():
                raise CatalogMissing(f"the catalog database {sqlite} does not exist")
            properties["init_catalog_tables"] = "false"
        for try_number in range(3):
            try:
                with _first_requests_bounded(self.config.timeout_seconds):
                    catalog = load_catalog(self.config.catalog_name, **properties)
                break
            except Exception as exc:
                # A SQL catalog creates its own tables on first use; two processes opening a
                # brand-new catalog at once race on that ("table iceberg_tables already exists").
                # The loser finds the tables made by the winner on the next try.
                if "already exists" not in str(exc) or try_number == 2:
                    raise
                time.sleep(0.1)
        _bound_rest_requests(catalog, self.config.timeout_seconds)
        _shared[self._key if create else read_only] = catalog
        return catalog

    def identifier(self, dataset: str) -> tuple[str, str]:
        from . import _names

        if self.config.table:
            return (self.config.namespace, self.config.table)
        try:
            return (self.config.namespace, _names.iceberg_table(dataset, "table (the dataset name; set `table`)"))
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def describe(self, dataset: str) -> str:
        return ".".join(self.identifier(dataset))

    def load(self, dataset: str, *, create: bool = True) -> Any | None:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        catalog = self.catalog(create=create)
        try:
            return catalog.load_table(self.identifier(dataset))
        except (NoSuchTableError, NoSuchNamespaceError):
            return None
        except Exception as exc:
            # A read-only look at a SQL catalog whose own tables were never created.
            if not create and "iceberg_tables" in str(exc):
                raise CatalogMissing(f"the catalog {self.config.catalog_name} has no tables yet") from None
            raise

    def run_dir(self, table: Any, run_date: dt.date) -> str:
        return self._inside(table.location(), self._run_path(table, run_date))

    def attempt_dir(self, table: Any, run: Run) -> str:
        return self._inside(table.location(), f"{self._run_path(table, run.run_date)}/{run.attempt}")

    @staticmethod
    def _run_path(table: Any, run_date: dt.date) -> str:
        return f"{table.location().rstrip('/')}/{DATA_SUBDIR}/{run_date.isoformat()}"

    @staticmethod
    def _inside(base: str, path: str) -> str:
        """``path``, proven (resolved: '..', symlinks) to be under the table's location: what the
        sink writes and recover removes never leaves the table."""
        from . import _names

        try:
            _names.inside(base, path)
        except ValueError as exc:
            raise UnsafeLayout(str(exc)) from None
        return path

    def work_location(self) -> str:
        if self.config.work_location:
            return self.config.work_location.rstrip("/")
        warehouse = self.config.catalog_properties(create=False).get("warehouse")
        if not warehouse or "://" not in warehouse:
            raise UnsafeLayout("the catalog has no warehouse path; set work_location for the run leases")
        return warehouse.rstrip("/") + "/_atomic_publish"

    def lease_path(self, dataset: str, run_date: dt.date) -> str:
        ns, name = self.identifier(dataset)
        return f"{self.work_location()}/{ns}/{name}/{run_date.isoformat()}.lease.json"

    def filesystem(self, location: str) -> tuple[Any, str]:
        """A pyarrow filesystem for ``location`` configured like the catalog's FileIO, and the path."""
        from pyiceberg.io.pyarrow import PyArrowFileIO

        if self._key not in _ios:
            _ios[self._key] = PyArrowFileIO(self.config.catalog_properties(create=False))
        scheme, netloc, path = PyArrowFileIO.parse_location(location)
        io = _ios[self._key]
        return io.fs_by_scheme(scheme, netloc), path


def history(table: Any) -> list[Any]:
    """Snapshots of the current history of main (newest first): what readers can reach."""
    snapshot = table.current_snapshot()
    out = []
    while snapshot is not None:
        out.append(snapshot)
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return out


def published_snapshot(table: Any, run_id: str) -> Any | None:
    for snapshot in history(table):
        summary = snapshot.summary
        if summary is not None and summary.additional_properties.get(SUMMARY_RUN_ID) == run_id:
            return snapshot
    return None


def run_lease(layout: IcebergLayout, run: Run) -> Lease:
    """The run's lease, a JSON file beside the warehouse (see publishers._lease)."""
    location = layout.lease_path(run.dataset, run.run_date)
    fs, path = layout.filesystem(location)

    def read() -> bytes | None:
        try:
            with fs.open_input_stream(path) as fh:
                return bytes(fh.read())
        except FileNotFoundError:
            return None

    def write(data: bytes) -> None:
        try:
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(path) as fh:
                fh.write(data)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot write the run's lease {location}: {exc}") from exc

    # On a local warehouse the lease is taken by compare-and-swap (two attempts never both hold
    # it); on an object store through pyarrow there is no conditional write, so it is evidence only.
    access = local_conditional(Path(path)) if isinstance(fs, LocalFileSystem) else unconditional(read, write)
    return Lease(run, layout.config.lease_seconds, location, access, lambda: fs.delete_file(path))


CAPABILITIES = Capabilities(max_parts=None)


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
            catalog = self.layout.catalog()
            try:
                catalog.create_namespace(self.config.namespace)
            except NamespaceAlreadyExistsError:
                pass
            except Exception as exc:
                # Two writers creating it at once (Spark tasks of a first run): the SQL catalog checks,
                # then inserts, and the loser's insert fails on the key. It exists now: go on.
                try:
                    exists = catalog.namespace_exists(self.config.namespace)
                except Exception:
                    raise exc from None
                if not exists:
                    raise
            try:
                table = catalog.create_table(self.layout.identifier(run.dataset), schema=schema)
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
        self.layout.catalog().drop_table(self.layout.identifier(run.dataset))
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
            # Row groups of ROW_GROUP_ROWS whatever the input batching: bigger groups read and
            # write faster (1M rows: 0.50 s at 65,536 rows a group, 0.43 s at 262,144, 0.36 s at 1M).
            for index, batch in enumerate(rechunk(batches, ROW_GROUP_ROWS)):
                if batch.schema != schema:
                    try:
                        batch = batch.cast(schema)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise SchemaMismatch(f"the data does not fit the Iceberg table: {first_line(exc)}") from None
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
                if loaded is not None and published_snapshot(loaded, run.run_id) is None:
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
            from pyiceberg.expressions import In

            values = [v for p in staged for v in p.details.get("partition_values", [])]
            if values and self.config.partition_column:
                # In.__new__ takes (term, literals); mypy reads the pydantic fields instead.
                delete_filter: Any = In(self.config.partition_column, values)  # type: ignore[call-arg,arg-type]
                tx.delete(delete_filter, snapshot_properties=props)
        with tx.update_snapshot(snapshot_properties=props).fast_append() as append:
            append.commit_uuid = attempt_uuid(run.attempt)  # as pyiceberg's own append does
            for path in files:
                append.append_data_file(parquet_file_to_data_file(table.io, tx.table_metadata, path))
        return tx

    def discard(self, run: Run, staged: Sequence[Staged]) -> None:
        table = self.layout.load(run.dataset)
        if table is None:
            return
        for attempt in sorted({run.attempt} | {s.attempt for s in staged}):
            fs, base = self.layout.filesystem(self.layout.attempt_dir(table, Run(run.dataset, run.run_date, attempt)))
            with contextlib.suppress(FileNotFoundError, OSError):
                fs.delete_dir(base)


def _bounded(call: Any, seconds: float) -> Any:
    """``call()`` on a daemon thread, waiting at most ``seconds``; TimeoutError past it. A catalog
    client that never answers (a lost reply, a stalled connection) cannot hold the publish forever;
    a commit that lands later anyway is settled by the diagnosis, and recover's fence stops it."""
    import concurrent.futures
    import threading

    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(call())
        except BaseException as exc:
            done.set_exception(exc)

    threading.Thread(target=run, name="catalog-commit", daemon=True).start()
    try:
        return done.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"no answer within {seconds:g} s") from None


class _DataFileWriter:
    """One Parquet data file, hashed on the way out (on a second thread, like the file sink)."""

    def __init__(self, fs: Any, path: str, schema: pa.Schema) -> None:
        self._stream = fs.open_output_stream(path)
        self._sink = HashingWriter(self._stream)
        self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd")

    @property
    def size(self) -> int:
        return self._sink.size

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_table(pa.Table.from_batches([batch]))

    def finish(self) -> str:
        try:
            self._writer.close()
        finally:
            digest = self._sink.finish()
            self._stream.close()
        return digest


def _make_diagnostic(config: IcebergSinkConfig) -> Any:
    from diagnostics.iceberg import IcebergDiagnostic

    return IcebergDiagnostic(config)


SINK = SinkDefinition(
    name="iceberg",
    config_model=IcebergSinkConfig,
    make_publisher=IcebergPublisher,
    make_diagnostic=_make_diagnostic,
    description="Apache Iceberg: Parquet data files + one snapshot carrying the run_id",
    capabilities=CAPABILITIES,
)
