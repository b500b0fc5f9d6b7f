"""Deterministic sample inputs for the refunds pipeline, of any size, written in bounded chunks.

The same arguments always produce byte-identical files: every chunk draws from its own generator
seeded with (seed, chunk index), so the output does not depend on chunk size or timing.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from .refunds import MERCHANTS_SCHEMA, REFUNDS_SCHEMA

_STATUSES = np.array(["settled", "pending", "failed"], dtype=object)
_STATUS_P = [0.7, 0.2, 0.1]
_CATEGORIES = np.array(["grocery", "travel", "electronics", "fashion", "food", "utilities"], dtype=object)
_CITIES = np.array(["Bengaluru", "Mumbai", "Delhi", "Chennai", "Pune", "Hyderabad", "Kolkata"], dtype=object)
_REASONS = np.array(["duplicate", "cancelled", "damaged", "not_delivered", "other"], dtype=object)
_CHUNK_ROWS = 200_000


def generate_inputs(
    out_dir: str | Path,
    *,
    rows: int = 50_000,
    merchants: int = 2_000,
    seed: int = 20260424,
    run_date: dt.date = dt.date(2026, 4, 24),
) -> tuple[Path, Path]:
    """Write ``refunds.csv`` (``rows`` rows) and ``merchants.csv`` into ``out_dir``."""
    if rows < 0 or merchants < 1:
        raise ValueError("rows must be >= 0 and merchants >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merchants_path, refunds_path = out / "merchants.csv", out / "refunds.csv"

    rng = np.random.default_rng([seed, 0])
    ids = np.array([f"M{i:07d}" for i in range(1, merchants + 1)], dtype=object)
    merchants_table = pa.table(
        {
            "merchant_id": ids,
            "merchant_name": np.array([f"Merchant {i:07d}" for i in range(1, merchants + 1)], dtype=object),
            "category": _CATEGORIES[rng.integers(0, len(_CATEGORIES), merchants)],
            "city": _CITIES[rng.integers(0, len(_CITIES), merchants)],
        },
        schema=MERCHANTS_SCHEMA,
    )
    pacsv.write_csv(merchants_table, merchants_path)

    day_start = int(dt.datetime.combine(run_date - dt.timedelta(days=1), dt.time(), dt.UTC).timestamp())
    with pacsv.CSVWriter(refunds_path, REFUNDS_SCHEMA) as writer:
        for chunk_index, start in enumerate(range(0, rows, _CHUNK_ROWS), start=1):
            n = min(_CHUNK_ROWS, rows - start)
            crng = np.random.default_rng([seed, chunk_index])
            numbers = np.arange(start + 1, start + n + 1)
            batch = pa.record_batch(
                {
                    "refund_id": [f"R{seed}-{i:010d}" for i in numbers],
                    "payment_id": [f"P{v:012d}" for v in crng.integers(0, 10**12, n)],
                    "merchant_id": ids[crng.integers(0, merchants, n)],
                    "amount_paise": crng.integers(100, 5_000_000, n),
                    "currency": np.full(n, "INR", dtype=object),
                    "status": _STATUSES[crng.choice(3, n, p=_STATUS_P)],
                    "created_at": pa.array(day_start + crng.integers(0, 86_400, n), pa.int64()).cast(
                        pa.timestamp("s", tz="UTC")
                    ),
                    "reason": _REASONS[crng.integers(0, len(_REASONS), n)],
                },
                schema=REFUNDS_SCHEMA,
            )
            writer.write_batch(batch)
        if rows == 0:
            writer.write_table(REFUNDS_SCHEMA.empty_table())
    return refunds_path, merchants_path
