"""Every benchmark in one command; writes the performance table (docs/performance-table.md).

For each sink and each size, three sides run in alternating order, round after round, each in its
own process (its peak RSS, VmHWM, is its own):

- **ours**: ``atomic-publish publish --sink S ... FILE.parquet``, the whole CLI (start-up, lock,
  diagnosis, staging with checksums and fsyncs, commit, read-back);
- **floor**: the raw non-atomic write of the same rows to the same destination, same format and
  compression (``bench/floors.py``);
- **peer**: dlt loading the same rows (Postgres and the file sink; ``--peers``: installed into
  ``bench/.venv-peers`` only, never into the package).

The input is the refunds pipeline's output as zstd Parquet at each size (generated once, cached in
``bench/out``). The smallest size (1,000 rows) measures the fixed cost of a publish: ours minus the
floor. Servers are the test harness's own (Postgres, MinIO, moto's server), started here.

    .venv/bin/python bench/run_all.py                       # sizes 1k, 500k, 10M rows; 3 rounds; ~25 min
    .venv/bin/python bench/run_all.py --sizes 1000,500000 --only file,s3-minio --rounds 5
    .venv/bin/python bench/run_all.py --peers               # with dlt (first time: a venv, ~1 min)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
PEERS_VENV = REPO / "bench" / ".venv-peers"
TABLE = REPO / "docs" / "performance-table.md"
TOKEN = uuid.uuid4().hex[:8]  # this invocation's names at a server, which outlives it
SINKS = ("file-parquet", "file-csv", "s3-minio", "s3-moto", "iceberg", "postgres-empty", "postgres-full")


@dataclass
class Side:
    python: str
    module: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    before: Callable[[], None] | None = None  # untimed set-up of the destination for this side


@dataclass
class Case:
    sink: str
    rows: int
    input_bytes: int
    sides: Callable[[int], dict[str, Side]]  # round number -> the sides of that round
    times: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, list[float]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)


def measure(side: Side) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, VmHWM) of one side, in a process of its own."""
    peak = OUT / "peak.kib"
    peak.unlink(missing_ok=True)
    env = {**os.environ, **side.env, "PEAK_RSS_FILE": str(peak), "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run(
        [side.python, str(REPO / "bench" / "peak_rss.py"), side.module, *side.args],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{side.module} {' '.join(side.args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return took, round(int(peak.read_text()) / 1024, 1)


def untimed(side: Side) -> None:
    measure(side)


def prepare(rows: int) -> tuple[Path, Path]:
    """The refunds output at ``rows`` rows as zstd Parquet, and the same rows with every amount
    changed (for the full-target upsert); made once by a child process, then cached."""
    source, updated = OUT / f"output-{rows}.parquet", OUT / f"updated-{rows}.parquet"
    if not updated.exists():
        code = (
            "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
            "import pyarrow.compute as pc, pyarrow.parquet as pq;"
            "from bench.bench_file_sink import prepare_output_parquet;"
            "src = prepare_output_parquet(Path(sys.argv[2]), int(sys.argv[3])); t = pq.read_table(src);"
            "i = t.schema.get_field_index('amount_paise');"
            "pq.write_table(t.set_column(i, 'amount_paise', pc.add(t.column(i), 1)), sys.argv[4], compression='zstd')"
        )
        subprocess.run([sys.executable, "-c", code, str(REPO), str(OUT), str(rows), str(updated)], check=True)
    return source, updated


def ours(config: Path, sink: str, source: Path, run_date: str = "2026-04-24", **extra: str) -> Side:
    args = ["-q", "publish", "--sink", sink, "--dataset", "refunds", "--run-date", run_date, str(source)]
    return Side(sys.executable, "atomic_publish", args, {"ATOMIC_PUBLISH_CONFIG": str(config), **extra})


def floor(*args: str, env: dict[str, str] | None = None) -> Side:
    return Side(sys.executable, "bench.floors", list(args), env or {})


def peer(*args: str, env: dict[str, str] | None = None) -> Side:
    return Side(str(PEERS_VENV / "bin" / "python"), "bench.peers", list(args), env or {})


def ensure_peers() -> None:
    if (PEERS_VENV / "bin" / "python").exists():
        return
    print("bench: making bench/.venv-peers with dlt (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    pip = [str(PEERS_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "dlt[postgres,parquet,filesystem]", "pyarrow"], check=True)


# -- the cases of each sink ------------------------------------------------------------------------


def fresh(name: str, sink_toml: str) -> tuple[Path, Path]:
    """An empty work directory for one round of one case, and its publish.toml holding ``sink_toml``."""
    base = OUT / name
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    config = base / "publish.toml"
    config.write_text(sink_toml)
    return base, config


def file_cases(fmt: str, rows: int, source: Path, peers: bool) -> Case:
    def sides(n: int) -> dict[str, Side]:
        name = f"file-{fmt}-{rows}-{n}"
        base, config = fresh(name, f'[sinks.f]\ntype = "file"\nroot = "{OUT / name}/ours"\nformat = "{fmt}"\n')
        found = {"ours": ours(config, "f", source), "floor": floor(f"file-{fmt}", str(source), str(base / "floor"))}
        if peers and fmt == "parquet":
            found["peer (dlt)"] = peer("file-parquet", str(source), str(base / "peer"), str(base / "dlt"))
        return found

    return Case(f"file ({fmt})", rows, source.stat().st_size, sides)


def s3_case(server: Any, rows: int, source: Path) -> Case:
    def sides(n: int) -> dict[str, Side]:
        _, config = fresh(
            f"s3-{server.server}-{rows}-{n}",
            f'[sinks.s]\ntype = "s3"\nbucket = "{server.bucket}"\nprefix = "ours-{TOKEN}-{rows}-{n}"\n'
            f'endpoint_url = "{server.endpoint}"\nregion = "us-east-1"\naddressing_style = "path"\n'
            'format = "parquet"\n',
        )
        env = server.env()
        return {
            "ours": ours(config, "s", source, **env),
            "floor": floor(
                "s3", str(source), server.endpoint, server.bucket, f"floor-{TOKEN}-{rows}-{n}.parquet", env=env
            ),
        }

    return Case(f"s3 ({server.server}, Parquet as is)", rows, source.stat().st_size, sides)


def iceberg_case(rows: int, source: Path) -> Case:
    def sides(n: int) -> dict[str, Side]:
        base = OUT / f"iceberg-{rows}-{n}"
        _, config = fresh(
            base.name,
            f'[sinks.i]\ntype = "iceberg"\nnamespace = "bench"\n[sinks.i.catalog]\ntype = "sql"\n'
            f'uri = "sqlite:///{base}/ours/catalog.db"\nwarehouse = "file://{base}/ours/wh"\n',
        )
        (base / "ours").mkdir()
        (base / "floor").mkdir()
        return {
            "ours": ours(config, "i", source),
            "floor": floor("iceberg", str(source), f"sqlite:///{base}/floor/catalog.db", f"file://{base}/floor/wh"),
        }

    return Case("iceberg (SQLite catalog)", rows, source.stat().st_size, sides)


def postgres_case(pg: dict[str, str], rows: int, source: Path, updated: Path, full: bool, peers: bool) -> Case:
    import adbc_driver_postgresql.dbapi as adbc

    def drop(schema: str) -> None:
        with adbc.connect(pg["uri"]) as conn, conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.commit()

    def sides(n: int) -> dict[str, Side]:
        tag = f"{'full' if full else 'empty'}_{rows}_{n}"
        for schema in (f"ours_{tag}", f"floor_{tag}", f"peer_{tag}"):
            drop(schema)
        base, config = fresh(
            f"pg-{tag}",
            f'[sinks.p]\ntype = "postgres"\nconninfo = "{pg["conninfo"]}"\nschema = "ours_{tag}"\n'
            'key_columns = ["refund_id"]\n',
        )
        env = {"PGPASSWORD": pg["password"]}
        if not full:
            found = {
                "ours": ours(config, "p", source, **env),
                "floor": floor("postgres-empty", str(source), pg["uri"], f"floor_{tag}"),
            }
            if peers:
                found["peer (dlt)"] = peer("postgres-empty", str(source), pg["url"], f"peer_{tag}", str(base / "dlt"))
            return found
        # The target already holds every key; the timed side changes every row.
        found = {
            "ours": ours(config, "p", updated, "2026-04-25", **env),
            "floor": floor("postgres-full", str(updated), pg["uri"], f"floor_{tag}"),
        }
        first_ours = ours(config, "p", source, **env)
        found["ours"].before = lambda: untimed(first_ours)
        first_floor = floor("postgres-empty", str(source), pg["uri"], f"floor_{tag}")
        found["floor"].before = lambda: untimed(first_floor)
        if peers:
            found["peer (dlt)"] = peer("postgres-full", str(updated), pg["url"], f"peer_{tag}", str(base / "dlt"))
            first_peer = peer("postgres-full", str(source), pg["url"], f"peer_{tag}", str(base / "dlt"))
            found["peer (dlt)"].before = lambda: untimed(first_peer)
        return found

    what = "postgres, full target (every row changed)" if full else "postgres, empty target"
    return Case(what, rows, source.stat().st_size, sides)


# -- running -------------------------------------------------------------------------------------


def run_case(case: Case, rounds: int) -> None:
    for n in range(rounds):
        sides = case.sides(n)
        names = list(sides) if n % 2 == 0 else list(reversed(sides))
        for name in names:
            side = sides[name]
            if side.before is not None:
                side.before()
            case.load.append(os.getloadavg()[0])
            took, peak = measure(side)
            case.times.setdefault(name, []).append(took)
            case.rss.setdefault(name, []).append(peak)
        print(f"bench: {case.sink}, {case.rows:,} rows, round {n + 1}/{rounds}", file=sys.stderr)


@contextlib.contextmanager
def servers(wanted: set[str]) -> Iterator[dict[str, Any]]:
    found: dict[str, Any] = {}
    stops: list[Callable[[], None]] = []
    try:
        if "s3-minio" in wanted:
            from tests.services.minio import start_local_minio

            shutil.rmtree(OUT / "minio", ignore_errors=True)
            found["s3-minio"] = start_local_minio(OUT / "minio")
            stops.append(found["s3-minio"].stop)
        if "s3-moto" in wanted:
            from tests.services.s3 import start_local_s3

            shutil.rmtree(OUT / "moto", ignore_errors=True)
            found["s3-moto"] = start_local_s3(OUT / "moto")
            stops.append(found["s3-moto"].stop)
        if wanted & {"postgres-empty", "postgres-full"}:
            from psycopg.conninfo import conninfo_to_dict, make_conninfo

            from atomic_publish.publishers.postgres import adbc_uri
            from tests.services.postgres import start_local_postgres

            service = start_local_postgres()
            stops.append(service.stop)
            params = conninfo_to_dict(service.dsn)
            password = str(params.pop("password"))
            conninfo = make_conninfo(**params)
            url = f"postgresql://{params['user']}:{password}@{params['host']}:{params['port']}/{params['dbname']}"
            uri = adbc_uri(make_conninfo(**params, password=password))
            found["postgres"] = {"conninfo": conninfo, "password": password, "url": url, "uri": uri}
        yield found
    finally:
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                stop()


def summary(case: Case) -> dict[str, Any]:
    medians = {k: statistics.median(v) for k, v in case.times.items()}
    row: dict[str, Any] = {
        "sink": case.sink,
        "rows": case.rows,
        "input_bytes": case.input_bytes,
        "rounds": {k: [round(x, 3) for x in v] for k, v in case.times.items()},
        "median_s": {k: round(v, 3) for k, v in medians.items()},
        "ratio_to_floor": round(medians["ours"] / medians["floor"], 3),
        "peak_rss_mb": {k: max(v) for k, v in case.rss.items()},
        "load_average": [round(min(case.load), 2), round(max(case.load), 2)],
    }
    if "peer (dlt)" in medians:
        row["peer_over_ours"] = round(medians["peer (dlt)"] / medians["ours"], 2)
    return row


def write_table(results: list[dict[str, Any]], argv: list[str], rounds: int, table: Path) -> None:
    lines = [
        "# Performance table",
        "",
        f"Written by `{' '.join(['.venv/bin/python bench/run_all.py', *argv])}` on {dt.date.today().isoformat()}"
        f" ({os.cpu_count()} cores; {rounds} alternating rounds, medians; every side a process of its own;"
        " peak RSS is the process's VmHWM). Do not edit by hand: run the command again. How each side is made:"
        " `bench/run_all.py`, `bench/floors.py`, `bench/peers.py`; what the numbers mean:"
        " [performance.md](performance.md).",
        "",
        "| sink | rows | input | ours | floor | ours / floor | ours - floor | peer (dlt) | peer / ours"
        " | peak RSS ours / floor / peer (MB) | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, rss = r["median_s"], r["peak_rss_mb"]
        peer_s = f"{m['peer (dlt)']:.2f} s" if "peer (dlt)" in m else ""
        peer_ratio = f"{r['peer_over_ours']:.2f}x" if "peer_over_ours" in r else ""
        peer_rss = f" / {rss['peer (dlt)']:.0f}" if "peer (dlt)" in rss else ""
        lines.append(
            f"| {r['sink']} | {r['rows']:,} | {r['input_bytes'] / 2**20:.1f} MiB"
            f" | {m['ours']:.2f} s | {m['floor']:.2f} s"
            f" | **{r['ratio_to_floor']:.2f}x** | {m['ours'] - m['floor']:+.2f} s | {peer_s} | {peer_ratio}"
            f" | {rss['ours']:.0f} / {rss['floor']:.0f}{peer_rss} | {r['load_average'][0]}-{r['load_average'][1]} |"
        )
    lines += ["", "Per-round seconds:", ""]
    for r in results:
        rounds_text = "; ".join(f"{k} {', '.join(f'{x:.2f}' for x in v)}" for k, v in r["rounds"].items())
        lines.append(f"- {r['sink']}, {r['rows']:,} rows: {rounds_text}")
    table.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,500000,10000000", help="rows of the refunds output, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(SINKS), help=f"a subset of: {', '.join(SINKS)}")
    parser.add_argument("--peers", action="store_true", help="also dlt (Postgres, file), from bench/.venv-peers")
    parser.add_argument("--table", type=Path, default=TABLE, help="where the table goes (default: %(default)s)")
    parser.add_argument("--peer-max-rows", type=int, default=1_000_000, help="dlt only up to this size (it is slow)")
    args = parser.parse_args()
    wanted = {s.strip() for s in args.only.split(",")}
    unknown = wanted - set(SINKS)
    if unknown:
        parser.error(f"unknown sink(s) {', '.join(sorted(unknown))}; choose from {', '.join(SINKS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    from bench.peak_rss import byte_compile

    byte_compile()  # measured as an installed wheel runs: byte-compiled
    if args.peers:
        ensure_peers()
    sizes = [int(s) for s in args.sizes.split(",")]
    inputs = {rows: prepare(rows) for rows in sizes}
    results: list[dict[str, Any]] = []
    with servers(wanted) as found:
        for rows in sizes:
            source, updated = inputs[rows]
            peers = args.peers and rows <= args.peer_max_rows
            cases = []
            for fmt in ("parquet", "csv"):
                if f"file-{fmt}" in wanted:
                    cases.append(file_cases(fmt, rows, source, peers))
            for name in ("s3-minio", "s3-moto"):
                if name in wanted:
                    cases.append(s3_case(found[name], rows, source))
            if "iceberg" in wanted:
                cases.append(iceberg_case(rows, source))
            for full in (False, True):
                if f"postgres-{'full' if full else 'empty'}" in wanted:
                    cases.append(postgres_case(found["postgres"], rows, source, updated, full, peers))
            for case in cases:
                run_case(case, args.rounds)
                results.append(summary(case))
                write_table(results, sys.argv[1:], args.rounds, args.table)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
