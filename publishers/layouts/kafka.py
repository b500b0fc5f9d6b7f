"""The Kafka sink's layout: its options, topic and transactional-id names, the headers that carry a
record's run and attempt, and the reads of the ledger. Shared by the publisher and the diagnostic,
which never import each other."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from .._errors import (
    DestinationUnavailable,
    InputError,
)
from .._protocol import ALLOW_SCHEMA_CHANGE, Capabilities, SinkOptions
from .._types import Run

log = logging.getLogger("atomic_publish.kafka")
# librdkafka's own log lines go through Python logging (not straight to stderr), so an application
# decides where they go; a client left for garbage collection after its broker is gone stays quiet.
CLIENT_LOG = logging.getLogger("atomic_publish.kafka.client")

# One header per record, "<run_id> <attempt> <pid> <host>": four separate headers cost ~10% of the
# produce rate in Python. header() below reads the fields by these names.
HEADER = "atomic-publish"
H_RUN, H_ATTEMPT, H_PID, H_HOST, H_SCOPE = "run_id", "attempt", "pid", "host", "pid_scope"
_FIELDS = (H_RUN, H_ATTEMPT, H_PID, H_HOST, H_SCOPE)  # pid_scope: see _lease.pid_scope (none before it)
_FORBIDDEN = {"transactional.id", "enable.idempotence", "isolation.level"}


def validate_topic(name: str, what: str = "topic") -> str:
    """A Kafka topic name (publishers._names: the whole string, Kafka's own rules)."""
    from .. import _names

    return _names.kafka_topic(name, what)


# librdkafka's default message.max.bytes (the largest record the producer sends, key and headers in).
PRODUCER_MESSAGE_MAX_BYTES = 1_000_000


class KafkaSinkConfig(SinkOptions):
    """Options of a ``type = "kafka"`` sink. librdkafka settings go in ``properties``; credentials
    (``sasl.password`` and the like) are refused there and belong to the environment."""

    type: Literal["kafka"] = "kafka"
    bootstrap_servers: str
    topic: str | None = Field(default=None, description="default: the dataset name")
    ledger_topic: str = "atomic-publish-ledger"
    ledger_partitions: int = Field(default=1, ge=1)
    topic_partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    create_topics: bool = True
    key_columns: tuple[str, ...] = ()
    transaction_timeout_ms: int = Field(default=60_000, ge=1000)
    max_record_bytes: int = Field(default=1_000_000, ge=1024)
    allow_schema_change: bool = Field(default=False, description=ALLOW_SCHEMA_CHANGE)
    # Secret-named values (given only through the environment) are held as SecretStr; client_properties()
    # gives librdkafka the plain values.
    properties: dict[str, str | SecretStr] = Field(default_factory=dict)

    @field_validator("topic", "ledger_topic")
    @classmethod
    def _topic(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else validate_topic(value, info.field_name)

    @model_validator(mode="after")
    def _distinct_topics(self) -> KafkaSinkConfig:
        from .. import _names

        if self.topic is not None:
            _names.kafka_topics_distinct(self.topic, self.ledger_topic)
        return self

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        # Found from outside: ":99999" or ":abc" was taken, then every command exited 5 as if the
        # broker were down, where the configuration is what needs fixing.
        for server in re.split(r"[\s,]+", value):  # librdkafka's separators; it skips empty entries
            if not server or server.endswith("]") or ":" not in server.rpartition("/")[2]:
                continue  # no port: librdkafka's default (9092)
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap_servers {server!r} is not host:port (a port of 1-65535)")
        return value

    @model_validator(mode="after")
    def _records_fit_the_producer(self) -> KafkaSinkConfig:
        # Found from outside: max_record_bytes above the producer's own limit let records through
        # that librdkafka then refused at produce(), exit 5 ("unreachable, re-run") every time.
        text = str(self.properties.get("message.max.bytes", PRODUCER_MESSAGE_MAX_BYTES))
        if not text.strip().isdigit():
            raise ValueError(f"properties message.max.bytes = {text!r} is not a number of bytes")
        limit = int(text)
        if "max_record_bytes" not in self.model_fields_set and self.max_record_bytes > limit:
            object.__setattr__(self, "max_record_bytes", limit)  # the default follows the producer's limit
        if self.max_record_bytes > limit:
            raise ValueError(
                f"max_record_bytes = {self.max_record_bytes} is above the producer's message.max.bytes ({limit}): "
                "lower it, or raise message.max.bytes in properties (and the broker's or topic's max.message.bytes)"
            )
        return self

    @field_validator("properties", mode="before")
    @classmethod
    def _properties_as_text(cls, value: Any) -> Any:
        from .._secrets import settings_as_text

        return settings_as_text(value)

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, Any]) -> dict[str, Any]:
        from .._secrets import hide_secret_values

        value = hide_secret_values(value)
        for key in value:
            if key in _FORBIDDEN:
                raise ValueError(f"property {key!r} is set by the sink (the exactly-once guarantee depends on it)")
        acks = str(value.get("acks", "all")).lower()
        if acks not in ("all", "-1"):
            raise ValueError(f"acks = {value['acks']!r} would break the guarantee: transactions need acks = all")
        return value

    def client_properties(self) -> dict[str, Any]:
        """``properties`` as librdkafka takes them: secrets as their plain values."""
        from .._secrets import reveal

        return reveal(self.properties)


