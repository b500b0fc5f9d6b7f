"""The Kafka sink against the real Apache Kafka broker from the harness (never a mock cluster)."""

from __future__ import annotations

import os
import time
import uuid

import pyarrow as pa
import pytest

from atomic_publish import AlreadyPublished, ConfigError, Fenced, InputError, Run, load_config, publish
from atomic_publish.diagnostics.kafka import KafkaDiagnostic
from atomic_publish.publishers.kafka import KafkaPublisher, KafkaSinkConfig
from atomic_publish.publishers.layouts.kafka import partition_offsets
from atomic_publish.publishers.taxonomy import State

DATE = "2026-04-24"


def table(n=50, big_row=None):
    values = [f"v{i}" for i in range(n)]
    if big_row is not None:
        values[big_row - 1] = "x" * 5000
    return pa.table({"id": list(range(n)), "v": values})


@pytest.fixture
def sink(kafka_service):
    tag = uuid.uuid4().hex[:8]

    def make(**overrides):
        config = KafkaSinkConfig(
            **{
                "bootstrap_servers": kafka_service.bootstrap,
                "topic": f"items-{tag}",
                "ledger_topic": f"ledger-{tag}",
                "key_columns": ["id"],
                **overrides,
            }
        )
        return KafkaPublisher(config), KafkaDiagnostic(config)

    return make


def high_watermarks(config):
    """High watermarks once every transaction is decided: commit_transaction returns before the
    coordinator has written its markers, and a marker moves the high watermark by one."""
    deadline = time.monotonic() + 10
    while True:
        offsets = partition_offsets(config, config.topic)
        if all(lso == high for _, lso, high in offsets.values()) or time.monotonic() > deadline:
            return {p: high for p, (_, _, high) in offsets.items()}
        time.sleep(0.05)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"topic": "__consumer_offsets"}, "reserves '__'"),
        ({"topic": "a/b"}, "path separator"),
        ({"topic": "t" * 250}, "250 characters long"),
        ({"topic": "runs.a", "ledger_topic": "runs_a"}, "collides with ledger_topic"),
        ({"properties": {"acks": "1"}}, "acks"),
        ({"properties": {"enable.idempotence": "false"}}, "set by the sink"),
        ({"properties": {"transactional.id": "mine"}}, "set by the sink"),
    ],
)
def test_bad_topics_and_settings_that_break_the_guarantee_are_refused(overrides, fragment):
    with pytest.raises(ValueError, match=fragment):
        KafkaSinkConfig(bootstrap_servers="127.0.0.1:9", **overrides)


def test_credentials_in_the_config_file_are_refused(tmp_path):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.k]\ntype = "kafka"\nbootstrap_servers = "b:9092"\n[sinks.k.properties]\n"sasl.password" = "pw-123"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert "pw-123" not in str(info.value)


@pytest.mark.integration
def test_a_first_run_is_nothing_in_flight_and_says_the_ledger_does_not_exist_yet(sink):
    publisher, diagnostic = sink()
    d = diagnostic.diagnose(Run.new("items", "2026-04-24"))
    assert d.state is State.NOTHING_IN_FLIGHT
    assert f"the ledger topic {publisher.config.ledger_topic} does not exist yet" in d.reason


def test_rerun_of_a_published_run_produces_no_record(sink):
    publisher, diagnostic = sink()
    publish(publisher, diagnostic, Run.new("items", DATE), table())
    before = high_watermarks(publisher.config)
    with pytest.raises(AlreadyPublished):
        publish(publisher, diagnostic, Run.new("items", DATE), table())
    assert publish(publisher, diagnostic, Run.new("items", DATE), table(), if_absent=True).skipped
    assert high_watermarks(publisher.config) == before
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE


@pytest.mark.integration
def test_an_oversized_record_aborts_the_whole_transaction_and_names_its_row(sink):
    publisher, diagnostic = sink(max_record_bytes=2000)
    with pytest.raises(InputError, match=r"row 3: record of 50.. bytes exceeds"):
        publish(publisher, diagnostic, Run.new("items", DATE), table(big_row=3))
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.NOTHING_IN_FLIGHT, d.reason


