"""Proof that each service of the harness is the real thing: each test here fails on a fake.

librdkafka's mock cluster, for one, shows aborted records to read_committed consumers and does not
fence producers; an in-memory S3 double rarely honours conditional writes.
"""

from __future__ import annotations

import logging
import time
import uuid

import pyarrow as pa
import pytest

pytestmark = pytest.mark.integration
# librdkafka logs through Python logging here: a fenced producer kept alive by pytest's report of
# the expected error must not print to stderr after the broker has stopped.
QUIET = logging.getLogger("tests.kafka.client")


# -- Postgres -----------------------------------------------------------------------------------


def test_postgres_merge_and_rollback(postgres_service):
    import psycopg

    with psycopg.connect(postgres_service.dsn, autocommit=True) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        assert int(version) >= 150000, "MERGE needs PostgreSQL 15"
        conn.execute("DROP TABLE IF EXISTS harness_target, harness_source")
        conn.execute("CREATE TABLE harness_target (id int PRIMARY KEY, v text)")
        conn.execute("CREATE TABLE harness_source (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO harness_target VALUES (1, 'old'), (2, 'keep')")
        conn.execute("INSERT INTO harness_source VALUES (1, 'new'), (3, 'added')")
        conn.execute(
            "MERGE INTO harness_target t USING harness_source s ON t.id = s.id "
            "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)"
        )
        rows = conn.execute("SELECT id, v FROM harness_target ORDER BY id").fetchall()
        assert rows == [(1, "new"), (2, "keep"), (3, "added")]

    with psycopg.connect(postgres_service.dsn) as conn:
        conn.execute("INSERT INTO harness_target VALUES (4, 'rolled back')")
        conn.rollback()
    with psycopg.connect(postgres_service.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM harness_target WHERE id = 4").fetchone()[0] == 0


def test_postgres_allows_prepared_transactions(postgres_service):
    import psycopg

    with psycopg.connect(postgres_service.dsn, autocommit=True) as conn:
        assert int(conn.execute("SHOW max_prepared_transactions").fetchone()[0]) > 0


# -- Kafka --------------------------------------------------------------------------------------


def _topic(kafka_service, partitions: int = 1) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"harness-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_service.bootstrap, "logger": QUIET})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)
    return name


def _read_all(kafka_service, topic: str, isolation: str, expect_at_least: int = 0, wait: float = 8.0) -> list[str]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "logger": QUIET,
            "bootstrap.servers": kafka_service.bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[str] = []
    deadline = time.monotonic() + wait
    idle_after_enough = 0
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            if len(values) >= expect_at_least:
                idle_after_enough += 1
                if idle_after_enough >= 3:
                    break
            continue
        if msg.error():
            continue
        values.append(msg.value().decode())
    consumer.close()
    return values


def _producer(kafka_service, transactional_id: str):
    from confluent_kafka import Producer

    producer = Producer(
        {
            "logger": QUIET,
            "bootstrap.servers": kafka_service.bootstrap,
            "transactional.id": transactional_id,
            "enable.idempotence": True,
        }
    )
    producer.init_transactions(30)
    return producer


def test_kafka_aborted_transaction_is_invisible_to_read_committed(kafka_service):
    topic = _topic(kafka_service)
    producer = _producer(kafka_service, f"harness-{uuid.uuid4().hex[:8]}")
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, value=f"aborted-{i}")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=f"committed-{i}")
    producer.commit_transaction(30)

    assert _read_all(kafka_service, topic, "read_committed", expect_at_least=3) == [f"committed-{i}" for i in range(3)]
    # The aborted records are in the log: a read_uncommitted reader sees them. A broker that
    # never wrote them would make the first assertion meaningless.
    uncommitted = _read_all(kafka_service, topic, "read_uncommitted", expect_at_least=8)
    assert [v for v in uncommitted if v.startswith("aborted")] == [f"aborted-{i}" for i in range(5)]


def test_kafka_second_producer_with_same_transactional_id_fences_the_first(kafka_service):
    from confluent_kafka import KafkaException

    topic = _topic(kafka_service)
    txn_id = f"harness-fence-{uuid.uuid4().hex[:8]}"
    zombie = _producer(kafka_service, txn_id)
    zombie.begin_transaction()
    zombie.produce(topic, value="zombie")
    zombie.flush(30)

    successor = _producer(kafka_service, txn_id)  # bumps the epoch, aborts the zombie's transaction
    with pytest.raises(KafkaException) as info:
        zombie.produce(topic, value="zombie-2")
        zombie.commit_transaction(30)
    assert info.value.args[0].fatal() or "fenced" in str(info.value).lower()

    successor.begin_transaction()
    successor.produce(topic, value="successor")
    successor.commit_transaction(30)
    assert _read_all(kafka_service, topic, "read_committed", expect_at_least=1) == ["successor"]


