"""Benchmark: the fixed cost of a command, before it does any work. Side by side in alternating
rounds, medians, peak RSS (the child's ru_maxrss):

- ``python -c pass``: the interpreter alone (the floor);
- ``import click``: the CLI framework alone;
- ``atomic-publish --help``;
- ``atomic-publish diagnose`` of a run on the embedded default (file sink) in an empty directory:
  reads the configuration, loads the sink, looks at the disk, answers.

    .venv/bin/python bench/bench_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "atomic_publish"]


def _run(argv: list[str], cwd: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one run of ``argv``."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - started
    return took, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-startup-")
    sys.path.insert(0, str(REPO))
    from bench.peak_rss import byte_compile

    byte_compile()  # measured as an installed wheel runs: byte-compiled
    sides = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import click": [sys.executable, "-c", "import click"],
        "atomic-publish --help": [*CLI, "--help"],
        "atomic-publish diagnose": [*CLI, "diagnose", "--dataset", "refunds", "--run-date", "2026-05-16"],
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    rss: dict[str, list[float]] = {k: [] for k in sides}
    load = []
    for n in range(args.rounds):
        order = list(sides) if n % 2 == 0 else list(reversed(sides))
        for name in order:
            took, peak = _run(sides[name], work)
            times[name].append(took)
            rss[name].append(peak)
        load.append(os.getloadavg()[0])
    floor = statistics.median(times["python -c pass"])
    result = {
        "rounds": args.rounds,
        "load_average": [round(min(load), 2), round(max(load), 2)],
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "over_the_interpreter_s": {k: round(statistics.median(v) - floor, 3) for k, v in times.items()},
        "peak_rss_mib": {k: round(max(v), 1) for k, v in rss.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
