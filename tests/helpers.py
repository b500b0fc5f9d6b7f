"""Helpers shared by the unit and contract tests: run the real CLI in a subprocess, snapshot a tree."""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path
from typing import Any

from atomic_publish.testing import CliResult, refunds_job
from atomic_publish.testing import cli_env as cli_env  # re-exported: the tests import it from here
from atomic_publish.testing import run_cli as _run_cli
from atomic_publish.testing import start_cli as _start_cli

REPO = Path(__file__).resolve().parent.parent


# The real CLI in a subprocess, as the shipped contract suite runs it; here from the repository's
# root by default (a test that needs another directory says so).
Result = CliResult


def run_cli(
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> Result:
    """Run ``atomic-publish ARGS`` as a separate process, as an operator or scheduler would."""
    return _run_cli(*args, config=config, env=env, cwd=cwd or REPO, timeout=timeout)


def start_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return _start_cli(*args, env=env, cwd=cwd or REPO)


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
    return refunds_job(inputs, *extra, run_date=run_date)


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


def cli_imports(*args: str, env: dict[str, str], watch: tuple[str, ...]) -> tuple[int | None, str, str, list[str]]:
    """Run ``atomic-publish ARGS`` through ``cli.main`` in a fresh interpreter; return its exit code,
    stdout, stderr and which of the modules named in ``watch`` it had imported by the end."""
    import json
    import sys

    code = (
        "import json, sys\n"
        "from atomic_publish.cli import cli\n"
        "code = 0\n"
        "try:\n"
        "    cli.main(json.loads(sys.argv[1]))\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print('\\nimported:', json.dumps([code, sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)]),"
        " file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(args)), json.dumps(list(watch))],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    head, _, tail = proc.stderr.rpartition("\nimported: ")
    assert tail, f"the CLI did not finish: {proc.stderr}"
    exit_code, imported = json.loads(tail)
    return exit_code, proc.stdout, head, imported
