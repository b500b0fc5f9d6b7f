"""The Iceberg sink's layout: its options, the catalog, where a run's data files and lease live, and
how a snapshot names its run. Shared by the publisher and the diagnostic, which never import each other."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from .._errors import (
    DestinationUnavailable,
    InputError,
    SchemaMismatch,
    UnsafeLayout,
    first_line,
)
from .._lease import Lease, local_conditional, unconditional
from .._protocol import Capabilities, SinkOptions
from .._types import Run

if TYPE_CHECKING:
    import pyarrow as pa

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
# Rows per Parquet row group of a data file, whatever the input batching: it bounds the memory a
# stage holds (pyiceberg's own default, write.parquet.row-group-limit, is 1,048,576: at that size a
# 1M-row publish peaked at 311 MB against 282 MB at 262,144). 98,304 (six 16,384-row chunks; ~13 MB
# of the refunds shape before encoding, ~3 MB after): 10M input rows peaked at 193-199 MB against
# 204-210 MB at 131,072 (215-218 MB before requests went) and 256-263 MB at 262,144, in the same
# time, for 1.9% more bytes (131,072: 150.9 MB; 65,536: 5.8% more, 185 MB peak). Readers read it
# as fast (pyarrow, whole file). DuckDB's own default is 122,880 (docs/performance.md).
ROW_GROUP_ROWS = 98_304


def attempt_uuid(attempt: str) -> uuid.UUID:
    """The commit uuid of an attempt: pyiceberg puts it in its manifest file names, which makes
    manifests of a commit that never landed attributable to the attempt that wrote them."""
    return uuid.uuid5(_ATTEMPT_NAMESPACE, attempt)


# pyiceberg's catalog types (pyiceberg.catalog.CatalogType; a test keeps the two the same).
CATALOG_TYPES = ("rest", "hive", "glue", "dynamodb", "sql", "in-memory", "bigquery")


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

    @field_validator("catalog", mode="before")
    @classmethod
    def _catalog_as_text(cls, value: Any) -> Any:
        from .._secrets import settings_as_text

        return settings_as_text(value)

    @field_validator("catalog")
    @classmethod
    def _catalog_secrets(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from .._secrets import hide_secret_values

        kind = (value or {}).get("type")
        if isinstance(kind, str) and kind.lower() not in CATALOG_TYPES and "py-catalog-impl" not in (value or {}):
            from .._names import show

            # Found from outside: a typo passed `sinks`, then diagnose said UNKNOWN and publish exit 5.
            raise ValueError(f"catalog.type = {show(kind)} is not a catalog type; one of: {', '.join(CATALOG_TYPES)}")
        return None if value is None else hide_secret_values(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        from .. import _names

        return _names.iceberg_namespace(value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        from .. import _names

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
        from .._secrets import reveal

        return {**own, **reveal(self.catalog or {})}

    @model_validator(mode="after")
    def _catalog_is_complete(self, info: ValidationInfo) -> IcebergSinkConfig:
        if info.context and info.context.get("without_client_library"):
            # A sink the command does not use (LoadedConfig.check_every_sink): its catalog is checked
            # when it is used, since that needs pyiceberg's configuration and SQLAlchemy (0.15 s).
            return self
        props = self.merged_catalog()
        uri = props.get("uri", "")
        if props.get("type", "sql") == "sql" and uri:
            from sqlalchemy.engine import make_url

            try:
                make_url(uri)
            except Exception:
                from .._names import show
                from .._secrets import redact

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
    import pyarrow as pa
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
    import pyarrow as pa

    if pa.types.is_dictionary(typ):
        return _widened(name, typ.value_type)
    # Inside lists, structs and maps too (a list of nanosecond timestamps was refused as "unsupported").
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        item = typ.value_field
        widened = item.with_type(_widened(name, item.type))
        if pa.types.is_fixed_size_list(typ):
            return pa.list_(widened, typ.list_size)
        return pa.large_list(widened) if pa.types.is_large_list(typ) else pa.list_(widened)
    if pa.types.is_map(typ):
        key, item = typ.key_field, typ.item_field
        return pa.map_(key.with_type(_widened(name, key.type)), item.with_type(_widened(name, item.type)))
    if pa.types.is_struct(typ):
        return pa.struct([typ.field(i).with_type(_widened(name, typ.field(i).type)) for i in range(typ.num_fields)])
    if pa.types.is_timestamp(typ):
        # Nanoseconds (pandas' datetime64[ns]) are taken when every value is a whole microsecond:
        # a value that is not is refused when its batch is written (_arrow.nanoseconds_refused).
        return pa.timestamp("us", tz=None if typ.tz is None else "UTC")
    if pa.types.is_time(typ):
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
    import pyarrow as pa

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


def _is_sql_catalog(properties: dict[str, str]) -> bool:
    """pyiceberg's SQL catalog, named or inferred as ``load_catalog`` infers it (no ``type``: from
    the uri's scheme); not a catalog of another implementation (``py-catalog-impl``)."""
    if properties.get("py-catalog-impl"):
        return False
    kind = properties.get("type")
    if kind is not None:
        return kind.lower() == "sql"
    return properties.get("uri", "").startswith(("sqlite", "postgresql"))


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
        from .._secrets import reveal

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
        # A SQL catalog sends no HTTP request: requests (and its SSL, ~5 MB, 40 ms) is not imported.
        http = not _is_sql_catalog(properties)
        for try_number in range(3):
            try:
                with _first_requests_bounded(self.config.timeout_seconds) if http else contextlib.nullcontext():
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
        from .. import _names

        if self.config.table:
            return (self.config.namespace, self.config.table)
        try:
            return (self.config.namespace, _names.iceberg_table(dataset, "table (the dataset name; set `table`)"))
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def describe(self, dataset: str) -> str:
        return ".".join(self.identifier(dataset))

    def bounded(self, call: Any, what: str) -> Any:
        """``call()`` (a catalog request) within ``timeout_seconds``, else DestinationUnavailable: a
        catalog that stops answering (found from outside: a Postgres-backed SQL catalog paused with
        SIGSTOP held a publish for as long as it stayed paused; its kernel still acknowledged every
        packet, so no TCP or server-side timeout fired) ends the call, and the publish with exit 5."""
        try:
            return _bounded(call, self.config.timeout_seconds)
        except TimeoutError:
            seconds = self.config.timeout_seconds
            raise DestinationUnavailable(
                f"the catalog {self.config.catalog_name} did not answer ({what}) within {seconds:g} s"
            ) from None

    def load(self, dataset: str, *, create: bool = True) -> Any | None:
        """The table of ``dataset``, or None; bounded like every catalog request (``bounded``)."""
        return self.bounded(lambda: self._load(dataset, create), f"loading {self.describe(dataset)}")

    def _load(self, dataset: str, create: bool) -> Any | None:
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
        from .. import _names

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


