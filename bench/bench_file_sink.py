"""Benchmark: atomic publish through the file sink vs a plain non-atomic write + fsync.

Both sides consume the same Arrow stream (the refunds pipeline's output, read from a Parquet file)
and write the same CSV bytes; the baseline writes straight to the final name and fsyncs, the atomic
side is the whole publish() (run lock, pre-flight diagnosis, staging with sha256, fsync, pending
manifest, no-clobber rename, directory fsyncs, success manifest). Runs alternate, so drift in the
machine's load hits both sides alike; medians and the ratio are reported.

Peak RSS is measured for the whole pipeline (`atomic-publish refunds run`) in a child process at
two input sizes, to show memory does not grow with the input.

    .venv/bin/python bench/bench_file_sink.py            # ~1 GB output, 5 rounds, RSS at 1M and 10M rows
    .venv/bin/python bench/bench_file_sink.py --quick    # a small smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atomic_publish import Run, open_input, publish  # noqa: E402
from atomic_publish.diagnostics.file import FileDiagnostic  # noqa: E402
from atomic_publish.pipelines.generate import generate_inputs  # noqa: E402
from atomic_publish.pipelines.refunds import OUTPUT_SCHEMA, load_merchants, settled_refunds  # noqa: E402
from atomic_publish.publishers.file import FilePublisher, FileSinkConfig  # noqa: E402
from bench.peak_rss import cli_peak_rss  # noqa: E402

DATE = "2026-04-24"


def prepare_output_parquet(work: Path, refund_rows: int) -> Path:
    target = work / f"output-{refund_rows}.parquet"
    if target.exists():
        return target
    refunds, merchants = generate_inputs(work / f"in-{refund_rows}", rows=refund_rows, merchants=5_000)
    reader = settled_refunds(refunds, load_merchants(merchants), __import__("datetime").date(2026, 4, 24))
    with pq.ParquetWriter(target, OUTPUT_SCHEMA, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
    return target


def plain_write(source: Path, dest_dir: Path) -> tuple[float, int]:
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / f"{DATE}.csv"
    started = time.perf_counter()
    reader = open_input(source)
    with open(final, "wb") as fh:
        writer = pacsv.CSVWriter(fh, reader.schema)
        for batch in reader:
            writer.write_batch(batch)
        writer.close()
        fh.flush()
        os.fsync(fh.fileno())
    elapsed = time.perf_counter() - started
    return elapsed, final.stat().st_size


def atomic_publish(source: Path, root: Path) -> tuple[float, int]:
    config = FileSinkConfig(root=root)
    publisher, diagnostic = FilePublisher(config), FileDiagnostic(config)
    started = time.perf_counter()
    result = publish(publisher, diagnostic, Run.new("bench", DATE), open_input(source))
    elapsed = time.perf_counter() - started
    assert result.receipt is not None
    return elapsed, result.receipt.bytes


def peak_rss_of_pipeline(work: Path, refund_rows: int) -> dict[str, float]:
    refunds, merchants = generate_inputs(work / f"in-{refund_rows}", rows=refund_rows, merchants=5_000)
    root = work / f"rss-out-{refund_rows}"
    shutil.rmtree(root, ignore_errors=True)
    env = {**os.environ, "ATOMIC_PUBLISH_SINKS__FILE__ROOT": str(root)}
    env.pop("ATOMIC_PUBLISH_CONFIG", None)
    args = ["refunds", "run", "--run-date", DATE, "--refunds", str(refunds), "--merchants", str(merchants)]
    peak_mb, elapsed = cli_peak_rss(args, env, work)
    output_size = next((root / "refunds_settled").glob("*.csv")).stat().st_size
    shutil.rmtree(root)
    return {
        "refund_rows": refund_rows,
        "input_mb": round(refunds.stat().st_size / 2**20, 1),
        "output_mb": round(output_size / 2**20, 1),
        "seconds": elapsed,
        "peak_rss_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--refund-rows", type=int, default=10_000_000, help="~1 GB of CSV output at 10M")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rss-sizes", default="1000000,10000000")
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 rounds: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.refund_rows, args.rounds, args.rss_sizes = 200_000, 2, "100000,200000"
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)

    source = prepare_output_parquet(work, args.refund_rows)
    rows = pq.ParquetFile(source).metadata.num_rows
    plain_times, atomic_times, sizes = [], [], set()
    for round_number in range(args.rounds):
        # Alternate which side goes first so neither always runs on a warmer cache.
        order = ("plain", "atomic") if round_number % 2 == 0 else ("atomic", "plain")
        for side in order:
            dest = work / f"{side}-dest"
            shutil.rmtree(dest, ignore_errors=True)
            if side == "plain":
                seconds, size = plain_write(source, dest / "bench")
                plain_times.append(seconds)
            else:
                seconds, size = atomic_publish(source, dest)
                atomic_times.append(seconds)
            sizes.add(size)
            shutil.rmtree(dest, ignore_errors=True)
    assert len(sizes) == 1, f"both sides must write the same bytes, got sizes {sizes}"
    size = sizes.pop()
    plain_median, atomic_median = statistics.median(plain_times), statistics.median(atomic_times)
    throughput = {
        "rows": rows,
        "bytes": size,
        "rounds": args.rounds,
        "plain_write_fsync_s": [round(t, 3) for t in plain_times],
        "atomic_publish_s": [round(t, 3) for t in atomic_times],
        "plain_median_s": round(plain_median, 3),
        "atomic_median_s": round(atomic_median, 3),
        "ratio_atomic_over_plain": round(atomic_median / plain_median, 3),
        "atomic_mb_per_s": round(size / 2**20 / atomic_median, 1),
        "plain_mb_per_s": round(size / 2**20 / plain_median, 1),
    }
    rss = [peak_rss_of_pipeline(work, int(n)) for n in args.rss_sizes.split(",")]
    print(json.dumps({"throughput": throughput, "peak_rss": rss}, indent=2))


if __name__ == "__main__":
    pa.set_cpu_count(os.cpu_count() or 1)
    main()
