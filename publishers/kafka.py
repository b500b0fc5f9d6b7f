"""The Kafka sink: one transaction per attempt, with a ``transactional.id`` derived from the run, and a
ledger record for the run written in the same transaction. ``commit_transaction`` is the commit point.

Because every attempt of a run uses the same ``transactional.id``, a new attempt's
``init_transactions`` fences any zombie of an earlier one and aborts its open transaction: a run can
never be committed twice by two live producers. The ledger (a compacted topic keyed by run_id) is
read with ``read_committed`` *after* ``init_transactions``, so an attempt that started after another
one committed sees that commit and refuses.

Every record carries one header, ``atomic-publish``, whose value is ``<run_id> <attempt> <pid>
<host>``: that is how the diagnostic attributes records of a transaction left open by a dead attempt.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from ._arrow import nanoseconds_as_text, refuse_schema_drift, schema_to_json
from ._crash import crash_point, crash_point_armed
from ._errors import (
    AlreadyPublished,
    CommitAborted,
    CommitOutcomeUnknown,
    CommitRejected,
    ConfigError,
    DestinationUnavailable,
    Fenced,
    InputError,
    LostRace,
)
from ._fs import BackgroundSha256
from ._lease import pid_scope
from ._protocol import ProgressCallback
from ._types import Receipt, Run, Staged
from .layouts.kafka import (
    CAPABILITIES,
    CLIENT_LOG,
    HEADER,
    KafkaSinkConfig,
    _Held,
    _is_fatal,
    _kafka_error,
    _wrapped_client_error,
    admin_client,
    broker_errors,
    end_offsets,
    init_transactions,
    log,
    read_ledger,
    read_ledger_records,
    topic_name,
    transactional_id,
)

# A Kafka transaction belongs to one producer: N workers cannot share one, and N transactions would
# not be one atomic publish for read_committed readers. One piece; the lock (fencing) writes nothing.


# What a broker says of a topic it will never create as asked (a name that collides with an existing
# topic's, partitions, replication or settings it refuses): the configuration's to change (exit 2).
_REFUSED_FOR_GOOD = (
    "TOPIC_EXCEPTION",
    "INVALID_PARTITIONS",
    "INVALID_REPLICATION_FACTOR",
    "INVALID_CONFIG",
    "POLICY_VIOLATION",
)


class KafkaPublisher:
    sink_name = "kafka"
    capabilities = CAPABILITIES

    def __init__(self, config: KafkaSinkConfig) -> None:
        self.config = config
        self._held: dict[str, _Held] = {}

    def topic(self, dataset: str) -> str:
        return topic_name(self.config, dataset)

    def check_schema(self, schema: pa.Schema) -> None:
        """Before the lock (and before any topic is created): the key columns are in the data."""
        for column in self.config.key_columns:
            if column not in schema.names:
                raise InputError(f"key column {column!r} is not in the data (columns: {schema.names})")

    @contextlib.contextmanager
    def run_lock(self, run: Run) -> Iterator[None]:
        # Kafka's own fencing is the lock: the attempt's init_transactions (in stage) fences every
        # earlier producer of the run. Nothing to hold here.
        yield

    def ensure_topics(self, dataset: str) -> None:
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import NewTopic

        admin = admin_client(self.config)
        with broker_errors(self.config, "listing topics"):
            existing = set(admin.list_topics(timeout=self.config.timeout_seconds).topics)
        wanted = {
            self.topic(dataset): NewTopic(
                self.topic(dataset), self.config.topic_partitions, self.config.replication_factor
            ),
            self.config.ledger_topic: NewTopic(
                self.config.ledger_topic,
                self.config.ledger_partitions,
                self.config.replication_factor,
                config={"cleanup.policy": "compact"},
            ),
        }
        missing = {name: spec for name, spec in wanted.items() if name not in existing}
        if not missing:
            return
        if not self.config.create_topics:
            raise ConfigError(f"topic(s) {', '.join(sorted(missing))} do not exist and create_topics is false")
        for name, future in admin.create_topics(list(missing.values())).items():
            try:
                future.result(timeout=self.config.timeout_seconds)
            except Exception as exc:
                error = _kafka_error(exc)
                if error is not None and error.code() in {getattr(KafkaError, code) for code in _REFUSED_FOR_GOOD}:
                    # Found from outside: a topic that collides with an existing one ("x_y" beside
                    # "x.y") was exit 5, and diagnose then said re-run, forever.
                    raise ConfigError(
                        f"Kafka at {self.config.bootstrap_servers} refused to create topic {name}: {error.str()}; "
                        "change the dataset, topic or topic settings"
                    ) from None
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise DestinationUnavailable(
                        f"Kafka at {self.config.bootstrap_servers}: cannot create topic {name}: {exc}"
                    ) from None

    def _producer(self, run: Run, on_failure: Callable[[Any, Any], None] | None = None) -> Any:
        from confluent_kafka import Producer

        return Producer(
            {
                # Delivery reports of failed records only (librdkafka calls back for none of the
                # delivered ones, so this costs nothing per record): a refusal is then named.
                **({"on_delivery": on_failure, "delivery.report.only.error": True} if on_failure else {}),
                "logger": CLIENT_LOG,
                "bootstrap.servers": self.config.bootstrap_servers,
                "linger.ms": 20,
                "compression.type": "lz4",
                # librdkafka buffers up to 1 GiB by default when the broker is slower than us; a
                # bounded queue keeps memory flat (produce() then waits in the BufferError loop).
                "queue.buffering.max.kbytes": 65536,
                **self.config.client_properties(),
                "transactional.id": transactional_id(run),
                "enable.idempotence": True,
                "acks": "all",
                "transaction.timeout.ms": self.config.transaction_timeout_ms,
            }
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
        from confluent_kafka import KafkaError, KafkaException

        if part or token:
            raise CommitRejected(
                "the Kafka sink publishes a run staged in one piece: a transaction belongs to one producer"
            )
        topic = self.topic(run.dataset)
        self.check_schema(batches.schema)  # publish() asked before the lock; a group's roll-forward did not
        # The first slice is encoded (and its records' sizes checked) before any topic is created: a
        # refused input then changes nothing on the cluster. (Bad input found later in the stream
        # aborts the transaction; the topics, created empty for the run, stay.)
        slices = _slices(batches, ENCODE_ROWS)
        first = next(slices, None)
        first_encoded = self._encode(first, 0) if first is not None else ([], [])
        self.ensure_topics(run.dataset)
        failures: list[Any] = []

        def failed(error: Any, _msg: Any) -> None:
            if error is not None and not failures:
                failures.append(error)

        producer = self._producer(run, failed)
        headers = [(HEADER, f"{run.run_id} {run.attempt} {os.getpid()} {socket.gethostname()} {pid_scope()}".encode())]
        hasher = BackgroundSha256(depth=2)  # a few MB per item: two are enough to overlap
        rows = size = 0
        try:
            try:
                # Fences every earlier producer of this run and aborts its open transaction.
                init_transactions(producer, self.config.timeout_seconds)
            except KafkaException as exc:
                if "INVALID_TRANSACTION_TIMEOUT" in str(exc) or "transaction timeout" in str(exc).lower():
                    raise ConfigError(
                        f"transaction_timeout_ms = {self.config.transaction_timeout_ms} is refused by the broker "
                        "(above its transaction.max.timeout.ms); lower it"
                    ) from None
                raise DestinationUnavailable(
                    f"Kafka at {self.config.bootstrap_servers}: init_transactions for {run.run_id} failed: {exc}"
                ) from None
            with broker_errors(self.config, "reading the ledger"):
                records = read_ledger_records(self.config)
            ledger = records.get(run.run_id)
            if ledger is not None:
                raise AlreadyPublished(f"run {run.run_id} is already in the ledger (attempt {ledger.get('attempt')})")
            if not self.config.allow_schema_change:
                earlier = sorted(k for k, v in records.items() if k.rpartition("/")[0] == run.dataset and "schema" in v)
                if earlier:
                    where = f"the run {earlier[-1]} (ledger {self.config.ledger_topic})"
                    refuse_schema_drift(batches.schema, records[earlier[-1]]["schema"], where)
            # The high watermarks before the run's first record: a partition whose watermark has
            # not moved once they are delivered holds none of them (and is not waited for).
            starts = end_offsets(self.config, topic, committed=False)
            producer.begin_transaction()
            # No callback per delivered record (1M Python callbacks cost more than the produce calls
            # themselves): only failed deliveries are reported (``failed``), and in a transaction a
            # failed record also makes commit_transaction() fail (abortable), so none is dropped.
            for batch_number, batch in enumerate(itertools.chain([first] if first is not None else [], slices)):
                # A batch at a time, in comprehensions: the per-row Python work is the cost of this
                # sink (measured: a loop of per-row statements cost 1.4 s per 1M rows more).
                values, keys = first_encoded if batch_number == 0 else self._encode(batch, rows)
                for value, key in zip(values, keys, strict=True):
                    try:
                        producer.produce(topic, value, key, headers=headers)
                    except BufferError:
                        _produce_when_queue_frees(producer, topic, value, key, headers)
                rows += len(values)
                size += sum(map(len, values))
                if values:  # the checksum is the sha256 of the values as newline-delimited JSON
                    hasher.update(b"\n".join(values) + b"\n")
                producer.poll(0)
                if progress:
                    progress(rows, size)
                if batch_number == 0:
                    if crash_point_armed("mid_stage"):
                        # On the broker before the crash point, so a kill here leaves a real open
                        # transaction; a normal run does not stall its pipeline for it.
                        producer.flush(30)
                    crash_point("mid_stage")
            # Every record delivered (or failed) before the commit; bounded like the commit itself.
            remaining = producer.flush(self.config.commit_timeout_seconds)
            if remaining:
                raise CommitRejected(
                    f"{remaining} record(s) of {run.run_id} were not delivered within "
                    f"{self.config.commit_timeout_seconds:g} s (commit_timeout_seconds)"
                )
            if failures:
                _refused_record(run, failures[0])
            # Each of the run's records now lies below its partition's high watermark: once the last
            # stable offsets of the partitions it wrote to reach these, read_committed readers see
            # every record of the run. (A partition another producer appended to meanwhile is waited
            # for too, at most timeout_seconds.)
            ends = {
                p: end
                for p, end in end_offsets(self.config, topic, committed=False, partitions=starts).items()
                if end > starts.get(p, 0)
            }
        except (KafkaException, SystemError) as exc:
            if not isinstance(exc, KafkaException) and not _wrapped_client_error(exc):
                with contextlib.suppress(Exception):
                    producer.abort_transaction(10)
                raise
            error = _kafka_error(exc)
            with contextlib.suppress(Exception):
                producer.abort_transaction(10)
            if _is_fatal(error):
                self._fenced(run, error)  # raises: a fenced transaction was never committed
            if error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                _refused_record(run, error)
            raise DestinationUnavailable(
                f"Kafka at {self.config.bootstrap_servers}: producing {run.run_id} failed: {exc}"
            ) from None
        except BaseException:
            with contextlib.suppress(Exception):
                producer.abort_transaction(10)
            raise
        finally:
            checksum = hasher.hexdigest()  # also ends the hashing thread on the error paths
        # Held before the crash point: a signal there unwinds through discard(), which aborts it.
        self._held[run.attempt] = _Held(producer, rows, size, checksum, ends)
        crash_point("after_stage")
        return Staged(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=run.attempt,
            location=f"{topic} (open transaction {transactional_id(run)})",
            rows=rows,
            bytes=size,
            checksum=f"sha256:{checksum}",
            details={"topic": topic, "schema": schema_to_json(batches.schema)},
        )

    def _encode(self, batch: pa.RecordBatch, rows_before: int) -> tuple[list[bytes], list[bytes | None]]:
        """The batch's record values (JSON) and keys; an oversized value is refused with its row number."""
        pylist = nanoseconds_as_text(batch).to_pylist()
        binary = any(_holds_binary(f.type) for f in batch.schema)
        values = encode_all(pylist, binary)
        limit = self.config.max_record_bytes
        if values and max(map(len, values)) > limit:
            index = next(i for i, v in enumerate(values) if len(v) > limit)
            raise InputError(
                f"row {rows_before + index + 1}: record of {len(values[index])} bytes exceeds max_record_bytes "
                f"({limit}); the whole transaction is aborted"
            )
        columns = self.config.key_columns
        if not columns:
            return values, [None] * len(values)
        encode = (BINARY_ENCODER if binary else RECORD_ENCODER).encode
        keys: list[bytes | None]
        try:  # inline, without a list of key lists first (that was 4% of the encoding)
            if len(columns) == 1:
                (column,) = columns
                keys = [encode([row[column]]).encode() for row in pylist]
            else:
                keys = [encode([row[c] for c in columns]).encode() for row in pylist]
        except ValueError:  # a NaN or an infinity in a key
            keys = [*encode_all([[row[c] for c in columns] for row in pylist], binary)]
        return values, keys

    def commit(self, run: Run, staged: Sequence[Staged]) -> Receipt:
        from confluent_kafka import KafkaException

        if len(staged) != 1 or staged[0].attempt not in self._held:
            raise CommitRejected("the Kafka sink commits the open transaction of this process's own attempt")
        part = staged[0]
        held = self._held.pop(part.attempt)
        producer = held.producer
        published_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        ledger = {
            "run_id": run.run_id,
            "attempt": part.attempt,
            "rows": held.rows,
            "bytes": held.size,
            "checksum": part.checksum,
            "topic": part.details["topic"],
            "schema": part.details.get("schema"),
            "published_at": published_at,
        }
        try:
            producer.produce(self.config.ledger_topic, key=run.run_id.encode(), value=json.dumps(ledger).encode())
        except (KafkaException, BufferError) as exc:
            with contextlib.suppress(Exception):
                producer.abort_transaction(self.config.timeout_seconds)
            raise CommitAborted(f"the ledger record of {run.run_id} could not be queued: {exc}") from None
        # commit_transaction is the commit point; retried on the same producer while the client
        # says the error is retriable, within commit_timeout_seconds.
        deadline = time.monotonic() + self.config.commit_timeout_seconds
        while True:
            try:
                producer.commit_transaction(max(1.0, deadline - time.monotonic()))
                break
            except (KafkaException, SystemError) as exc:
                if not isinstance(exc, KafkaException) and not _wrapped_client_error(exc):
                    raise  # not the client's error: the outcome is unknown (publish says so)
                error = _kafka_error(exc)
                # Fenced: a newer producer of the run initialised. Only the ledger tells whether our
                # commit had reached the coordinator before it (_fenced raises unless it had).
                if _is_fatal(error) and self._fenced(run, error) == "ours":
                    break
                if error is not None and error.txn_requires_abort():
                    with contextlib.suppress(Exception):
                        producer.abort_transaction(self.config.timeout_seconds)
                    raise CommitAborted(f"the broker refused the commit of {run.run_id}: {error}") from None
                if error is not None and error.retriable() and time.monotonic() < deadline:
                    continue
                raise CommitOutcomeUnknown(
                    f"commit_transaction of {run.run_id} ended without an answer ({exc}) within "
                    f"{self.config.commit_timeout_seconds:g} s; run `atomic-publish diagnose` (the ledger settles it)"
                ) from None
        crash_point("after_commit")
        try:
            self._await_visible(run, part.details["topic"], held.ends, min(10.0, self.config.timeout_seconds))
        except Exception as exc:  # committed: commit_transaction answered. Found from outside: a broker
            # that stalled right after it made this exit 14, "outcome unknown", for a published run.
            log.warning("run %s is committed; could not check that readers see it yet (%s)", run.run_id, exc)
        return Receipt(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=part.attempt,
            location=part.details["topic"],
            rows=held.rows,
            bytes=held.size,
            checksum=part.checksum,
            published_at=published_at,
            details={"ledger_topic": self.config.ledger_topic, "transactional_id": transactional_id(run)},
        )

    def _fenced(self, run: Run, error: Any) -> str:
        """A newer producer of the run fenced this one. The ledger says what happened: our own
        record ("ours": the commit had landed first), another attempt's (LostRace), or none (Fenced:
        the coordinator aborted our transaction when the newer producer initialised)."""
        try:
            ledger = read_ledger(self.config, run.run_id)
        except Exception as exc:
            raise CommitOutcomeUnknown(
                f"attempt {run.attempt} of {run.run_id} was fenced ({error}) and the ledger cannot be read ({exc}); "
                "run `atomic-publish diagnose`"
            ) from None
        if ledger is not None and ledger.get("attempt") == run.attempt:
            return "ours"
        if ledger is not None:
            raise LostRace(
                f"run {run.run_id} was published by attempt {ledger.get('attempt')}; this attempt was fenced"
            )
        raise Fenced(
            f"attempt {run.attempt} of {run.run_id} was fenced by a newer producer of the run (another attempt, or "
            f"recover): it did not publish ({error})"
        )

    def _await_visible(self, run: Run, topic: str, ends: dict[int, int], timeout: float = 10.0) -> None:
        """Return once read_committed readers see all of the run. commit_transaction returns when the
        coordinator has logged the commit; it writes the markers that make the records visible a
        moment later, partition by partition (the ledger's and each data partition's, in no set
        order). Until then a reader would see some of the run's partitions and not others, and a
        diagnosis nothing of it: publish() returns only when the ledger record is visible and every
        partition the run wrote to (``ends``) has its last stable offset at the high watermark it had
        once the run's records were delivered (measured: +12 ms a publish). Another transaction left
        open on a partition holds its last stable offset back (and read_committed readers with it):
        after ``timeout`` this says so and returns; the run is committed."""
        deadline = time.monotonic() + timeout
        while read_ledger(self.config, run.run_id) is None:
            if time.monotonic() > deadline:
                log.warning("run %s is committed but not yet visible to read_committed readers", run.run_id)
                return
            time.sleep(0.01)
        while True:
            stable = end_offsets(self.config, topic, committed=True, partitions=ends) if ends else {}
            behind = {p: end for p, end in ends.items() if stable.get(p, 0) < end}
            if not behind:
                return
            if time.monotonic() > deadline:
                where = ", ".join(f"partition {p} at {stable.get(p)} of {end}" for p, end in sorted(behind.items()))
                log.warning(
                    "run %s is committed; read_committed readers of %s do not see all of it yet (%s): "
                    "another transaction is open there",
                    run.run_id,
                    topic,
                    where,
                )
                return
            time.sleep(0.01)

    def discard(self, run: Run, staged: Sequence[Staged]) -> None:
        for attempt in {run.attempt} | {s.attempt for s in staged}:
            held = self._held.pop(attempt, None)
            if held is not None:
                with contextlib.suppress(Exception):
                    held.producer.abort_transaction(10)