# -- S3 -----------------------------------------------------------------------------------------


def test_s3_conditional_put_is_refused_on_an_existing_key(s3_service):
    from botocore.exceptions import ClientError

    client = s3_service.client()
    key = f"harness/{uuid.uuid4().hex}/_SUCCESS"
    first = client.put_object(Bucket=s3_service.bucket, Key=key, Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=s3_service.bucket, Key=key, Body=b"two", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_object(Bucket=s3_service.bucket, Key=key)["Body"].read() == b"one"

    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=s3_service.bucket, Key=key, Body=b"three", IfMatch='"0123456789abcdef"')
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    client.put_object(Bucket=s3_service.bucket, Key=key, Body=b"four", IfMatch=first["ETag"])
    assert client.get_object(Bucket=s3_service.bucket, Key=key)["Body"].read() == b"four"


# -- Iceberg ------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite-local", "sqlite-s3", "postgres-local", "postgres-s3", "rest"])
def iceberg_catalog(request, tmp_path):
    from tests.services import iceberg

    kind = request.param
    if kind == "rest":
        return iceberg.rest_catalog(request.getfixturevalue("iceberg_rest_service"))
    backend, storage = kind.split("-")
    extra: dict[str, str] = {}
    if storage == "s3":
        s3 = request.getfixturevalue("s3_service")
        warehouse = f"s3://{s3.bucket}/warehouse-{uuid.uuid4().hex[:8]}"
        extra = iceberg.s3_properties(s3)
    else:
        warehouse = (tmp_path / "warehouse").as_uri()
    if backend == "sqlite":
        return iceberg.sqlite_catalog(tmp_path / "catalog", warehouse, extra)
    pg = request.getfixturevalue("postgres_service")
    return iceberg.postgres_catalog(pg, f"iceberg_{uuid.uuid4().hex[:8]}", warehouse, extra)


def test_iceberg_table_created_appended_and_read_back(iceberg_catalog):
    namespace = f"ns_{uuid.uuid4().hex[:6]}"
    iceberg_catalog.create_namespace(namespace)
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "v": pa.array(["a", "b", "c"], pa.string())})
    table = iceberg_catalog.create_table(f"{namespace}.harness", schema=data.schema)
    table.append(data, snapshot_properties={"atomic_publish.run_id": "harness/2026-04-24"})
    reloaded = iceberg_catalog.load_table(f"{namespace}.harness")
    assert reloaded.scan().to_arrow().sort_by("id").to_pylist() == data.to_pylist()
    snapshots = reloaded.snapshots()
    assert len(snapshots) == 1
    assert snapshots[0].summary["atomic_publish.run_id"] == "harness/2026-04-24"


# -- hygiene ------------------------------------------------------------------------------------


def test_a_service_dies_with_the_session_even_when_the_session_is_killed(tmp_path):
    """pytest killed by SIGKILL runs no finalizer and no atexit hook; the kernel's parent-death
    signal must still take the service down."""
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import REPO

    script = (
        "import sys, time; from pathlib import Path; from tests.services.s3 import start_local_s3;"
        f"s = start_local_s3(Path({str(tmp_path)!r})); print(s.process.pid, flush=True); time.sleep(60)"
    )
    session = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    service_pid = int(session.stdout.readline())
    os.kill(service_pid, 0)  # alive while the session lives
    session.send_signal(signal.SIGKILL)
    session.wait()

    def alive() -> bool:
        try:
            os.kill(service_pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    outlived = alive()
    if outlived:
        os.kill(service_pid, signal.SIGKILL)  # never leave it behind, even when the test fails
    assert not outlived, f"service pid {service_pid} outlived the killed session"


# -- MinIO: the real object store (each of these fails on moto or an in-memory double) -----------


def test_minio_refuses_conditional_writes_and_invalid_bucket_names(minio_service):
    from botocore.exceptions import ClientError

    client = minio_service.client()
    bucket = minio_service.bucket
    key = f"harness/{uuid.uuid4().hex}/_MANIFEST.json"
    first = client.put_object(Bucket=bucket, Key=key, Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key=key, Body=b"two", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    second = client.put_object(Bucket=bucket, Key=key, Body=b"three", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key=key, Body=b"four", IfMatch=first["ETag"])  # stale now
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    got = client.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == b"three" and got["ETag"] == second["ETag"]

    # S3's naming rules: 3-63 characters, lower case, no underscore. (moto's server takes "Ab_c".)
    for name in ("ab", "Ab_c", "a" * 64):
        with pytest.raises(ClientError) as info:
            client.create_bucket(Bucket=name)
        assert info.value.response["Error"]["Code"] == "InvalidBucketName", name


def test_minio_lists_an_incomplete_upload_only_by_its_exact_key(minio_service):
    """Recorded behaviour (MinIO built by scripts/fetch-minio): ListMultipartUploads with a Prefix
    lists an incomplete upload only when the Prefix is the object's whole key; a Prefix that is a
    directory above it ("a/" or "a/b/") lists nothing, with or without Delimiter="/". Without a
    Prefix every open upload in the bucket is listed. (AWS S3, and moto, match by prefix.)"""
    client = minio_service.client()
    bucket = minio_service.bucket
    top = f"harness-{uuid.uuid4().hex[:8]}"
    key = f"{top}/b/part-00000.csv"
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 100)

    def listed(**kwargs) -> list[str]:
        return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket, **kwargs).get("Uploads", [])]

    try:
        assert listed(Prefix=key) == [key]
        assert listed(Prefix=f"{top}/") == []
        assert listed(Prefix=f"{top}/b/") == []
        assert listed(Prefix=f"{top}/b/part") == []
        assert listed(Prefix=f"{top}/", Delimiter="/") == []
        assert key in listed()
    finally:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    assert key not in listed()