@pytest.mark.integration
def test_missing_topic_without_auto_creation_is_a_clear_error(sink):
    publisher, diagnostic = sink(create_topics=False)
    with pytest.raises(ConfigError, match="do not exist and create_topics is false"):
        publish(publisher, diagnostic, Run.new("items", DATE), table())


@pytest.mark.integration
def test_transaction_timeout_above_the_broker_maximum_is_a_clear_error(sink):
    publisher, diagnostic = sink(transaction_timeout_ms=3_600_000)  # the broker allows 15 minutes
    with pytest.raises(ConfigError, match="transaction_timeout_ms = 3600000"):
        publish(publisher, diagnostic, Run.new("items", DATE), table())


@pytest.mark.integration
def test_a_zombie_attempt_is_fenced_and_only_the_new_attempt_commits(sink):
    from atomic_publish.publishers.layouts.kafka import H_RUN, header, read_range

    publisher, diagnostic = sink()
    zombie_publisher, successor_publisher = KafkaPublisher(publisher.config), KafkaPublisher(publisher.config)
    zombie, successor = Run.new("items", DATE), Run.new("items", DATE)
    zombie_staged = zombie_publisher.stage(zombie, table(10).to_reader())
    # While the zombie's transaction is open and its process alive, the run is RUNNING.
    d = diagnostic.diagnose(Run.new("items", DATE))
    assert d.state is State.RUNNING and d.holder.attempt == zombie.attempt and d.holder.pid == os.getpid()
    successor_staged = successor_publisher.stage(successor, table(20).to_reader())  # fences the zombie
    # Fenced, not LostRace: the successor has not published yet (only the ledger proves a lost race).
    with pytest.raises(Fenced, match="fenced"):
        zombie_publisher.commit(zombie, [zombie_staged])
    successor_publisher.commit(successor, [successor_staged])
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE
    config = publisher.config
    committed = [
        msg
        for partition, (low, lso, _) in partition_offsets(config, config.topic).items()
        for msg in read_range(config, config.topic, partition, low, lso, committed=True)
        if header(msg, H_RUN) == f"items/{DATE}"
    ]
    assert len(committed) == 20  # the successor's records, exactly once; none of the zombie's


def test_a_schema_that_differs_from_the_last_published_run_is_refused_unless_allowed(sink):
    from atomic_publish import SchemaMismatch

    publisher, diagnostic = sink()
    publish(publisher, diagnostic, Run.new("items", "2026-04-23"), table(10))
    drifted = table(10).append_column("extra", pa.array(["x"] * 10))
    with pytest.raises(SchemaMismatch, match="column 'extra' is new"):
        publish(publisher, diagnostic, Run.new("items", DATE), drifted)
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT
    allowing = KafkaPublisher(publisher.config.model_copy(update={"allow_schema_change": True}))
    assert publish(allowing, diagnostic, Run.new("items", DATE), drifted).receipt is not None


def test_an_attempt_fenced_while_it_produces_is_fenced_not_unreachable(sink):
    """Found from outside: of two publishes of one run started together, the loser (fenced by the
    other's producer while it was still producing) exited 5, "destination unreachable": after
    librdkafka's fatal error, produce() raises ``_FATAL``, whose own ``fatal()`` is False, so the
    ledger was never asked. Now it is: Fenced (the winner has not committed yet), nothing published."""
    import time as clock

    publisher, diagnostic = sink()
    zombie_publisher, successor_publisher = KafkaPublisher(publisher.config), KafkaPublisher(publisher.config)
    zombie, successor = Run.new("items", DATE), Run.new("items", DATE)
    first = table(10)
    successor_staged = []

    def batches():
        yield from first.to_batches()
        successor_staged.append(successor_publisher.stage(successor, table(20).to_reader()))  # fences the zombie
        for _ in range(200):  # its next records meet the new epoch; then every produce() is refused
            yield from first.to_batches()
            clock.sleep(0.01)

    with pytest.raises(Fenced, match="fenced"):
        zombie_publisher.stage(zombie, pa.RecordBatchReader.from_batches(first.schema, batches()))
    successor_publisher.commit(successor, successor_staged)
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE


