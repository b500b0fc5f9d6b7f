"""The Postgres sink's layout: its options, connections, the names of staging tables and sessions, the
ledger and the run lock. Shared by the publisher and the diagnostic, which never import each other."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from .._errors import (
    CommitRejected,
    ConfigError,
    ConfigRejected,
    DataRejected,
    DestinationUnavailable,
    InputError,
    RunInProgress,
    SchemaMismatch,
    first_line,
)
from .._lease import SHORT_SCOPE, gone_here, pid_scope
from .._protocol import Capabilities, SinkOptions
from .._types import Run, Staged, part_suffix

if TYPE_CHECKING:
    import pyarrow as pa  # imported where it is used: loading a configuration with a postgres sink needs none

log = logging.getLogger("atomic_publish.postgres")

STAGING_PREFIX = "_ap_stg_"
APPLICATION_PREFIX = "atomic-publish "
PREPARED_PREFIX = "atomic-publish:"
# First key of every advisory lock this project takes ('apub'); the second is derived from run_id.
LOCK_NAMESPACE = 0x61707562
_LOCK_WAIT_SECONDS = 2.0


def _check_identifier(value: str, what: str) -> str:
    """A Postgres identifier (publishers._names): 1-63 UTF-8 bytes of printable text, refused rather
    than silently truncated."""
    from .. import _names

    return _names.pg_identifier(value, what)


class PostgresSinkConfig(SinkOptions):
    """Options of a ``type = "postgres"`` sink. The password never goes here: libpq reads it from
    PGPASSWORD, a password file (~/.pgpass) or a service file, exactly as psql does."""

    type: Literal["postgres"] = "postgres"
    conninfo: str = Field(default="", description="libpq conninfo or URI, without password; PG* variables apply")
    schema_name: str = Field(default="public", alias="schema")
    table: str | None = Field(default=None, description="target table; default: the dataset name")
    key_columns: tuple[str, ...] = Field(min_length=1, description="MERGE key: the columns that identify a row")
    replace_partition_column: str | None = Field(
        default=None,
        description="if set, rows of the target whose value in this column occurs in the run's data "
        "but whose key is not in the run's data are deleted (the run replaces its partition)",
    )
    ledger_table: str = "atomic_publish_ledger"
    staging_schema: str | None = Field(default=None, description="default: the target's schema")
    connect_timeout_seconds: int = Field(default=10, gt=0)
    statement_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="server-side bound on one statement (the MERGE of a large run included)"
    )

    @field_validator("schema_name", "table", "ledger_table", "staging_schema", "replace_partition_column")
    @classmethod
    def _identifier(cls, value: str | None, info: Any) -> str | None:
        from .. import _names

        if value is None:
            return None
        field = "schema" if info.field_name == "schema_name" else info.field_name
        if field in ("schema", "staging_schema"):
            return _names.pg_schema(value, field)
        if field in ("table", "ledger_table"):
            return _names.pg_table(value, field)
        return _names.pg_identifier(value, field)

    @field_validator("key_columns")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for column in value:
            _check_identifier(column, "key column")
        if len(set(value)) != len(value):
            raise ValueError(f"key_columns {list(value)} repeats a column")
        return value

    @field_validator("conninfo")
    @classmethod
    def _no_password(cls, value: str) -> str:
        # Checked without importing psycopg when libpq's plain syntax is enough (the parse is the
        # same): 0.11 s of every publish to another sink of the same publish.toml, and a publish to
        # this one imports it while ADBC's connection opens (PostgresPublisher.run_lock).
        try:
            params = conninfo_params(value)
        except Exception:
            raise ValueError("conninfo is not a valid libpq connection string or URI") from None
        if "password" in params:
            raise ValueError("conninfo contains a password; put it in PGPASSWORD, ~/.pgpass or a service file instead")
        # libpq refuses a bad port at connect time ("invalid integer value"), which read as a server
        # that is down (exit 5) where the configuration is what needs fixing (found from outside).
        # Its other integer options the sink sets itself (connection_params). A port is a list, one
        # per host; an empty item is the default port, and libpq takes a sign and spaces.
        for item in str(params.get("port", "")).split(","):
            if item.strip() and (not re.fullmatch(r"\s*[+-]?\d+\s*", item) or not 0 < int(item) < 65536):
                raise ValueError(f"conninfo port={params['port']!r} is not a valid port")
        return value

    @model_validator(mode="after")
    def _partition_is_not_a_key(self) -> PostgresSinkConfig:
        if self.replace_partition_column and self.replace_partition_column in self.key_columns:
            raise ValueError("replace_partition_column must not be one of the key_columns")
        return self


# libpq's keywords from PostgreSQL 15 on (libpq 18 has these and more), but requiressl (which libpq
# turns into sslmode): the ones parse_plain_conninfo takes. Checked against the linked libpq by a test.
PLAIN_CONNINFO_KEYWORDS = frozenset(
    {
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "dbname",
        "fallback_application_name",
        "gssencmode",
        "host",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "options",
        "passfile",
        "password",
        "port",
        "replication",
        "require_auth",
        "requirepeer",
        "service",
        "sslcert",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslmode",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "tcp_user_timeout",
        "user",
    }
)
_C_SPACE = " \t\n\v\f\r"  # C's isspace()


def conninfo_params(conninfo: str) -> dict[str, Any]:
    """A connection string's keywords as libpq reads them: ``parse_plain_conninfo`` when it can
    (no psycopg import), else psycopg's ``conninfo_to_dict`` (which raises on a bad string)."""
    params: dict[str, Any] | None = parse_plain_conninfo(conninfo)
    if params is None:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(conninfo)
    return params


