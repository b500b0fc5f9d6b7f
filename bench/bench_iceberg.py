"""Benchmark: Iceberg publish (our Parquet files + one snapshot, history checks, lease) vs a raw
pyiceberg ``Table.append`` of the same Arrow data, in the same run, same catalog and warehouse
(SQLite catalog, local warehouse: the embedded default). Rounds alternate; medians.

Also: the time to diagnose a run in a table that already has 1,000 earlier snapshots.

    .venv/bin/python bench/bench_iceberg.py [--rows 1000000] [--rounds 3] [--snapshots 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import atomic_publish.publishers.layouts.iceberg as iceberg_module  # noqa: E402
from atomic_publish import Run, publish  # noqa: E402
from atomic_publish.diagnostics.iceberg import IcebergDiagnostic  # noqa: E402
from atomic_publish.publishers.iceberg import IcebergPublisher, IcebergSinkConfig, normalize_schema  # noqa: E402
from bench.bench_postgres import refunds_table  # noqa: E402


def config_for(base: Path) -> IcebergSinkConfig:
    base.mkdir(parents=True, exist_ok=True)
    return IcebergSinkConfig(
        catalog={"type": "sql", "uri": f"sqlite:///{base}/catalog.db", "warehouse": (base / "wh").as_uri()},
        namespace="bench",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    data = refunds_table(args.work, args.rows)
    data = data.cast(normalize_schema(data.schema))  # Iceberg keeps microseconds; both sides get this
    times: dict[str, list[float]] = {"raw-append": [], "publish": []}
    for round_number in range(args.rounds):
        order = ["raw-append", "publish"] if round_number % 2 == 0 else ["publish", "raw-append"]
        for side in order:
            base = args.work / f"iceberg-{side}"
            shutil.rmtree(base, ignore_errors=True)
            iceberg_module._shared.clear()  # the catalog file was just deleted: open it anew
            config = config_for(base)
            publisher = IcebergPublisher(config)
            if side == "raw-append":
                catalog = publisher.layout.catalog()
                catalog.create_namespace("bench")
                started = time.perf_counter()
                table = catalog.create_table(("bench", "refunds_settled"), schema=data.schema)
                table.append(data)
            else:
                started = time.perf_counter()
                publish(
                    publisher,
                    IcebergDiagnostic(config),
                    Run.new("refunds_settled", "2026-04-24"),
                    data.to_reader(65536),
                )
            times[side].append(time.perf_counter() - started)
            shutil.rmtree(base, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items()}

    result = {
        "rows": args.rows,
        "rounds": args.rounds,
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median_s": {k: round(v, 3) for k, v in medians.items()},
        "ratio_publish_over_raw": round(medians["publish"] / medians["raw-append"], 3),
    }
    if args.snapshots:
        result.update(diagnose_with_history(args, data))
    print(json.dumps(result, indent=2))


def diagnose_with_history(args: argparse.Namespace, data: pa.Table) -> dict[str, object]:
    # Diagnose in a table with a long history: the cost must follow the run, not the history.
    base = args.work / "iceberg-history"
    shutil.rmtree(base, ignore_errors=True)
    config = config_for(base)
    publisher, diagnostic = IcebergPublisher(config), IcebergDiagnostic(config)
    small = data.slice(0, 10)
    started = time.perf_counter()
    catalog = publisher.layout.catalog()
    catalog.create_namespace("bench")
    table = catalog.create_table(("bench", "refunds_settled"), schema=data.schema)
    for i in range(args.snapshots):
        table.append(small, snapshot_properties={"filler": str(i)})
    build_s = time.perf_counter() - started
    publish(publisher, diagnostic, Run.new("refunds_settled", "2026-04-24"), small.to_reader())
    diagnose_times = []
    for _ in range(5):
        started = time.perf_counter()
        state = diagnostic.diagnose(Run.new("refunds_settled", "2026-04-24")).state
        diagnose_times.append(time.perf_counter() - started)
        assert state.value == "DONE", state
    shutil.rmtree(base, ignore_errors=True)
    return {
        "history_snapshots": args.snapshots + 1,
        "history_build_s": round(build_s, 1),
        "diagnose_s": [round(x, 3) for x in diagnose_times],
        "diagnose_median_s": round(statistics.median(diagnose_times), 3),
    }


if __name__ == "__main__":
    pa.set_cpu_count(2)
    main()