def test_a_topic_the_broker_will_never_create_is_a_configuration_error(sink):
    """Found from outside: a dataset whose topic collides with an existing one ("x_y" beside "x.y":
    Kafka's metrics names them alike) was exit 5, "unreachable, re-run", and diagnose said re-run,
    forever. The broker's refusal for good is the configuration's to fix (ConfigError, exit 2)."""
    publisher, _ = sink(topic=None)
    tag = uuid.uuid4().hex[:8]
    publish(publisher, sink(topic=None)[1], Run.new(f"c{tag}.y", DATE), table(3))
    with pytest.raises(ConfigError, match=rf"collides with existing topic: c{tag}\.y"):
        publish(publisher, sink(topic=None)[1], Run.new(f"c{tag}_y", DATE), table(3))


def test_publish_returns_once_read_committed_readers_see_every_partition_of_the_run(sink, caplog):
    """commit_transaction returns before the coordinator has written its markers, partition by
    partition: publish() returned once the ledger record was visible, though a data partition could
    still hide the run from read_committed readers. Here another run's transaction stays open on the
    shared topic, which holds every partition's last stable offset below the run's records: publish
    must not return as if readers saw the run, and must name the partitions; once the other
    transaction ends, a read_committed reader sees all of it."""
    import logging

    from atomic_publish.publishers.layouts.kafka import H_RUN, header, read_range

    publisher, diagnostic = sink(timeout_seconds=3)
    other_publisher = KafkaPublisher(publisher.config)
    other = Run.new("other", DATE)
    other_staged = other_publisher.stage(other, table(30).to_reader())  # open on every partition
    run = Run.new("items", DATE)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="atomic_publish"):
        assert publish(publisher, diagnostic, run, table(40)).receipt is not None
    assert time.monotonic() - started >= 3  # it waited for the markers, up to its bound
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "do not see all of it yet" in warning and "partition 0 at" in warning, warning
    other_publisher.discard(other, [other_staged])  # aborts the other transaction
    config = publisher.config
    deadline = time.monotonic() + 10
    while True:
        seen = [
            msg
            for partition, (low, lso, _) in partition_offsets(config, config.topic).items()
            for msg in read_range(config, config.topic, partition, low, lso, committed=True)
            if header(msg, H_RUN) == f"items/{DATE}"
        ]
        if len(seen) == 40 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(seen) == 40


def test_a_record_within_max_record_bytes_that_the_producer_refuses_is_bad_input(sink):
    """Found from outside: a record the producer refuses (its message.max.bytes counts the key and
    the headers too) exited 5, "unreachable, re-run", every time. It is the input's (exit 2), and
    nothing is published."""
    publisher, diagnostic = sink()
    data = pa.table({"id": [1, 2], "v": ["x" * 999_950, "y"]})  # the value fits 1,000,000; with its headers not
    with pytest.raises(InputError, match=r"larger than Kafka accepts .*lower max_record_bytes"):
        publish(publisher, diagnostic, Run.new("items", DATE), data)
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT


def test_a_published_run_whose_topic_was_deleted_is_unknown(sink):
    """The ledger record references its data topic: when the topic is gone the record points at
    nothing, which is UNKNOWN (as a file sink's marker whose data file is gone), not DONE; the run
    is still refused a second publish."""
    from atomic_publish.publishers.layouts.kafka import admin_client

    publisher, diagnostic = sink()
    publish(publisher, diagnostic, Run.new("items", DATE), table(5))
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE
    config = publisher.config
    admin_client(config).delete_topics([config.topic])[config.topic].result(30)
    deadline = time.monotonic() + 30
    while (d := diagnostic.diagnose(Run.new("items", DATE))).state is State.DONE and time.monotonic() < deadline:
        time.sleep(0.2)
    assert d.state is State.UNKNOWN and f"topic {config.topic}, which does not exist" in d.reason, d.reason