FENCE_PROPERTY = "atomic-publish.fence"  # recover's empty snapshot: the run_id; ".attempts": whom it fenced


def fences(table: Any, run: Run) -> bool:
    """Whether recover fenced this attempt of the run: it removed the attempt's staged files, so a
    commit of the attempt (stalled past its lease, then resumed) must never be made."""
    for snapshot in history(table):
        props = snapshot.summary.additional_properties if snapshot.summary is not None else {}
        fenced = props.get(f"{FENCE_PROPERTY}.attempts", "").split(",")
        if props.get(FENCE_PROPERTY) == run.run_id and run.attempt in fenced:
            return True
    return False


def published_snapshot(table: Any, run_id: str) -> Any | None:
    for snapshot in history(table):
        summary = snapshot.summary
        if summary is not None and summary.additional_properties.get(SUMMARY_RUN_ID) == run_id:
            return snapshot
    return None


def added_files(table: Any, snapshot: Any) -> dict[str, tuple[int, int]]:
    """Data files the snapshot added (path -> (size, rows)), from its own manifests only."""
    added: dict[str, tuple[int, int]] = {}
    for manifest in snapshot.manifests(table.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if entry.snapshot_id == snapshot.snapshot_id:
                added[entry.data_file.file_path] = (entry.data_file.file_size_in_bytes, entry.data_file.record_count)
    return added


def run_lease(layout: IcebergLayout, run: Run, *, purpose: str = "publish") -> Lease:
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
    from pyarrow.fs import LocalFileSystem

    access = local_conditional(Path(path)) if isinstance(fs, LocalFileSystem) else unconditional(read, write)
    return Lease(run, layout.config.lease_seconds, location, access, lambda: fs.delete_file(path), purpose=purpose)


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


CAPABILITIES = Capabilities(max_parts=None, reads_back=True, checks_schema=True)
