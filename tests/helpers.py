"""Helpers shared by the unit and contract tests: run the real CLI in a subprocess, snapshot a tree."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli_env(config: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATOMIC_PUBLISH_", "PUBLISH_"))}
    if config is not None:
        env["ATOMIC_PUBLISH_CONFIG"] = str(config)
    env.update(extra)
    return env


def run_cli(
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> Result:
    """Run ``atomic-publish ARGS`` as a separate process, as an operator or scheduler would."""
    proc = subprocess.run(
        [sys.executable, "-m", "atomic_publish", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(config),
        cwd=cwd or REPO,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "atomic_publish", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd or REPO,
    )


def tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root`` with size, mtime and sha256: equal snapshots mean nothing changed.

    The run-lock files under ``_locks/`` are left out: every attempt that takes a lock writes who it
    is into it (for the operator), including attempts that are then refused.
    """
    snapshot: dict[str, tuple[int, int, str]] = {}
    if not root.exists():
        return snapshot
    for path in sorted(root.rglob("*")):
        if path.is_file() and "_locks" not in path.relative_to(root).parts:
            st = path.stat()
            snapshot[str(path.relative_to(root))] = (
                st.st_size,
                st.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return snapshot


def write_config(path: Path, root: Path, *, fmt: str = "csv", extra: str = "") -> Path:
    path.write_text(
        f'[defaults]\nsink = "local"\n\n[sinks.local]\ntype = "file"\nroot = "{root}"\nformat = "{fmt}"\n{extra}'
    )
    return path


def race_for_the_lease(leases: list[Any]) -> list[str]:
    """Every lease is acquired at the same instant, one thread each; returns the attempts that got
    it (the others must have been refused with RunInProgress). Releases them all afterwards."""
    import threading

    from atomic_publish import RunInProgress

    barrier = threading.Barrier(len(leases))
    winners: list[str] = []
    refused: list[str] = []

    def take(lease: Any) -> None:
        barrier.wait()
        try:
            lease.acquire()
            winners.append(lease.run.attempt)
        except RunInProgress:
            refused.append(lease.run.attempt)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for lease in leases:
        lease.release()
    assert len(winners) + len(refused) == len(leases)
    return winners


def refunds_run_args(inputs: tuple[Path, Path], *extra: str, run_date: str = "2026-04-24") -> tuple[str, ...]:
    """``refunds run`` of the refunds pipeline over (refunds, merchants) inputs, plus ``extra`` options."""
    refunds, merchants = inputs
    return ("refunds", "run", "--run-date", run_date, "--refunds", str(refunds), "--merchants", str(merchants), *extra)


def csv_rows(csv_bytes: bytes) -> list[tuple]:  # type: ignore[type-arg]
    """The rows of a reader's CSV (several parts' CSVs one after the other: their header lines are
    dropped), sorted, with timestamps at one precision: what was published, however it was split."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    lines = csv_bytes.splitlines()
    header = lines[0]
    body = [line for line in lines[1:] if line != header]
    table = pacsv.read_csv(io.BytesIO(b"\n".join([header, *body]) + b"\n"))
    columns = []
    for name in sorted(table.column_names):
        column = table[name]
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("us", tz="UTC"))
        columns.append(column.to_pylist())
    return sorted(zip(*columns, strict=True))