def _partition_of(config, run_id):
    from atomic_publish.publishers.layouts.kafka import H_RUN, header, read_range

    return {
        partition
        for partition, (low, lso, _) in partition_offsets(config, config.topic).items()
        for msg in read_range(config, config.topic, partition, low, lso, committed=True)
        if header(msg, H_RUN) == run_id
    }


def test_publish_does_not_wait_for_a_partition_the_run_did_not_write_to(sink, caplog):
    """Found from outside: publish waited its whole bound (10 s) and warned that readers did not see
    the run whenever any partition of the topic had another transaction open, also one the run wrote
    nothing to (backfilling several dates of a dataset at once on a shared topic)."""
    import logging

    from confluent_kafka import Producer

    publisher, diagnostic = sink(timeout_seconds=5)
    config = publisher.config
    one = pa.table({"id": [7], "v": ["x"]})  # one key: always the same partition
    publish(publisher, diagnostic, Run.new("items", "2026-04-20"), one)
    (written,) = _partition_of(config, "items/2026-04-20")
    other = next(p for p in range(3) if p != written)
    outside = Producer(
        {"bootstrap.servers": config.bootstrap_servers, "transactional.id": f"outside-{uuid.uuid4()}", "log_level": 0}
    )
    outside.init_transactions(30)
    outside.begin_transaction()
    outside.produce(config.topic, b"{}", partition=other)
    assert outside.flush(30) == 0
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="atomic_publish"):
            publish(publisher, diagnostic, Run.new("items", DATE), one)
        took = time.monotonic() - started
        assert took < 4, took
        assert not [r for r in caplog.records if "do not see all of it yet" in r.getMessage()]
        assert _partition_of(config, f"items/{DATE}") == {written}
    finally:
        outside.abort_transaction(30)


def test_a_record_the_broker_refuses_as_too_large_is_bad_input(sink):
    """Found from outside: within the producer's limit but over the broker's (message.max.bytes, about
    1 MB by default), a record failed its delivery, then the ledger record could not be queued: exit 5
    on every re-run. The failed delivery is now read: InputError (exit 2), nothing published."""
    publisher, diagnostic = sink(max_record_bytes=3_000_000, properties={"message.max.bytes": "3000000"})
    data = pa.table({"id": [1], "v": [os.urandom(900_000).hex()]})  # 1.8 MB of JSON that lz4 cannot shrink
    with pytest.raises(InputError, match="larger than Kafka accepts"):
        publish(publisher, diagnostic, Run.new("items", DATE), data)
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.NOTHING_IN_FLIGHT


def test_a_failure_after_the_commit_answered_is_not_an_unknown_outcome(sink, monkeypatch):
    """Found from outside: a broker that stalled right after commit_transaction answered made the
    visibility check fail, and publish exited 14 ("outcome unknown") for a published run."""
    from confluent_kafka import KafkaError, KafkaException

    publisher, diagnostic = sink()

    def stalled(*args, **kwargs):
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    monkeypatch.setattr(KafkaPublisher, "_await_visible", stalled)
    assert publish(publisher, diagnostic, Run.new("items", DATE), table(5)).receipt is not None
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE


