"""Benchmark: Postgres publish (staging + MERGE + ledger in one transaction) vs a raw bulk COPY of
the same Arrow data straight into the target, in the same run, on the same local server.

Both sides load with the same bulk path (ADBC's binary COPY). The target is a regular (logged)
table with a primary key on refund_id. Cases, alternated round by round:

- raw:          COPY 1M rows into an empty target (the baseline);
- publish-empty: publish 1M rows into an empty target (all inserts);
- publish-full:  publish 1M rows into a target that holds the same keys (all rows updated).

The server is the test harness's throwaway cluster (fsync=off; same for every side).

    .venv/bin/python bench/bench_postgres.py [--rows 1000000] [--rounds 3]
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
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atomic_publish import Run, publish  # noqa: E402
from atomic_publish.diagnostics.postgres import PostgresDiagnostic  # noqa: E402
from atomic_publish.pipelines.generate import generate_inputs  # noqa: E402
from atomic_publish.pipelines.refunds import load_merchants, settled_refunds  # noqa: E402
from atomic_publish.publishers.postgres import PostgresPublisher, PostgresSinkConfig, adbc_uri  # noqa: E402
from bench.peak_rss import cli_peak_rss  # noqa: E402
from tests.services.postgres import start_local_postgres  # noqa: E402


def refunds_table(work: Path, rows: int) -> pa.Table:
    import datetime as dt

    refunds, merchants = generate_inputs(work / f"pg-in-{rows}", rows=int(rows / 0.69) + 1000, merchants=5_000)
    table = pa.Table.from_batches(list(settled_refunds(refunds, load_merchants(merchants), dt.date(2026, 4, 24))))
    assert table.num_rows >= rows, table.num_rows
    return table.slice(0, rows).combine_chunks()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--rss-rows", default="250000,1000000", help="peak RSS of a publish at these sizes")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = refunds_table(args.work, args.rows)
    updated = data.set_column(
        data.schema.get_field_index("amount_paise"), "amount_paise", pc.add(data.column("amount_paise"), 1)
    )
    pg = start_local_postgres()
    try:
        import adbc_driver_postgresql.dbapi as adbc
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(pg.dsn)
        os.environ["PGPASSWORD"] = params.pop("password")
        conninfo = make_conninfo(**params)
        times: dict[str, list[float]] = {"raw": [], "publish-empty": [], "publish-full": []}
        for round_number in range(args.rounds):
            schema = f"bench_{round_number}"
            config = PostgresSinkConfig(conninfo=conninfo, schema=schema, key_columns=["refund_id"])
            publisher, diagnostic = PostgresPublisher(config), PostgresDiagnostic(config)
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; DROP SCHEMA IF EXISTS raw_{schema} CASCADE")
                conn.execute(f"CREATE SCHEMA raw_{schema}")
                cols = ", ".join(
                    f'"{f.name}" {t}'
                    for f, t in zip(
                        data.schema,
                        ["text", "text", "text", "text", "text", "bigint", "text", "timestamptz", "text"],
                        strict=True,
                    )
                )
                conn.execute(f"CREATE TABLE raw_{schema}.target ({cols}, PRIMARY KEY (refund_id))")
                conn.execute("CHECKPOINT")

            def raw() -> float:
                started = time.perf_counter()
                with adbc.connect(adbc_uri(conninfo)) as conn:
                    with conn.cursor() as cur:
                        cur.adbc_ingest("target", data.to_reader(65536), mode="append", db_schema_name=f"raw_{schema}")
                    conn.commit()
                return time.perf_counter() - started

            def publish_run(table: pa.Table, date: str) -> float:
                started = time.perf_counter()
                publish(publisher, diagnostic, Run.new("refunds_settled", date), table.to_reader(65536))
                return time.perf_counter() - started

            # Alternate the order of the first two so neither always runs on a warmer cache.
            order = ["raw", "publish-empty"] if round_number % 2 == 0 else ["publish-empty", "raw"]
            for side in order:
                times[side].append(raw() if side == "raw" else publish_run(data, "2026-04-24"))
            times["publish-full"].append(publish_run(updated, "2026-04-25"))
            with psycopg.connect(pg.dsn) as conn:
                changed = conn.execute(
                    f"SELECT count(*) FROM {schema}.refunds_settled t JOIN raw_{schema}.target r USING (refund_id)"
                    " WHERE t.amount_paise = r.amount_paise + 1"
                ).fetchone()[0]
            assert changed == args.rows, f"every row must have been updated, got {changed}"
        medians = {k: statistics.median(v) for k, v in times.items()}
        result = {
            "rows": args.rows,
            "rounds": args.rounds,
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "median_s": {k: round(v, 3) for k, v in medians.items()},
            "rows_per_s": {k: round(args.rows / v) for k, v in medians.items()},
            "ratio_vs_raw": {k: round(v / medians["raw"], 2) for k, v in medians.items()},
            "peak_rss": [peak_rss(args.work, int(n), conninfo) for n in args.rss_rows.split(",")],
        }
        print(json.dumps(result, indent=2))
    finally:
        pg.stop()


def peak_rss(work: Path, rows: int, conninfo: str) -> dict[str, float]:
    """Peak RSS of the whole pipeline publishing ``rows`` refund rows into Postgres (VmHWM)."""
    refunds, merchants = generate_inputs(work / f"in-{rows}", rows=rows, merchants=5_000)
    cfg = work / "pg-rss.toml"
    cfg.write_text(
        f'[sinks.pg]\ntype = "postgres"\nconninfo = "{conninfo}"\nschema = "rss_{rows}"\nkey_columns = ["refund_id"]\n'
    )
    args = ["refunds", "run", "--sink", "pg", "--run-date", "2026-04-24", "--refunds", str(refunds)]
    peak_mb, seconds = cli_peak_rss(
        [*args, "--merchants", str(merchants)], {**os.environ, "ATOMIC_PUBLISH_CONFIG": str(cfg)}, work
    )
    return {"refund_rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb}


if __name__ == "__main__":
    main()