def parse_plain_conninfo(text: str) -> dict[str, str] | None:
    """A libpq ``key = value`` connection string as libpq's own parser reads it (``conninfo_parse``
    in fe-connect.c: values bare or single-quoted, backslash escapes, the last of a repeated key),
    without importing psycopg; the same dict as psycopg's ``conninfo_to_dict``. None for anything
    else (a URI, a keyword not in PLAIN_CONNINFO_KEYWORDS, a character outside ASCII, a syntax
    error): then psycopg's parser decides. Property-tested against psycopg's."""
    if text.startswith(("postgresql://", "postgres://")) or not text.isascii() or "\0" in text:
        return None
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        if text[i] in _C_SPACE:
            i += 1
            continue
        start = i
        while i < n and text[i] != "=" and text[i] not in _C_SPACE:
            i += 1
        name = text[start:i]
        while i < n and text[i] in _C_SPACE:
            i += 1
        if i == n or text[i] != "=" or name not in PLAIN_CONNINFO_KEYWORDS:
            return None
        i += 1
        while i < n and text[i] in _C_SPACE:
            i += 1
        value: list[str] = []
        quoted = i < n and text[i] == "'"
        i += quoted
        while True:
            if i == n:
                if quoted:
                    return None  # unterminated quoted string
                break
            char = text[i]
            i += 1
            if char == "\\":
                if i < n:
                    value.append(text[i])
                    i += 1
            elif char == "'" if quoted else char in _C_SPACE:
                break  # the end of the value
            else:
                value.append(char)
        params[name] = "".join(value)
    return params


# -- names --------------------------------------------------------------------------------------


def dataset_hash(dataset: str) -> str:
    return hashlib.sha256(dataset.encode()).hexdigest()[:8]


def staging_prefix(dataset: str, run_date: dt.date | None = None) -> str:
    prefix = f"{STAGING_PREFIX}{dataset_hash(dataset)}_"
    return prefix + run_date.strftime("%Y%m%d") + "_" if run_date else prefix


def staging_table_name(run: Run, part: int = 0, token: str = "") -> str:
    # _ap_stg_ + 8 + _ + 8 + _ + 22 = 48 bytes, + _p<5>_<4> = 60 for a part: always a valid
    # identifier, whatever the dataset.
    suffix = part_suffix(part, token).replace("-", "_")
    return attempt_table_prefix(run) + (f"_{suffix}" if suffix else "")


def attempt_table_prefix(run: Run) -> str:
    """Every staging table of one attempt starts with this (its parts add ``_p<part>_<token>``)."""
    return staging_prefix(run.dataset, run.run_date) + run.attempt.replace("-", "").lower()


_STAGING_RE = re.compile(
    r"_ap_stg_(?P<ds>[0-9a-f]{8})_(?P<date>\d{8})_(?P<attempt>\d{8}t\d{6}z[0-9a-f]{6})(?:_p\d{5}(?:_[0-9a-f]{4})?)?"
)


def parse_staging_name(name: str) -> tuple[str, dt.date, str] | None:
    """(dataset hash, run date, attempt id) of a staging table name, or None."""
    m = _STAGING_RE.fullmatch(name)
    if not m:
        return None
    a = m.group("attempt")
    attempt = f"{a[:8]}T{a[9:15]}Z-{a[16:]}"
    try:
        return m.group("ds"), dt.datetime.strptime(m.group("date"), "%Y%m%d").date(), attempt
    except ValueError:
        return None