def test_records_are_strict_json_that_any_consumer_reads_back_exactly(sink, kafka_service):
    """Found from outside: a NaN or an infinity was written as the bare word NaN or Infinity (which
    JSON.parse, Jackson and Go refuse), and binary as Python's text of bytes (b'\\x00\\xff'). Records
    are strict JSON: non-finite floats as "NaN", "Infinity", "-Infinity" (also in lists and keys),
    binary as base64; the other values as before."""
    import base64
    import datetime as dt
    import decimal
    import json

    from tests.contract.readers import kafka_committed

    def strict(text):
        return json.loads(text, parse_constant=lambda word: pytest.fail(f"not JSON: {word} in {text!r}"))

    publisher, diagnostic = sink()
    data = pa.table(
        {
            "id": [1.5, float("nan"), 3.0],
            "f": [float("inf"), float("-inf"), -0.0],
            "l": [[1.0, float("nan")], [], None],
            "b": pa.array([b"\x00\xff\n", b"", None]),
            "d": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("-0.01")], pa.decimal128(5, 2)),
            "t": pa.array([dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)] * 3, pa.timestamp("us", tz="UTC")),
        }
    )
    publish(publisher, diagnostic, Run.new("items", DATE), data)
    records = kafka_committed(kafka_service.bootstrap, publisher.config.topic)
    got = [[strict(m.key()), strict(m.value())] for m in records]
    expected = [
        [
            [1.5],
            {
                "id": 1.5,
                "f": "Infinity",
                "l": [1.0, "NaN"],
                "b": base64.b64encode(b"\x00\xff\n").decode(),
                "d": "1.50",
                "t": "2026-01-01 10:00:00+00:00",
            },
        ],
        [[3.0], {"id": 3.0, "f": -0.0, "l": None, "b": None, "d": "-0.01", "t": "2026-01-01 10:00:00+00:00"}],
        [["NaN"], {"id": "NaN", "f": "-Infinity", "l": [], "b": "", "d": None, "t": "2026-01-01 10:00:00+00:00"}],
    ]
    assert sorted(got, key=json.dumps) == sorted(expected, key=json.dumps)
    assert diagnostic.diagnose(Run.new("items", DATE)).state is State.DONE


def test_nanosecond_timestamps_and_times_keep_their_nanoseconds(sink, kafka_service):
    """A time64[ns] lost its nanoseconds silently (Python's time keeps microseconds), and a
    timestamp[ns] printed them only because pandas was installed (without it, to_pylist fails).
    Both print as pandas' Timestamp does: 9 digits with nanoseconds, 6 with microseconds only. A
    duration[ns] failed the same way without pandas; it prints as Python's timedelta, its fraction
    likewise."""
    import json

    from tests.contract.readers import kafka_committed

    publisher, diagnostic = sink()
    data = pa.table(
        {
            "id": [1, 2, 3],
            "at": pa.array([1_700_000_000_123_456_789, -1, None], pa.timestamp("ns", tz="Asia/Kolkata")),
            "on": pa.array([3_600_000_000_001, 1_000, None], pa.time64("ns")),
            "took": pa.array([86_400_000_000_001, -1_001, None], pa.duration("ns")),  # as timedelta prints
            "nested": pa.array(  # also inside structs, lists, maps and dictionaries
                [{"at": [1_001], "by": [("k", 2_000)]}, None, {"at": None, "by": []}],
                pa.struct([("at", pa.list_(pa.timestamp("ns"))), ("by", pa.map_(pa.string(), pa.duration("ns")))]),
            ),
            "coded": pa.array([1_001, 1_001, None], pa.timestamp("ns", tz="UTC")).dictionary_encode(),
        }
    )
    publish(publisher, diagnostic, Run.new("items", DATE), data)
    records = kafka_committed(kafka_service.bootstrap, publisher.config.topic)
    got = sorted((json.loads(m.value()) for m in records), key=lambda r: r["id"])
    assert got == sorted(
        [
            {
                "id": 1,
                "at": "2023-11-15 03:43:20.123456789+05:30",
                "on": "01:00:00.000000001",
                "took": "1 day, 0:00:00.000000001",
                "nested": {"at": ["1970-01-01 00:00:00.000001001"], "by": [["k", "0:00:00.000002"]]},
                "coded": "1970-01-01 00:00:00.000001001+00:00",
            },
            {
                "id": 2,
                "at": "1970-01-01 05:29:59.999999999+05:30",
                "on": "00:00:00.000001",
                "took": "-1 day, 23:59:59.999998999",
                "nested": None,
                "coded": "1970-01-01 00:00:00.000001001+00:00",
            },
            {"id": 3, "at": None, "on": None, "took": None, "nested": {"at": None, "by": []}, "coded": None},
        ],
        key=lambda r: r["id"],
    )