def transactional_id(run: Run) -> str:
    return f"atomic-publish:{run.run_id}"


def topic_name(config: KafkaSinkConfig, dataset: str) -> str:
    """The data topic of ``dataset``: the configured topic, else the dataset name; never the ledger
    topic (nor a name Kafka would confuse with it)."""
    from .. import _names

    try:
        topic = config.topic or validate_topic(dataset, "topic (the dataset name; set `topic` to choose another)")
        _names.kafka_topics_distinct(topic, config.ledger_topic)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return topic


@contextlib.contextmanager
def broker_errors(config: KafkaSinkConfig, doing: str) -> Iterator[None]:
    """Turn a client failure (broker unreachable, timed out) into one line naming the brokers."""
    from confluent_kafka import KafkaException

    try:
        yield
    except KafkaException as exc:
        error = _kafka_error(exc)
        what = f"{error.name()}: {error.str()}" if error is not None else str(exc).splitlines()[0]
        raise DestinationUnavailable(f"Kafka at {config.bootstrap_servers}: {doing} failed ({what})") from None


class _Held:
    """The producer of an attempt whose transaction is open (what 'staged' means for Kafka)."""

    def __init__(self, producer: Any, rows: int, size: int, checksum: str, ends: dict[int, int]) -> None:
        self.producer, self.rows, self.size, self.checksum = producer, rows, size, checksum
        # partition -> the data topic's high watermark once every record was delivered: each of the
        # run's records lies below it.
        self.ends = ends


def _kafka_error(exc: BaseException) -> Any:
    """The KafkaError of a client exception, or None. A SystemError ("<built-in function ...>
    returned a result with an exception set") is how confluent-kafka 2.16 sometimes reports an error
    raised while it called back into Python (seen from flush() of a fenced producer, about 1 race in
    10): CPython chains the real exception as its cause, which is read here."""
    seen = 0
    while exc is not None and seen < 5:
        if exc.args and hasattr(exc.args[0], "fatal"):
            return exc.args[0]
        if not isinstance(exc, SystemError):
            return None
        exc, seen = exc.__cause__ or exc.__context__, seen + 1  # type: ignore[assignment]
    return None


def _is_fatal(error: Any) -> bool:
    """Whether a KafkaError means the producer is dead (fenced, in practice). After librdkafka's
    fatal error, ``produce()`` raises ``_FATAL`` ("Unable to produce message: Local: Fatal error"),
    whose own ``fatal()`` is False (found from outside: the loser of two simultaneous publishes
    exited 5, "destination unreachable", instead of asking the ledger)."""
    from confluent_kafka import KafkaError

    return error is not None and (bool(error.fatal()) or error.code() == KafkaError._FATAL)


def _wrapped_client_error(exc: BaseException) -> bool:
    """A SystemError that carries a Kafka client error (see _kafka_error)."""
    return isinstance(exc, SystemError) and _kafka_error(exc) is not None


def init_transactions(producer: Any, timeout: float = 30) -> None:
    """init_transactions on a producer that is connected first: if no broker connection is up when
    it starts, librdkafka retries the producer-id request on a fixed 500 ms timer (measured: 0.51 s
    instead of 0.06 s, one run in three). A metadata request brings the connection up first."""
    producer.list_topics(timeout=timeout)
    producer.init_transactions(timeout)


def admin_client(config: KafkaSinkConfig) -> Any:
    """One AdminClient per cluster and process: each new one costs a connection and a metadata
    round trip (measured ~60 ms), and a diagnosis asks several times."""
    from confluent_kafka.admin import AdminClient

    key = json.dumps([config.bootstrap_servers, sorted(config.client_properties().items())])
    if key not in _admins:
        settings: dict[str, Any] = {"logger": CLIENT_LOG, "bootstrap.servers": config.bootstrap_servers}
        _admins[key] = AdminClient({**settings, **config.client_properties()})
    return _admins[key]


def partition_offsets(config: KafkaSinkConfig, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int, int]]:
    """partition -> (earliest, last stable offset, high watermark). Empty if the topic is missing.

    The last stable offset (LSO) is where read_committed readers stop: below it every transaction is
    decided; between it and the high watermark lie records of transactions still open.
    """
    from confluent_kafka import IsolationLevel
    from confluent_kafka.admin import OffsetSpec

    parts = _partitions(config, topic, timeout)
    if not parts:
        return {}
    low = _ask_offsets(config, parts, OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED, timeout)
    lso = _ask_offsets(config, parts, OffsetSpec.latest(), IsolationLevel.READ_COMMITTED, timeout)
    high = _ask_offsets(config, parts, OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED, timeout)
    return {p: (low[p], lso[p], high[p]) for p in low}


