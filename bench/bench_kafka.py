"""Benchmark: Kafka transactional publish (one transaction, ledger record, fencing) vs a plain
idempotent, non-transactional producer sending the same records to the same broker, same run.

Both sides encode each row the same way (JSON, ~200 bytes) and produce it with the same client
settings; the difference is the transaction (init, begin, commit) and the ledger check and record.
The broker is the real Apache Kafka from the test harness. Peak RSS is that of the CLI process
publishing, at two input sizes.

    .venv/bin/python bench/bench_kafka.py [--records 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atomic_publish import Run, publish  # noqa: E402
from atomic_publish.diagnostics.kafka import KafkaDiagnostic  # noqa: E402
from atomic_publish.publishers.kafka import RECORD_ENCODER, KafkaPublisher, KafkaSinkConfig, encode_record  # noqa: E402
from bench.peak_rss import cli_peak_rss  # noqa: E402
from tests.services.kafka import start_local_kafka  # noqa: E402


def records(n: int) -> pa.Table:
    # ~200-byte JSON values: a refund-like row.
    return pa.table(
        {
            "refund_id": [f"R20260424-{i:010d}" for i in range(n)],
            "merchant_id": [f"M{i % 5000:07d}" for i in range(n)],
            "merchant_name": [f"Merchant {i % 5000:07d}" for i in range(n)],
            "amount_paise": [(i * 7919) % 5_000_000 for i in range(n)],
            "currency": ["INR"] * n,
            "note": ["settled refund for a returned order, processed by the nightly job"] * n,
            "_run_id": ["2026-04-24T06:00:00+05:30"] * n,
        }
    )


def plain(bootstrap: str, topic: str, table: pa.Table) -> float:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
        }
    )
    started = time.perf_counter()
    for batch in table.to_batches(65536):
        for row in batch.to_pylist():
            value = encode_record(row)  # the same encoding code as the sink
            key = RECORD_ENCODER.encode([row["refund_id"]]).encode()
            while True:
                try:
                    producer.produce(topic, value=value, key=key)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    table = records(args.records)
    value_bytes = len(json.dumps(table.slice(0, 1).to_pylist()[0], separators=(",", ":")))
    kafka = start_local_kafka(args.work / "kafka-bench")
    try:
        times: dict[str, list[float]] = {"plain-idempotent": [], "transactional-publish": []}
        for round_number in range(args.rounds):
            config = KafkaSinkConfig(
                bootstrap_servers=kafka.bootstrap,
                topic=f"bench-{round_number}",
                ledger_topic="bench-ledger",
                key_columns=("refund_id",),
            )
            KafkaPublisher(config).ensure_topics("bench")
            from confluent_kafka.admin import AdminClient, NewTopic

            admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
            for future in admin.create_topics([NewTopic(f"bench-plain-{round_number}", 3, 1)]).values():
                future.result(timeout=30)
            order = (
                ["plain-idempotent", "transactional-publish"]
                if round_number % 2 == 0
                else ["transactional-publish", "plain-idempotent"]
            )
            for side in order:
                if side == "plain-idempotent":
                    times[side].append(plain(kafka.bootstrap, f"bench-plain-{round_number}", table))
                else:
                    started = time.perf_counter()
                    publish(
                        KafkaPublisher(config),
                        KafkaDiagnostic(config),
                        Run.new(f"bench{round_number}", "2026-04-24"),
                        table.to_reader(65536),
                    )
                    times[side].append(time.perf_counter() - started)
        medians = {k: statistics.median(v) for k, v in times.items()}
        rss = [peak_rss(args.work, kafka.bootstrap, n) for n in (100_000, args.records)]
        print(
            json.dumps(
                {
                    "records": args.records,
                    "value_bytes": value_bytes,
                    "rounds": args.rounds,
                    "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
                    "median_s": {k: round(v, 2) for k, v in medians.items()},
                    "records_per_s": {k: round(args.records / v) for k, v in medians.items()},
                    "throughput_ratio_publish_vs_plain": round(
                        medians["plain-idempotent"] / medians["transactional-publish"], 3
                    ),
                    "peak_rss": rss,
                },
                indent=2,
            )
        )
    finally:
        kafka.stop()


def peak_rss(work: Path, bootstrap: str, n: int) -> dict[str, float]:
    source = work / f"kafka-{n}.parquet"
    pq.write_table(records(n), source, row_group_size=65536)  # a streamable input
    cfg = work / "kafka-rss.toml"
    cfg.write_text(
        f'[sinks.k]\ntype = "kafka"\nbootstrap_servers = "{bootstrap}"\n'
        f'topic = "rss-{n}"\nledger_topic = "rss-ledger"\n'
    )
    args = ["publish", "--sink", "k", "--dataset", f"rss{n}", "--run-date", "2026-04-24", str(source)]
    peak_mb, _ = cli_peak_rss(args, {**os.environ, "ATOMIC_PUBLISH_CONFIG": str(cfg)}, work)
    return {"records": n, "peak_rss_mb": peak_mb}


if __name__ == "__main__":
    main()