def run_lock_key(run_id: str, ledger: str) -> tuple[int, int]:
    """The advisory lock of a run in one ledger (``schema.ledger_table``): advisory locks are
    database-wide, and the same run published into two schemas is two runs."""
    second = int.from_bytes(hashlib.sha256(f"{ledger}\n{run_id}".encode()).digest()[:4], "big", signed=True)
    return LOCK_NAMESPACE, second


def adbc_uri(conninfo: str, extra: dict[str, Any] | None = None) -> str:
    """ADBC's driver wants a URI; libpq accepts every keyword as a URI query parameter."""
    if conninfo.startswith(("postgresql://", "postgres://")):
        if not extra:
            return conninfo
        joiner = "&" if "?" in conninfo else "?"
        return (
            conninfo
            + joiner
            + urllib.parse.urlencode({k: str(v) for k, v in extra.items()}, quote_via=urllib.parse.quote)
        )
    params = {k: str(v) for k, v in {**conninfo_params(conninfo), **(extra or {})}.items()}
    return "postgresql://" + (("?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)) if params else "")


def redact(message: str) -> str:
    """Hide passwords (the environment's PGPASSWORD, any in a URL or conninfo) in a message."""
    from .._secrets import redact as hide

    return hide(message)


# -- types --------------------------------------------------------------------------------------


def pg_type(arrow_type: pa.DataType) -> str:
    """The Postgres column type for an Arrow type (the form ``format_type`` prints)."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        return pg_type(arrow_type.value_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    if pa.types.is_int64(arrow_type) or pa.types.is_uint32(arrow_type):
        return "bigint"
    if pa.types.is_uint64(arrow_type):  # above bigint's range; ADBC writes it as a numeric
        return "numeric(20,0)"
    if pa.types.is_int32(arrow_type) or pa.types.is_uint16(arrow_type):
        return "integer"
    if pa.types.is_int16(arrow_type) or pa.types.is_int8(arrow_type) or pa.types.is_uint8(arrow_type):
        return "smallint"
    if pa.types.is_float64(arrow_type):
        return "double precision"
    if pa.types.is_float32(arrow_type):
        return "real"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp with time zone" if arrow_type.tz else "timestamp without time zone"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_time(arrow_type):  # nanoseconds are taken as microseconds (_arrow.as_microseconds)
        return "time without time zone"
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "bytea"
    raise SchemaMismatch(f"Arrow type {arrow_type} has no Postgres column type in this sink")


class PostgresLayout:
    """Every name the Postgres sink and its diagnostic use, composed as SQL identifiers."""

    def __init__(self, config: PostgresSinkConfig) -> None:
        self.config = config
        self.schema = config.schema_name
        self.staging_schema = config.staging_schema or config.schema_name

    def table_name(self, dataset: str) -> str:
        from .. import _names

        if self.config.table:
            return self.config.table
        try:
            return _names.pg_table(dataset, "table (the dataset name; set `table` to choose another)")
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def target(self, dataset: str) -> Any:
        from psycopg import sql

        return sql.Identifier(self.schema, self.table_name(dataset))

    def ledger(self) -> Any:
        from psycopg import sql

        return sql.Identifier(self.schema, self.config.ledger_table)

    def staging(self, run: Run, part: int = 0, token: str = "") -> Any:
        from psycopg import sql

        return sql.Identifier(self.staging_schema, staging_table_name(run, part, token))

    def staged_table(self, staged: Staged) -> Any:
        from psycopg import sql

        return sql.Identifier(self.staging_schema, staged.details["staging_table"])

    def describe(self, dataset: str) -> str:
        return f"{self.schema}.{self.table_name(dataset)}"

    def lock_key(self, run_id: str) -> tuple[int, int]:
        return run_lock_key(run_id, f"{self.schema}.{self.config.ledger_table}")


# -- connections --------------------------------------------------------------------------------


def application_name(attempt: str, role: str = "") -> str:
    """``atomic-publish <role><attempt> <pid>#<scope>@<host>``: what pg_stat_activity shows for an
    attempt's sessions, so a diagnosis can tell a live attempt's session from a dead client's (a
    zombie that the server keeps until it notices the connection is gone). ``scope`` (a tag of
    ``_lease.pid_scope``, before the host, which the 63-byte limit may cut) says where the pid names
    the client: only a diagnosis in the same host, boot and PID namespace judges it by its pid."""
    name = f"{APPLICATION_PREFIX}{role}{attempt} {os.getpid()}#{pid_scope()[:SHORT_SCOPE]}@{socket.gethostname()}"
    return name.encode()[:63].decode(errors="ignore")


def parse_application_name(name: str | None) -> tuple[str | None, int | None, str | None, str | None]:
    """(attempt, client pid, client host prefix, pid scope tag) of an application_name written
    above (a name without a scope tag, of a version before it: None)."""
    if not name or not name.startswith(APPLICATION_PREFIX):
        return None, None, None, None
    parts = name[len(APPLICATION_PREFIX) :].split(" ")
    attempt = parts[-2] if len(parts) >= 2 else parts[0]
    client, _, host = parts[-1].partition("@") if len(parts) >= 2 else ("", "", "")
    pid_text, _, scope = client.partition("#")
    return attempt, int(pid_text) if pid_text.isdigit() else None, host or None, scope or None


def client_is_gone(name: str | None) -> bool:
    """A session whose application_name names a client that is provably gone: in this process's
    own pid scope (host, boot, PID namespace: not merely a hostname that starts the same, as
    worker-1 and worker-10 do), under a pid that no longer runs."""
    _, pid, _, scope = parse_application_name(name)
    return gone_here(scope, pid)


def connection_params(config: PostgresSinkConfig, application: str) -> dict[str, Any]:
    """Every wait bounded: connect, TCP (keepalives, tcp_user_timeout: a dead server or network is
    noticed), and on the server each statement, each lock wait, and a transaction left idle (the
    server ends the session of a client that vanished mid-transaction)."""
    ms = lambda seconds: str(int(seconds * 1000))  # noqa: E731
    options = (
        f"-c statement_timeout={ms(config.statement_timeout_seconds)} -c lock_timeout={ms(config.timeout_seconds)}"
        f" -c idle_in_transaction_session_timeout={ms(config.commit_timeout_seconds)}"
    )
    return {
        "application_name": application,
        "connect_timeout": config.connect_timeout_seconds,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": ms(config.timeout_seconds),
        "options": options,
    }


def describe_server(config: PostgresSinkConfig) -> str:
    """host:port/dbname of the configured server, for messages (never the password)."""
    try:
        p = conninfo_params(config.conninfo)
    except Exception:
        p = {}
    host = p.get("host") or os.environ.get("PGHOST") or "localhost"
    port = p.get("port") or os.environ.get("PGPORT") or "5432"
    db = p.get("dbname") or os.environ.get("PGDATABASE") or ""
    return f"Postgres at {host}:{port}" + (f"/{db}" if db else "")


# libpq's messages for a login the server refused (not a server down or unreachable).
_REFUSED_LOGIN = re.compile(
    r'authentication failed for user|database "[^"]*" does not exist|role "[^"]*" does not exist|no pg_hba\.conf entry'
    r"|is not permitted to log in|permission denied for database"
)


def connect(config: PostgresSinkConfig, application: str, *, autocommit: bool = False) -> Any:
    import psycopg

    try:
        return psycopg.connect(config.conninfo, autocommit=autocommit, **connection_params(config, application))
    except psycopg.OperationalError as exc:
        # libpq's own checks of the options (PGPORT=abc, sslmode, two ports for one host): no server
        # was asked, and re-running will not help (found from outside: "port=5432," was exit 5).
        if re.search(r'for connection option|invalid \w+ value: "|could not match \d+ ', str(exc)):
            raise ConfigError(f"cannot connect to {describe_server(config)}: {redact(first_line(exc))}") from None
        if _REFUSED_LOGIN.search(str(exc)):
            # The server answered and refused this login: a re-run gets the same answer (found from
            # outside: a wrong password or database name was exit 5, "re-run when it is back").
            raise ConfigError(
                f"cannot connect to {describe_server(config)}: {redact(first_line(exc))} (the server refused this "
                "login: fix conninfo, PGPASSWORD or ~/.pgpass, or the role's access)"
            ) from None
        raise DestinationUnavailable(
            f"cannot connect to {describe_server(config)}: {redact(first_line(exc))}"
        ) from None


@contextlib.contextmanager
def deadline(conn: Any, seconds: float) -> Iterator[dict[str, bool]]:
    """Bound the statements run in the block from the client side: past ``seconds``, the socket is
    shut down, so a statement waiting for an answer that never comes (lost in the network) fails
    at once instead of blocking forever. ``state["expired"]`` tells the caller it was the deadline."""
    state = {"expired": False}
    fd = conn.pgconn.socket

    def expire() -> None:
        state["expired"] = True
        _shut_down(fd)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield state
    finally:
        timer.cancel()


class _StallWatchdog:
    """Bounds a bulk load from the client side (ADBC has no client timeout, and a lost request or
    answer is not seen by TCP when something in between acknowledges it): while the block runs, if
    no batch is taken from the input and no answer comes for ``seconds``, the load's sockets are shut
    down, so the blocked call fails at once. A batch taken is progress; after the last one the
    server has ``seconds`` to answer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._fds: list[int] = []
        self._last = time.monotonic()
        self._in_input = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def sockets_opened_by(self, connect: Callable[[], Any]) -> Iterator[Any]:
        before = open_sockets()
        conn = connect()
        with self.guarding(conn, opened_since(before)):
            yield conn

    @contextlib.contextmanager
    def guarding(self, conn: Any, sockets: Iterable[int]) -> Iterator[Any]:
        """``conn`` (closed at the end), whose ``sockets`` a stall shuts down."""
        self._fds = sorted(sockets)
        with conn:
            yield conn

    def watch(self, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        """The input, timed: waiting for the input (a slow job upstream) is never a stall."""
        import pyarrow as pa

        def batches() -> Iterator[pa.RecordBatch]:
            upstream = iter(reader)
            while True:
                self._in_input = True
                try:
                    batch = next(upstream, None)
                finally:
                    self._in_input = False
                    self._last = time.monotonic()
                if batch is None:
                    return
                yield batch

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def __enter__(self) -> _StallWatchdog:
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bulk-load-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            if not self._in_input and time.monotonic() - self._last > self.seconds:
                self.expired = True
                for fd in self._fds:
                    _shut_down(fd)
                return


def _shut_down(fd: int) -> None:
    """Shut a connection's socket down under its driver: a call blocked on it fails at once."""
    with contextlib.suppress(OSError):
        dup = socket.socket(fileno=os.dup(fd))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()


def open_sockets() -> set[tuple[int, str]]:
    """The sockets of this process: (file descriptor, ``socket:[inode]``), so that a descriptor
    closed and reused for another socket is told apart."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{name}")
            if link.startswith("socket:"):
                found.add((int(name), link))
    return found


def opened_since(before: set[tuple[int, str]]) -> set[int]:
    """The descriptors of the sockets open now that were not open at ``before``."""
    return {fd for fd, _ in open_sockets() - before}


def refused(exc: BaseException, doing: str, *, at_commit: bool = False) -> Exception:
    """What a statement the server refused means for the operator, by its SQLSTATE: a Postgres limit
    the data exceeds (class 54: too many columns, a row too big for a page) is the input's to change,
    a missing privilege (42501) the configuration's (both exit 2); anything else may pass: re-run
    (exit 5). ``at_commit``: refused before COMMIT, so each is a CommitRejected (nothing landed).
    Found from outside: an input too wide for Postgres exited 5, "re-run", every time."""
    state = str(getattr(exc, "sqlstate", None) or "")
    text = f"{doing}: {redact(first_line(exc))}"
    if state.startswith("54"):
        return DataRejected(f"{text} (a Postgres limit the input exceeds)")
    if state == "42501":
        privilege = ConfigRejected if at_commit else ConfigError
        return privilege(f"{text} (the role of conninfo lacks this privilege)")
    return CommitRejected(text) if at_commit else DestinationUnavailable(text)


def _cancelled(exc: BaseException) -> bool:
    from adbc_driver_manager import AdbcStatusCode

    return getattr(exc, "status_code", None) == AdbcStatusCode.CANCELLED


def _own_error_in_chain(exc: BaseException) -> BaseException | None:
    """The project's own error (Terminated, InputError, ...) that a driver wrapped, if any."""
    from .._errors import AtomicPublishError

    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AtomicPublishError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def create_schema(cur: Any, name: str) -> None:
    """Create schema ``name`` unless it exists. Asked first: Postgres checks the database's CREATE
    privilege before IF NOT EXISTS, so a role allowed to create tables in a schema its owner made
    beforehand (as docs/sinks/postgres.md offers) could never publish (found from outside)."""
    from psycopg import sql

    if cur.execute("SELECT to_regnamespace(%s)", (sql.Identifier(name).as_string(cur),)).fetchone()[0] is None:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))


