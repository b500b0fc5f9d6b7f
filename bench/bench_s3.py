"""Benchmark: the S3 sink against a plain boto3 ``upload_file`` to the same endpoint, in the same run.
The endpoint is one of the test harness's local servers (real HTTP on 127.0.0.1): moto's server, or
MinIO built from its Go module (``--server moto|minio``); run it once per server to compare.

Two measurements, because a job hands the sink one of two things:

1. **files already in the sink's format** (the issue's target): a ~1 GB Parquet file published to a
   ``format = "parquet"`` sink, uploaded byte for byte under the attempt's prefix and then the
   conditional manifest, vs ``upload_file`` of the same file;
2. **records to encode** (CSV): publish from the records vs the same job done by hand, encoding a
   CSV file and then ``upload_file`` of it.

Peak RSS is that of the CLI process publishing each way (VmHWM).

    .venv/bin/python bench/bench_s3.py [--server moto|minio] [--refund-rows 10000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atomic_publish import Run, open_input, open_inputs, publish  # noqa: E402
from atomic_publish.diagnostics.s3 import S3Diagnostic  # noqa: E402
from atomic_publish.publishers.s3 import S3Publisher, S3SinkConfig  # noqa: E402
from bench.bench_file_sink import prepare_output_parquet  # noqa: E402
from bench.peak_rss import cli_peak_rss  # noqa: E402
from tests.services.minio import start_local_minio  # noqa: E402
from tests.services.s3 import start_local_s3  # noqa: E402


def ready_parquet(work: Path, source: Path) -> Path:
    """The pipeline's output as an uncompressed Parquet file of about 1 GB: a job's output already
    in the sink's format (uncompressed so that ~1 GB of bytes cross the wire, as the issue asks)."""
    target = work / f"s3-ready-{source.stem}.parquet"
    if not target.exists():
        reader = open_input(source)
        with pq.ParquetWriter(target, reader.schema, compression="none", use_dictionary=False) as writer:
            for batch in reader:
                writer.write_batch(batch)
    return target


def encode_csv(source: Path, target: Path) -> None:
    reader = open_input(source)
    with pacsv.CSVWriter(target, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refund-rows", type=int, default=10_000_000, help="~1 GB either way at 10M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--skip-csv", action="store_true", help="only the files-as-they-are measurement")
    parser.add_argument("--server", choices=("moto", "minio"), default="moto", help="the local S3 server")
    args = parser.parse_args()
    source = prepare_output_parquet(args.work, args.refund_rows)
    ready = ready_parquet(args.work, source)
    encoded = args.work / "s3-baseline.csv"
    start = start_local_minio if args.server == "minio" else start_local_s3
    s3 = start(args.work / f"s3-bench-{args.server}")
    os.environ.update(s3.env())
    try:
        client = s3.client()

        def sink(fmt: str, prefix: str) -> S3SinkConfig:
            return S3SinkConfig(
                bucket=s3.bucket,
                prefix=prefix,
                format=fmt,  # type: ignore[arg-type]
                endpoint_url=s3.endpoint,
                region=s3.region,
                addressing_style="path",
            )

        def publish_files(round_number: int) -> None:
            config = sink("parquet", f"bench-files/{round_number}")
            run = Run.new("refunds_settled", "2026-04-24")
            receipt = publish(S3Publisher(config), S3Diagnostic(config), run, open_inputs([ready])).receipt
            assert receipt is not None and receipt.bytes == ready.stat().st_size, receipt

        def upload_ready(round_number: int) -> None:
            client.upload_file(str(ready), s3.bucket, f"baseline/{round_number}.parquet")

        def publish_records(round_number: int) -> None:
            config = sink("csv", f"bench-records/{round_number}")
            run = Run.new("refunds_settled", "2026-04-24")
            assert publish(S3Publisher(config), S3Diagnostic(config), run, open_input(source)).receipt

        def encode_then_upload(round_number: int) -> None:
            encode_csv(source, encoded)
            client.upload_file(str(encoded), s3.bucket, f"baseline/{round_number}.csv")

        sides: dict[str, Any] = {"upload_file": upload_ready, "publish_files": publish_files}
        if not args.skip_csv:
            sides |= {"encode+upload_file": encode_then_upload, "publish_records": publish_records}
        times: dict[str, list[float]] = {name: [] for name in sides}
        for round_number in range(args.rounds):
            names = list(sides) if round_number % 2 == 0 else list(reversed(sides))
            for name in names:
                started = time.perf_counter()
                sides[name](round_number)
                times[name].append(time.perf_counter() - started)
            # Keep the server's store from growing round after round.
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket):
                for obj in page.get("Contents", []):
                    client.delete_object(Bucket=s3.bucket, Key=obj["Key"])
        medians = {k: statistics.median(v) for k, v in times.items()}
        result: dict[str, Any] = {
            "server": args.server,
            "files_bytes": ready.stat().st_size,
            "rows": pq.ParquetFile(source).metadata.num_rows,
            "rounds": args.rounds,
            "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "median_s": {k: round(v, 2) for k, v in medians.items()},
            "files_mb_per_s": {
                k: round(ready.stat().st_size / 2**20 / medians[k], 1) for k in ("upload_file", "publish_files")
            },
            "ratio_publish_files_over_upload_file": round(medians["publish_files"] / medians["upload_file"], 3),
            "peak_rss_mb": {"publish_files (parquet as is)": peak_rss(args.work, ready, s3, "parquet")},
        }
        if not args.skip_csv:
            result["csv_bytes"] = encoded.stat().st_size
            result["ratio_publish_records_over_encode+upload_file"] = round(
                medians["publish_records"] / medians["encode+upload_file"], 3
            )
            result["peak_rss_mb"]["publish_records (encode csv)"] = peak_rss(args.work, source, s3, "csv")
        print(json.dumps(result, indent=2))
    finally:
        s3.stop()
        encoded.unlink(missing_ok=True)


def peak_rss(work: Path, source: Path, s3: Any, fmt: str) -> float:
    cfg = work / "s3-rss.toml"
    cfg.write_text(
        f'[sinks.b]\ntype = "s3"\nbucket = "{s3.bucket}"\nprefix = "rss-{fmt}"\nendpoint_url = "{s3.endpoint}"\n'
        f'region = "us-east-1"\naddressing_style = "path"\nformat = "{fmt}"\n'
    )
    args = ["publish", "--sink", "b", "--dataset", "refunds_settled", "--run-date", "2026-04-24", str(source)]
    peak_mb, _ = cli_peak_rss(args, {**os.environ, "ATOMIC_PUBLISH_CONFIG": str(cfg)}, work)
    return peak_mb


if __name__ == "__main__":
    main()
