"""Readers that do not use the project's code: what a downstream consumer of each sink would write
with nothing but the server's own client library and the sink's documented layout. The contract and
fault suites judge every outcome with these, so a bug shared by a publisher and its diagnostic
cannot hide itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

# -- file ------------------------------------------------------------------------------------------


def file_gated(root: Path, dataset: str, run_date: str, ext: str = "csv") -> bytes | None:
    """The published file of a run, read only once its ``.success`` manifest exists, and checked
    against the manifest's sha256 and size."""
    final = root / dataset / f"{run_date}.{ext}"
    marker = final.with_name(final.name + ".success")
    try:
        manifest = json.loads(marker.read_text())
    except FileNotFoundError:
        return None
    data = final.read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"], "published file does not match its manifest"
    assert len(data) == manifest["bytes"]
    return data


# -- s3 --------------------------------------------------------------------------------------------


def s3_gated(client: Any, bucket: str, prefix: str, dataset: str, run_date: str) -> bytes | None:
    """The objects a run's manifest lists, in order, each checked against its sha256; None when
    there is no manifest, or the commit point holds a fence (recover's "not published")."""
    key = f"{prefix}/{dataset}/{run_date}/_MANIFEST.json"
    try:
        doc = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except client.exceptions.NoSuchKey:
        return None
    if doc.get("fence") is True:
        return None
    out = b""
    for obj in doc["objects"]:
        data = client.get_object(Bucket=bucket, Key=obj["key"])["Body"].read()
        assert hashlib.sha256(data).hexdigest() == obj["sha256"], f"{obj['key']} does not match the manifest"
        out += data
    return out


# -- kafka -----------------------------------------------------------------------------------------


def _passing(error: Any) -> bool:
    """A broker error that a moment cures (leadership moving after a restart, a timeout)."""
    from confluent_kafka import KafkaError

    passing = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
    }
    return bool(error.retriable()) or error.code() in passing


def kafka_committed(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record a read_committed consumer sees in ``topic``, from the start to the end."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"independent-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "log_level": 0,
        }
    )
    try:
        # A broker that was just restarted answers "not leader" or "leader not available" for a
        # moment: asked again until the deadline, never read as "nothing there".
        deadline = time.monotonic() + timeout
        while True:
            try:
                metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if metadata is None or (metadata.error is not None and not _passing(metadata.error)):
                    return []
                if metadata.error is not None:
                    raise KafkaException(metadata.error)
                parts = []
                for p in metadata.partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    if high > low:
                        parts.append((p, low, high))
                break
            except KafkaException as exc:
                if not _passing(exc.args[0]) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, low) for p, low, _ in parts])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        last_progress = time.monotonic()
        while parts and time.monotonic() < deadline:
            msg = consumer.poll(0.05)
            if msg is not None and not msg.error():
                out.append(msg)
                last_progress = time.monotonic()
            # A read_committed consumer's high watermark is the last stable offset: done once every
            # partition's position reaches it (aborted records and markers are skipped silently).
            positions = consumer.position([TopicPartition(topic, p) for p, _, _ in parts])
            if all(tp.offset >= high for tp, (_, _, high) in zip(positions, parts, strict=True)):
                break
            if time.monotonic() - last_progress > 3:
                break
        return out
    finally:
        consumer.close()


def _header(msg: Any, name: str = "atomic-publish") -> str | None:
    for key, value in msg.headers() or []:
        if key == name and value is not None:
            return bytes(value).decode()
    return None


def kafka_ledger(bootstrap: str, ledger_topic: str, run_id: str) -> dict[str, Any] | None:
    """The last committed ledger record of ``run_id``."""
    found = None
    for msg in kafka_committed(bootstrap, ledger_topic):
        if msg.key() == run_id.encode():
            found = json.loads(msg.value()) if msg.value() else None
    return found


def kafka_run_records(bootstrap: str, topic: str, run_id: str) -> list[bytes]:
    """Committed record values of ``run_id`` (by the documented header ``<run_id> <attempt> ...``)."""
    return [msg.value() for msg in kafka_committed(bootstrap, topic) if (_header(msg) or "").split(" ")[0] == run_id]


# -- postgres --------------------------------------------------------------------------------------


def postgres_ledger(dsn: str, schema: str, run_id: str, ledger: str = "atomic_publish_ledger") -> dict[str, Any] | None:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{ledger}"',)).fetchone()["to_regclass"] is None:
            return None
        return conn.execute(
            sql.SQL("SELECT * FROM {} WHERE run_id = %s").format(sql.Identifier(schema, ledger)), (run_id,)
        ).fetchone()


def postgres_rows(dsn: str, schema: str, table: str, order_by: str) -> list[tuple[Any, ...]] | None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()[0] is None:
            return None
        return conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY {}").format(sql.Identifier(schema, table), sql.Identifier(order_by))
        ).fetchall()


# -- iceberg ---------------------------------------------------------------------------------------


def iceberg_snapshot_of(table: Any, run_id: str) -> Any | None:
    """The snapshot of main's current history whose summary carries ``run_id`` (the documented
    summary key ``atomic-publish.run-id``), walking parent ids with pyiceberg's metadata only."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        if (snapshot.summary.additional_properties or {}).get("atomic-publish.run-id") == run_id:
            return snapshot
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return None


def iceberg_gated(catalog: Any, identifier: tuple[str, str], run_id: str) -> Any | None:
    """The run's rows as of its snapshot (a pyarrow Table), or None when it is not published."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    try:
        table = catalog.load_table(identifier)
    except (NoSuchTableError, NoSuchNamespaceError):
        return None
    snapshot = iceberg_snapshot_of(table, run_id)
    return None if snapshot is None else table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