def ensure_ledger(cur: Any, layout: PostgresLayout) -> None:
    """Create the ledger if it does not exist, inside the caller's transaction: a publish refused
    before its COMMIT leaves no ledger behind. Creating the same table from two sessions at once
    can fail on the catalog's unique index; a transaction-level advisory lock, taken only when the
    ledger is missing (the first publish into a schema), serialises the creators."""
    from psycopg import sql

    if cur.execute("SELECT to_regclass(%s)", (layout.ledger().as_string(cur),)).fetchone()[0] is not None:
        return
    cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_NAMESPACE,))
    create_schema(cur, layout.schema)
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " run_id text PRIMARY KEY, dataset text NOT NULL, run_date date NOT NULL,"
            " attempt text NOT NULL, rows bigint NOT NULL, checksum text NOT NULL,"
            " target text NOT NULL, published_at timestamptz NOT NULL DEFAULT now())"
        ).format(layout.ledger())
    )


def target_columns(conn: Any, schema: str, table: str) -> dict[str, str] | None:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        (schema, table),
    ).fetchall()
    return {name: typ for name, typ in rows} or None


PG_MAX_COLUMNS = 1600  # Postgres's MaxHeapAttributeNumber
_SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})


def check_schema(
    arrow_schema: pa.Schema, existing: dict[str, str] | None, config: PostgresSinkConfig, target: str
) -> None:
    names = arrow_schema.names
    if len(names) > PG_MAX_COLUMNS:
        raise SchemaMismatch(f"the data has {len(names)} columns; a Postgres table holds at most {PG_MAX_COLUMNS}")
    for name in names:
        try:
            _check_identifier(name, "column")
        except ValueError as exc:
            raise SchemaMismatch(str(exc)) from None
        if name in _SYSTEM_COLUMNS:  # found from outside: exit 5, the server's "conflicts with a system column"
            raise SchemaMismatch(f"column {name!r} is the name of a Postgres system column; rename it in the input")
    for column in (
        *config.key_columns,
        *([config.replace_partition_column] if config.replace_partition_column else []),
    ):
        if column not in names:
            raise SchemaMismatch(f"column {column!r} named in the sink config is not in the data (columns: {names})")
    if existing is None:
        return
    problems = []
    for field in arrow_schema:
        want = pg_type(field.type)
        have = existing.get(field.name)
        if have is None:
            problems.append(f"column {field.name!r} ({want}) does not exist in {target}")
        elif have != want and not (want.startswith("numeric") and have.startswith("numeric")):
            problems.append(f"column {field.name!r} is {have} in {target} but {want} in the data")
    if problems:
        raise SchemaMismatch("the data does not fit the existing target: " + "; ".join(problems))


