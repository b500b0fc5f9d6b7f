"""The harness's own servers for fault tests: each can be killed (SIGKILL) and started again on the
same address and data, keeps what it had committed, and Kafka and Postgres can be reached through a
FaultProxy. These tests use the module-scoped fault_* fixtures (servers of their own)."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.faults.proxy import RESET_BEFORE_REQUEST, Contains, Delay, KafkaApiKey
from tests.services._process import ServiceError, ServiceProcess, _descendants, _group_members, _running_of
from tests.services.kafka import KafkaService
from tests.services.postgres import PostgresService

# -- without a server ---------------------------------------------------------------------------------


def test_kill_leaves_the_directory_that_stop_removes(tmp_path):
    base = tmp_path / "service"
    base.mkdir()
    (base / "data").write_text("kept")
    # A child in the same process group.
    process = ServiceProcess("sleeper", ["bash", "-c", "sleep 60 & sleep 60"], base / "log", remove_after=base).start()
    time.sleep(0.2)
    assert len(_group_members(process.pid)) >= 2
    process.kill()
    assert not process.alive() and _group_members(process.pid) == []
    assert (base / "data").read_text() == "kept"
    process.start()  # the same command line again
    assert process.alive()
    process.stop()
    assert not base.exists()


def test_kill_also_kills_children_that_left_the_process_group(tmp_path):
    """Postgres's backends call setsid(): a killpg of the postmaster's group does not reach them, and
    one still running holds the shared memory that makes the next start fail (seen under load: a
    backend busy in COPY outlived the kill)."""
    process = ServiceProcess(
        "sleeper", ["bash", "-c", "setsid sleep 61 & sleep 60"], tmp_path / "log", remove_after=tmp_path / "x"
    ).start()
    deadline = time.monotonic() + 10
    while not set(_descendants(process.pid)) - set(_group_members(process.pid)):
        assert time.monotonic() < deadline, "the child never called setsid()"
        time.sleep(0.02)
    children = _descendants(process.pid)
    process.kill()
    assert _running_of(children) == [], "a child that called setsid() outlived kill()"
    process.stop()


@pytest.mark.parametrize(
    "service",
    [PostgresService("postgresql://u:p@db.example:5432/x", "env"), KafkaService("broker.example:9092", "docker")],
    ids=["postgres", "kafka"],
)
def test_only_a_local_process_can_be_killed(service):
    for act in (service.kill, service.start_again, service.restart):
        with pytest.raises(ServiceError, match="not started by the harness as a local process"):
            act()


def _refused(host_port: str) -> bool:
    host, port = host_port.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _hung_up(host: str, port: int) -> bool:
    """The server accepts a connection, then closes or resets it without a byte (the reset may even
    come while connect() returns)."""
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.settimeout(5)
            return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@contextlib.contextmanager
def _left_running(service) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """A module's server must be running for the next test, whatever this one did to it."""
    try:
        yield
    finally:
        if service.process is not None and not service.process.alive():
            service.start_again()


# -- Postgres -----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_postgres_keeps_committed_rows_across_a_kill(fault_postgres):
    import psycopg

    table = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(fault_postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'committed')")
    session = psycopg.connect(fault_postgres.dsn)  # open at the time of the crash
    pid_file = fault_postgres.process.remove_after / "data" / "postmaster.pid"
    with _left_running(fault_postgres):
        started = time.monotonic()
        fault_postgres.kill()
        killed_in = time.monotonic() - started
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(fault_postgres.dsn, connect_timeout=2)
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
        assert pid_file.exists()  # stale: Postgres sees its pid is gone and starts anyway
        seconds = fault_postgres.start_again()
    with psycopg.connect(fault_postgres.dsn) as conn:
        assert conn.execute(f"SELECT id, note FROM {table}").fetchall() == [(1, "committed")]
    print(f"postgres: kill {killed_in:.3f}s, start_again {seconds:.2f}s")


@pytest.mark.integration
def test_postgres_through_a_fault_proxy_across_a_restart(fault_postgres):
    import psycopg

    proxy, dsn = fault_postgres.proxied()  # started: the caller stops it
    try:
        assert f"port={proxy.port}" in dsn and "sslmode=disable" in dsn
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert proxy.stats.connections_accepted == 1
        # The proxy sees the plaintext protocol: a rule can match the text of a query.
        rule = proxy.add_rule(Contains(b"SELECT 'doomed'"), RESET_BEFORE_REQUEST)
        with psycopg.connect(dsn) as conn, pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 'doomed'")
        assert rule.triggered.is_set()
        # The proxy outlives a restart of the server behind it.
        with _left_running(fault_postgres):
            fault_postgres.restart()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        proxy.stop()