def _refused_record(run: Run, error: Any) -> None:
    """A record the producer or the broker refused to take: too large is the input's (or the limits'),
    never "unreachable, re-run" (found from outside: exit 5 on every re-run); another refusal is
    left to the commit, which then fails and aborts the transaction."""
    from confluent_kafka import KafkaError

    if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
        raise InputError(
            f"a record of {run.run_id} is larger than Kafka accepts ({error.str()}): the producer's "
            "message.max.bytes counts its key and headers too, and the broker's message.max.bytes or the topic's "
            "max.message.bytes bound it again; lower max_record_bytes, or raise those limits; nothing was published"
        )


# Rows turned into Python objects at once: a 65,536-row batch as dicts is ~65 MB of peak memory;
# 8,192 rows keep that small at the same speed.
ENCODE_ROWS = 8192


def _slices(batches: pa.RecordBatchReader, rows: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for offset in range(0, batch.num_rows, rows):
            yield batch.slice(offset, rows)


def _produce_when_queue_frees(producer: Any, topic: str, value: bytes, key: bytes | None, headers: Any) -> None:
    """The producer's queue is full (it is bounded, so memory stays flat): serve delivery reports
    until there is room. Nothing is dropped."""
    while True:
        producer.poll(0.05)
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            continue


def _json_value(value: Any) -> Any:
    """A value JSON has no type for: binary as base64 (Python's ``str`` of bytes, ``b'\\x00'``, is no
    encoding a consumer can read; found from outside), anything else (Decimal, date, time,
    timestamp) as its text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    return str(value)


# One encoder for every record: json.dumps with options builds a new JSONEncoder per call, which
# measured as a fifth of the produce loop. Strict JSON (RFC 8259): a NaN or an infinity would be
# written as the bare words NaN and Infinity, which JSON.parse, Jackson and Go refuse (found from
# outside); a batch that holds one is encoded again with those floats as strings (_finite).
RECORD_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"), allow_nan=False)
# The same, for batches that hold binary values (a Python default costs a call per Decimal and
# timestamp value; str is a builtin: 3% of a 100k-row publish, measured A/B).
BINARY_ENCODER = json.JSONEncoder(default=_json_value, separators=(",", ":"), allow_nan=False)


def _holds_binary(typ: pa.DataType) -> bool:
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ):
        return True
    if pa.types.is_dictionary(typ):
        return _holds_binary(typ.value_type)
    return any(_holds_binary(typ.field(i).type) for i in range(typ.num_fields))


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float as the string "NaN", "Infinity" or "-Infinity" (as
    in protobuf's JSON mapping), also inside lists, maps and structs."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode_all(items: list[Any], binary: bool = True) -> list[bytes]:
    """Each item as strict JSON (see RECORD_ENCODER); ``binary``: the items may hold bytes."""
    encode = (BINARY_ENCODER if binary else RECORD_ENCODER).encode
    try:
        return [encode(item).encode() for item in items]
    except ValueError:  # a NaN or an infinity somewhere in the batch: rare, so checked only then
        return [encode(_finite(item)).encode() for item in items]


def encode_record(row: dict[str, Any]) -> bytes:
    return encode_all([row])[0]
