"""A Spark driver of its own (a process a test can kill): publishes a Parquet file's rows through
the data source, with local[2,3] (two task slots, a failed task retried).

    python -m tests.spark.driver --parquet P --sink S --dataset D --run-date R [--fault F --flag-dir DIR]

Prints "published" and exits 0, or prints the error's first line and exits 1.
"""

from __future__ import annotations

import argparse
import sys

from .session import new_session


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parquet", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run-date", required=True)
    parser.add_argument("--fault", default="")
    parser.add_argument("--flag-dir", default="")
    args = parser.parse_args()
    spark = new_session()
    from .faults import FaultyDataSource

    spark.dataSource.register(FaultyDataSource)
    df = spark.read.parquet(args.parquet).repartition(4)
    writer = df.write.format("atomic_publish_faulty").option("sink", args.sink).option("dataset", args.dataset)
    writer = writer.option("run_date", args.run_date).option("fault", args.fault).option("flag_dir", args.flag_dir)
    try:
        writer.mode("append").save()
    except Exception as exc:
        print(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        print(str(exc), file=sys.stderr)
        return 1
    print("published")
    return 0


if __name__ == "__main__":
    sys.exit(main())
