"""Benchmark: S3 publish (stream-encode CSV into a multipart upload under the attempt's prefix, then
the conditional manifest) vs a plain boto3 ``upload_file`` of the same bytes, same endpoint, same
run. The endpoint is the test harness's moto server (real HTTP on 127.0.0.1).

The publish starts from the records (a Parquet file) and encodes them as it uploads; the baseline
uploads bytes that were encoded beforehand, so the encode time is reported on its own as well.
Peak RSS is that of the CLI process publishing (VmHWM).

    .venv/bin/python bench/bench_s3.py [--refund-rows 10000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_file_sink import prepare_output_parquet  # noqa: E402
from bench.peak_rss import cli_peak_rss  # noqa: E402
from diagnostics.s3 import S3Diagnostic  # noqa: E402
from publishers import Run, open_input, publish  # noqa: E402
from publishers.s3 import S3Publisher, S3SinkConfig  # noqa: E402
from tests.services.s3 import start_local_s3  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refund-rows", type=int, default=10_000_000, help="~1 GB of CSV at 10M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    source = prepare_output_parquet(args.work, args.refund_rows)
    encoded = args.work / "s3-baseline.csv"
    started = time.perf_counter()
    reader = open_input(source)
    with pacsv.CSVWriter(encoded, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
    encode_s = time.perf_counter() - started
    size = encoded.stat().st_size
    s3 = start_local_s3(args.work / "s3-bench")
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    try:
        client = s3.client()
        times: dict[str, list[float]] = {"upload_file": [], "publish": []}
        for round_number in range(args.rounds):
            config = S3SinkConfig(
                bucket=s3.bucket,
                prefix=f"bench/{round_number}",
                endpoint_url=s3.endpoint,
                region=s3.region,
                addressing_style="path",
            )
            order = ["upload_file", "publish"] if round_number % 2 == 0 else ["publish", "upload_file"]
            for side in order:
                started = time.perf_counter()
                if side == "upload_file":
                    client.upload_file(str(encoded), s3.bucket, f"baseline/{round_number}.csv")
                else:
                    receipt = publish(
                        S3Publisher(config),
                        S3Diagnostic(config),
                        Run.new("refunds_settled", "2026-04-24"),
                        open_input(source),
                    ).receipt
                    assert receipt is not None and receipt.bytes == size, (receipt, size)
                times[side].append(time.perf_counter() - started)
            client.delete_object(Bucket=s3.bucket, Key=f"baseline/{round_number}.csv")
        peak = peak_rss(args.work, source, s3)
        medians = {k: statistics.median(v) for k, v in times.items()}
        print(
            json.dumps(
                {
                    "bytes": size,
                    "rows": pq.ParquetFile(source).metadata.num_rows,
                    "rounds": args.rounds,
                    "encode_only_s": round(encode_s, 2),
                    "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
                    "median_s": {k: round(v, 2) for k, v in medians.items()},
                    "mb_per_s": {k: round(size / 2**20 / v, 1) for k, v in medians.items()},
                    "ratio_publish_over_upload_file": round(medians["publish"] / medians["upload_file"], 2),
                    "publish_peak_rss_mb": peak,
                },
                indent=2,
            )
        )
    finally:
        s3.stop()
        encoded.unlink(missing_ok=True)


def peak_rss(work: Path, source: Path, s3) -> float:  # type: ignore[no-untyped-def]
    cfg = work / "s3-rss.toml"
    cfg.write_text(
        f'[sinks.b]\ntype = "s3"\nbucket = "{s3.bucket}"\nprefix = "rss"\nendpoint_url = "{s3.endpoint}"\n'
        'region = "us-east-1"\naddressing_style = "path"\n'
    )
    args = ["publish", "--sink", "b", "--dataset", "refunds_settled", "--run-date", "2026-04-24", str(source)]
    peak_mb, _ = cli_peak_rss(args, {**os.environ, "ATOMIC_PUBLISH_CONFIG": str(cfg)}, work)
    return peak_mb


if __name__ == "__main__":
    main()