def end_offsets(
    config: KafkaSinkConfig,
    topic: str,
    *,
    committed: bool,
    partitions: Iterable[int] | None = None,
    timeout: float = 10.0,
) -> dict[int, int]:
    """partition -> the last stable offset (``committed``) or the high watermark, of every partition
    of ``topic`` or of these ``partitions`` (then without asking for the topic's metadata first)."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    if partitions is None:
        parts = _partitions(config, topic, timeout)
    else:
        parts = [TopicPartition(topic, p) for p in sorted(partitions)]
    isolation = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    return _ask_offsets(config, parts, OffsetSpec.latest(), isolation, timeout) if parts else {}


def _partitions(config: KafkaSinkConfig, topic: str, timeout: float) -> list[Any]:
    from confluent_kafka import TopicPartition

    metadata = admin_client(config).list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return []
    return [TopicPartition(topic, p) for p in sorted(metadata.partitions)]


def _ask_offsets(
    config: KafkaSinkConfig, parts: list[Any], spec: Any, isolation: Any, timeout: float
) -> dict[int, int]:
    from confluent_kafka import KafkaException

    admin = admin_client(config)
    for try_number in range(20):
        futures = admin.list_offsets({tp: spec for tp in parts}, isolation_level=isolation, request_timeout=timeout)
        try:
            return {tp.partition: future.result().offset for tp, future in futures.items()}
        except KafkaException as exc:
            # Right after a topic is created, or a leader moves, the answer is "not leader": the
            # client refreshes its metadata; ask again shortly.
            error = _kafka_error(exc)
            if try_number == 19 or error is None or not (error.retriable() or "LEADER" in error.name()):
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def read_range(
    config: KafkaSinkConfig, topic: str, partition: int, start: int, end: int, *, committed: bool, timeout: float = 15.0
) -> list[Any]:
    """Messages of one partition in [start, end), read_committed or read_uncommitted."""
    from confluent_kafka import Consumer, TopicPartition

    if end <= start:
        return []
    consumer = Consumer(
        {
            "logger": CLIENT_LOG,
            "bootstrap.servers": config.bootstrap_servers,
            **config.client_properties(),
            "group.id": f"atomic-publish-diagnose-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "auto.offset.reset": "earliest",
        }
    )
    out: list[Any] = []
    try:
        tp = TopicPartition(topic, partition, start)
        consumer.assign([tp])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Short polls: a transactional topic ends in a commit marker, never delivered, so the
            # last wait of a range is always an empty poll (0.2 s polls cost 0.2 s per ledger read).
            msg = consumer.poll(0.02)
            if msg is not None and not msg.error():
                offset = msg.offset() or 0
                if offset >= end:
                    break
                out.append(msg)
                if offset >= end - 1:
                    break
                continue
            # read_committed skips aborted records and control markers: the position tells when the
            # range is done even if its last offsets were never delivered.
            position = consumer.position([TopicPartition(topic, partition)])[0].offset
            if position >= end:
                break
        return out
    finally:
        consumer.close()


def header(msg: Any, name: str) -> str | None:
    """A field (run_id, attempt, pid, host, pid_scope) of the record's atomic-publish header, or None."""
    for key, value in msg.headers() or []:
        if key == HEADER and value is not None:
            fields = bytes(value).decode().split(" ")
            return dict(zip(_FIELDS, fields, strict=False)).get(name)
    return None


def read_ledger_records(
    config: KafkaSinkConfig, offsets: dict[int, tuple[int, int, int]] | None = None
) -> dict[str, dict[str, Any]]:
    """Every committed ledger record, by run_id (read_committed over the compacted topic);
    ``offsets``: the ledger's partition_offsets when the caller has them already."""
    found: dict[str, dict[str, Any]] = {}
    if offsets is None:
        offsets = partition_offsets(config, config.ledger_topic)
    for partition, (low, lso, _) in offsets.items():
        for msg in read_range(config, config.ledger_topic, partition, low, lso, committed=True):
            key = (msg.key() or b"").decode(errors="replace")
            if msg.value():
                found[key] = json.loads(msg.value())
            else:
                found.pop(key, None)
    return found


def read_ledger(
    config: KafkaSinkConfig, run_id: str, offsets: dict[int, tuple[int, int, int]] | None = None
) -> dict[str, Any] | None:
    """The committed ledger record of ``run_id``, or None."""
    return read_ledger_records(config, offsets).get(run_id)


_admins: dict[str, Any] = {}


CAPABILITIES = Capabilities(max_parts=1, run_lock_writes=False, staging_outlives_process=False, checks_schema=True)
