"""The CLI loads pyarrow without NumPy when the command's sinks are file, s3, postgres or kafka
(atomic_publish.cli._ArrowWithoutNumpy: NumPy's import was 0.08-0.09 s of every such command), and
as usual for any other sink; the data published is the same either way, read back by pyarrow alone.

Each case is a CLI process of its own (the test process has pyarrow and NumPy loaded already), which
reports at its exit what it loaded."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

PROGRAM = textwrap.dedent(
    """
    import atexit, json, sys
    report, preload, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    if preload:
        __import__(preload)

    def what_was_loaded():
        import pyarrow, pyarrow.lib
        doc = {
            "numpy_imported": "numpy" in sys.modules,
            "arrow_has_numpy": pyarrow.lib.np is not None,
            "arrow_loader": type(pyarrow.__loader__).__name__,
            "arrow_spec_loader": type(pyarrow.__spec__.loader).__name__,
            "finders": [type(f).__name__ for f in sys.meta_path],
        }
        import numpy  # still importable afterwards, and a real module
        doc["numpy_after"] = type(numpy).__name__ == "module" and hasattr(numpy, "ndarray")
        with open(report, "w") as out:
            json.dump(doc, out)

    atexit.register(what_was_loaded)
    sys.argv = ["atomic-publish", *argv]
    from atomic_publish.cli import run
    run()
    """
)

ROWS = pa.table(
    {
        "refund_id": [f"r{i}" for i in range(50)],
        "amount": [i * 1.25 for i in range(50)],
        "at": pa.array([i * 1_000_000 for i in range(50)], pa.timestamp("us", tz="UTC")),
    }
)


def _run(tmp_path: Path, config: str, sink: str, *, preload: str = "") -> dict[str, object]:
    (tmp_path / "publish.toml").write_text(config)
    pq.write_table(ROWS, tmp_path / "in.parquet")
    report = tmp_path / "loaded.json"
    args = ["-q", "publish", "--config", "publish.toml", "--sink", sink, "--dataset", "d", "--run-date", "2026-01-02"]
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(report), preload, *args, "in.parquet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(report.read_text())
    return doc


def _file_config(fmt: str) -> str:
    return f'[sinks.out]\ntype = "file"\nroot = "out"\nformat = "{fmt}"\n'


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_file_publish_loads_pyarrow_without_numpy_and_publishes_the_same_rows(tmp_path: Path, fmt: str) -> None:
    loaded = _run(tmp_path, _file_config(fmt), "out")
    assert loaded["numpy_imported"] is False
    assert loaded["arrow_has_numpy"] is False
    # pyarrow runs under its own loader, the finder is gone, NumPy is importable after
    assert loaded["arrow_loader"] == loaded["arrow_spec_loader"] == "SourceFileLoader"
    assert loaded["numpy_after"] is True
    published = tmp_path / "out" / "d" / f"2026-01-02.{fmt}"
    if fmt == "parquet":
        got = pq.read_table(published)
    else:
        got = pacsv.read_csv(published, convert_options=pacsv.ConvertOptions(column_types=ROWS.schema))
    assert got.select(ROWS.column_names).equals(ROWS)


def test_a_command_whose_sink_is_iceberg_loads_pyarrow_as_usual(tmp_path: Path) -> None:
    config = (
        '[sinks.lake]\ntype = "iceberg"\nnamespace = "n"\n[sinks.lake.catalog]\ntype = "sql"\n'
        f'uri = "sqlite:///{tmp_path}/catalog.db"\nwarehouse = "file://{tmp_path}/wh"\n'
    )
    loaded = _run(tmp_path, config, "lake")
    assert loaded["arrow_has_numpy"] is True  # pyiceberg brings pandas, so NumPy: pyarrow has it too
    assert "_ArrowWithoutNumpy" not in loaded["finders"]


def test_another_packages_sink_gets_pyarrow_as_usual(tmp_path: Path) -> None:
    """A sink named by its import path may hand NumPy arrays to pyarrow."""
    example = Path(__file__).resolve().parents[2] / "examples" / "sqlite_sink"
    (tmp_path / "sqlite_sink.py").write_text((example / "sqlite_sink.py").read_text())
    sqlite3.connect(tmp_path / "db.sqlite").close()  # the sink never creates its database
    config = f'[sinks.db]\ntype = "sqlite_sink:SINK"\npath = "{tmp_path}/db.sqlite"\n'
    loaded = _run(tmp_path, config, "db")
    assert loaded["arrow_has_numpy"] is True
    assert "_ArrowWithoutNumpy" not in loaded["finders"]


def test_numpy_imported_before_the_command_is_left_as_it_is(tmp_path: Path) -> None:
    loaded = _run(tmp_path, _file_config("parquet"), "out", preload="numpy")
    assert loaded["arrow_has_numpy"] is True


def test_loading_a_configuration_with_a_postgres_sink_imports_no_pyarrow(tmp_path: Path) -> None:
    """Every command loads the whole configuration; the postgres layout imported pyarrow (and so
    NumPy) for a command that used another sink, or none."""
    (tmp_path / "publish.toml").write_text(
        '[sinks.pg]\ntype = "postgres"\nconninfo = "host=127.0.0.1 dbname=x"\nkey_columns = ["k"]\n'
    )
    code = (
        "import sys; from atomic_publish import load_config; load_config('publish.toml');"
        "print(sorted(m for m in ('pyarrow', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_publish_program_also_prefers_jemalloc() -> None:
    """``publish`` (the second console script) skipped the CLI's memory-pool choice."""
    code = (
        "import atexit, os, sys\n"
        "atexit.register(lambda: print(os.environ.get('ARROW_DEFAULT_MEMORY_POOL')))\n"
        "sys.argv = ['publish', '--help']\n"
        "from atomic_publish.cli import publish_run\n"
        "publish_run()\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == ("jemalloc" if sys.platform == "linux" else "None")