# -- the publisher ------------------------------------------------------------------------------


def acquire_run_lock(conn: Any, key: tuple[int, int], run_id: str, wait_seconds: float, *, zombie: Any = None) -> None:
    """Take the run's session advisory lock on ``conn``, waiting up to ``wait_seconds`` (a
    diagnosis probes it for an instant). Raises RunInProgress naming the holder. ``zombie(app)``,
    if given, says whether a holder is a dead client's session: it is then terminated (that is the
    fence) and the lock taken."""
    until = time.monotonic() + min(wait_seconds, _LOCK_WAIT_SECONDS)
    while not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]:
        holder = conn.execute(
            "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.classid = %s::oid AND l.objid = %s::oid"
            " AND l.objsubid = 2 AND l.granted",
            (key[0] & 0xFFFFFFFF, key[1] & 0xFFFFFFFF),
        ).fetchone()
        if holder and zombie is not None and zombie(holder[0]):
            terminate_backends(conn, [holder[1]], wait_seconds)
            continue
        if time.monotonic() >= until:
            who = f"{holder[0]} (backend pid {holder[1]})" if holder else "another session"
            raise RunInProgress(f"run {run_id} is RUNNING: {who} holds its advisory lock")
        time.sleep(0.05)


def terminate_backends(conn: Any, pids: Sequence[int], wait_seconds: float) -> None:
    """Terminate these backends and wait until they are gone (their transactions rolled back, their
    locks released), at most ``wait_seconds``."""
    if not pids:
        return
    conn.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) AS p", (list(pids),))
    until = time.monotonic() + wait_seconds
    while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)).fetchone()[0]:
        if time.monotonic() >= until:
            raise RunInProgress(f"backend(s) {list(pids)} did not end within {wait_seconds:g} s of being terminated")
        time.sleep(0.05)


CAPABILITIES = Capabilities(max_parts=None, run_lock_writes=False, checks_schema=True)
