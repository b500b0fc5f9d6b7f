"""Benchmark: one CLI command at two commits, side by side: the working tree against a base commit
(checked out once into a temporary git worktree), alternating rounds, medians and their ratio.
Each round gets its own dataset name: ``{n}`` in the arguments becomes ``ab<pid>r<round><side>``.

    .venv/bin/python bench/ab_commits.py --base 684a597 --rounds 15 -- \\
        publish --config publish.toml --sink file --dataset 'd{n}' --run-date 2026-01-01 in.parquet

Run it where the command's relative paths point (the configuration, the inputs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIRS = ("publishers", "diagnostics", "pipelines")


def _once(pythonpath: str, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "atomic_publish", *args], env=env, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="the commit to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    worktree = Path(tempfile.mkdtemp(prefix="ab-base-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), opts.base], check=True)
    try:
        for tree in (worktree, REPO):  # both sides from bytecode (PYTHONDONTWRITEBYTECODE would not write it)
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "atomic_publish")], check=True)
            subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(tree / d) for d in DIRS)], check=True)
        sides = {"base": str(worktree), "head": str(REPO)}
        times: dict[str, list[float]] = {"base": [], "head": []}
        for n in range(opts.rounds):
            order = ("base", "head") if n % 2 == 0 else ("head", "base")
            for side in order:
                round_args = [a.replace("{n}", f"ab{os.getpid()}r{n}{side}") for a in args]
                times[side].append(_once(sides[side], round_args))
        base, head = statistics.median(times["base"]), statistics.median(times["head"])
        load = os.getloadavg()[0]
        print(f"base {opts.base}: {base:.3f} s   head: {head:.3f} s   head/base {head / base:.3f}x")
        print(f"({opts.rounds} alternating rounds, medians; load average {load:.2f})")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
        shutil.rmtree(worktree, ignore_errors=True)


if __name__ == "__main__":
    main()