def test_minio_keeps_objects_and_open_uploads_across_a_kill(tmp_path):
    """The fault-test ability: SIGKILL the server, start it again on the same port and data."""
    from botocore.exceptions import EndpointConnectionError

    from tests.services.minio import start_local_minio

    service = start_local_minio(tmp_path / "minio")
    try:
        client = service.client()
        bucket = service.bucket
        client.put_object(Bucket=bucket, Key="kept/object", Body=b"kept")
        key = "kept/upload.csv"
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)
        part = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"y" * 10)
        pid, endpoint = service.process.pid, service.endpoint

        service.kill()
        assert not service.process.alive()
        with pytest.raises(EndpointConnectionError):
            service.client().head_bucket(Bucket=bucket)

        seconds = service.start_again()
        assert service.endpoint == endpoint and service.process.pid != pid and seconds < 30
        client = service.client()
        assert client.get_object(Bucket=bucket, Key="kept/object")["Body"].read() == b"kept"
        assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket, Prefix=key)["Uploads"]] == [
            upload["UploadId"]
        ]
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"y" * 10
    finally:
        service.stop()


# -- Iceberg REST: Apache Iceberg's own RESTCatalogServer ------------------------------------------


@pytest.fixture(params=["local-warehouse", "minio-warehouse"])
def rest_service(request):
    name = "iceberg_rest_service" if request.param == "local-warehouse" else "iceberg_rest_minio_service"
    return request.getfixturevalue(name)


def test_iceberg_rest_catalog_commits_reads_back_and_refuses_a_conflicting_commit(rest_service):
    from pyiceberg.exceptions import CommitFailedException, NamespaceAlreadyExistsError

    from tests.services import iceberg

    catalog = iceberg.rest_catalog(rest_service)
    namespace = f"ns_{uuid.uuid4().hex[:6]}"
    catalog.create_namespace(namespace)
    assert (namespace,) in catalog.list_namespaces()
    with pytest.raises(NamespaceAlreadyExistsError):
        catalog.create_namespace(namespace)

    first = pa.table({"id": pa.array([1, 2], pa.int64()), "v": pa.array(["a", "b"], pa.string())})
    # No client-side retry: a refused commit must surface, not be rebased silently.
    table = catalog.create_table(
        f"{namespace}.harness", schema=first.schema, properties={"commit.retry.num-retries": "0"}
    )
    table.append(first, snapshot_properties={"atomic_publish.run_id": "harness/1"})
    assert catalog.load_table(f"{namespace}.harness").scan().to_arrow().sort_by("id").to_pylist() == first.to_pylist()

    stale = catalog.load_table(f"{namespace}.harness")
    fresh = catalog.load_table(f"{namespace}.harness")
    second = pa.table({"id": pa.array([3], pa.int64()), "v": pa.array(["c"], pa.string())})
    fresh.append(second, snapshot_properties={"atomic_publish.run_id": "harness/2"})
    with pytest.raises(CommitFailedException):
        stale.append(second, snapshot_properties={"atomic_publish.run_id": "harness/stale"})

    reloaded = catalog.load_table(f"{namespace}.harness")
    assert [s.summary["atomic_publish.run_id"] for s in reloaded.snapshots()] == ["harness/1", "harness/2"]
    assert reloaded.scan().to_arrow().sort_by("id").to_pylist() == pa.concat_tables([first, second]).to_pylist()
    if rest_service.origin == "local":
        location = reloaded.metadata.location
        if rest_service.s3 is not None:  # the files really are in MinIO's warehouse bucket
            assert location.startswith("s3://warehouse/")
            listing = rest_service.s3.client().list_objects_v2(Bucket="warehouse", Prefix=f"{namespace}/harness/")
            assert any(o["Key"].endswith(".parquet") for o in listing.get("Contents", []))
        else:
            assert location.startswith("file:")