# -- Kafka --------------------------------------------------------------------------------------------


def _topic(kafka: KafkaService) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"restart-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    return name


def _produce_in_transaction(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value)
    producer.commit_transaction(30)


def _read_committed(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[bytes]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                values.append(message.value())
        return values
    finally:
        consumer.close()


@pytest.mark.integration
def test_kafka_keeps_committed_records_across_a_kill(fault_kafka):
    assert fault_kafka.controller is not None  # see tests/services/kafka.py: a kill in one JVM can hang a commit
    topic = _topic(fault_kafka)
    # Killed right after the commit: its markers may still be unwritten, and must be written after.
    _produce_in_transaction(fault_kafka.bootstrap, topic, [b"before"])
    with _left_running(fault_kafka):
        started = time.monotonic()
        fault_kafka.kill()
        killed_in = time.monotonic() - started
        assert _refused(fault_kafka.bootstrap)
        # The proxy still listens, but resets a client when nothing answers behind it.
        assert _hung_up("127.0.0.1", fault_kafka.proxy.port)
        seconds = fault_kafka.start_again()
    assert _read_committed(fault_kafka.bootstrap, topic, 1) == [b"before"]
    started = time.monotonic()
    _produce_in_transaction(fault_kafka.bootstrap, topic, [b"after"])  # transactions work again
    txn_seconds = time.monotonic() - started
    assert _read_committed(fault_kafka.bootstrap, topic, 2) == [b"before", b"after"]
    print(f"kafka: kill {killed_in:.3f}s, start_again {seconds:.2f}s, first transaction after {txn_seconds:.2f}s")


@pytest.mark.integration
def test_kafka_clients_at_the_proxied_bootstrap_go_through_the_proxy(fault_kafka):
    from confluent_kafka.admin import AdminClient

    proxy = fault_kafka.proxy
    assert proxy is not None and fault_kafka.proxied_bootstrap == proxy.address
    topic = _topic(fault_kafka)
    # The metadata names the proxy on that listener, and the broker itself on the plain one.
    via_proxy = AdminClient({"bootstrap.servers": fault_kafka.proxied_bootstrap}).list_topics(timeout=10)
    direct = AdminClient({"bootstrap.servers": fault_kafka.bootstrap}).list_topics(timeout=10)
    assert [(b.host, b.port) for b in via_proxy.brokers.values()] == [("127.0.0.1", proxy.port)]
    assert [f"{b.host}:{b.port}" for b in direct.brokers.values()] == [fault_kafka.bootstrap]

    accepted = proxy.stats.connections_accepted
    produce = proxy.add_rule(KafkaApiKey(0), Delay(0))  # observes the Produce request, changes nothing
    end_txn = proxy.add_rule(KafkaApiKey(26), Delay(0))
    _produce_in_transaction(fault_kafka.proxied_bootstrap, topic, [b"proxied"])
    assert produce.triggered.is_set() and end_txn.triggered.is_set()
    assert _read_committed(fault_kafka.proxied_bootstrap, topic, 1) == [b"proxied"]
    assert proxy.stats.connections_accepted > accepted

    # The proxy outlives a restart: new connections reach the restarted broker.
    with _left_running(fault_kafka):
        fault_kafka.restart()
    produce = proxy.add_rule(KafkaApiKey(0), Delay(0))
    _produce_in_transaction(fault_kafka.proxied_bootstrap, topic, [b"after restart"])
    assert produce.triggered.is_set()
    assert _read_committed(fault_kafka.proxied_bootstrap, topic, 2) == [b"proxied", b"after restart"]


# -- MinIO --------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_minio_keeps_objects_across_a_kill(fault_minio):
    client = fault_minio.client()
    key = f"restart/{uuid.uuid4().hex}"
    client.put_object(Bucket=fault_minio.bucket, Key=key, Body=b"survives")
    with _left_running(fault_minio):
        started = time.monotonic()
        fault_minio.kill()
        killed_in = time.monotonic() - started
        assert _refused(fault_minio.endpoint.removeprefix("http://"))
        seconds = fault_minio.start_again()
    assert fault_minio.client().get_object(Bucket=fault_minio.bucket, Key=key)["Body"].read() == b"survives"
    print(f"minio: kill {killed_in:.3f}s, start_again {seconds:.2f}s")
