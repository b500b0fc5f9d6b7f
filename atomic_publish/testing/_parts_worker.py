"""A worker process of a run staged in parts: it stages part ``--part`` of ``--parts`` of the
refunds pipeline's output (rows whose index modulo ``--parts`` is the part) for the driver's
attempt, and prints the Staged value as JSON for the driver.

    python -m atomic_publish.testing._parts_worker --config C --attempt A --part 2 --parts 4 REFUNDS MERCHANTS
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from .. import Run, load_config, stage_part
from ._harness import DATASET, DATE


def part_table(refunds: str, merchants: str, part: int, parts: int) -> Any:
    """Rows of the run's output whose index modulo ``parts`` is ``part`` (a pyarrow Table)."""
    import numpy as np
    import pyarrow as pa

    from ..pipelines import load_merchants, settled_refunds

    output = settled_refunds(refunds, load_merchants(merchants), dt.date.fromisoformat(DATE))
    table = pa.Table.from_batches(list(output), schema=output.schema)
    return table.filter(pa.array((np.arange(table.num_rows) % parts) == part))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--attempt", required=True)
    parser.add_argument("--part", type=int, required=True)
    parser.add_argument("--parts", type=int, required=True)
    parser.add_argument("refunds")
    parser.add_argument("merchants")
    args = parser.parse_args()
    definition, options = load_config(args.config).sink()
    run = Run(DATASET, dt.date.fromisoformat(DATE), args.attempt)
    records = part_table(args.refunds, args.merchants, args.part, args.parts)
    staged = stage_part(definition.make_publisher(options), run, records, part=args.part)
    sys.stdout.write(staged.to_json() + "\n")


if __name__ == "__main__":
    main()
