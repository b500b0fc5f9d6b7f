"""The CLI loads pyarrow without NumPy and pandas when the command's sinks are built-in ones
(atomic_publish.cli._LeanArrow: NumPy's import was 0.08-0.09 s of every such command, pandas' 0.25 s
and ~45 MB of an Iceberg one), and as usual for another package's sink; the data published is the
same, read back without the project's code.

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
            "pandas_imported": "pandas" in sys.modules,
            "requests_imported": "requests" in sys.modules,
            "arrow_has_numpy": pyarrow.lib.np is not None,
            "arrow_loader": type(pyarrow.__loader__).__name__,
            "arrow_spec_loader": type(pyarrow.__spec__.loader).__name__,
            "finders": [type(f).__name__ for f in sys.meta_path],
        }
        import numpy  # still importable afterwards, and a real module
        doc["numpy_after"] = type(numpy).__name__ == "module" and hasattr(numpy, "ndarray")
        import importlib.util
        try:  # (found, not imported: an import at exit may not start threads)
            doc["pandas_after"] = "importable" if importlib.util.find_spec("pandas") else "not installed"
        except ImportError as exc:
            doc["pandas_after"] = str(exc)
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


def _run(tmp_path: Path, config: str, sink: str, *, preload: str = "", command: str = "publish") -> dict[str, object]:
    (tmp_path / "publish.toml").write_text(config)
    pq.write_table(ROWS, tmp_path / "in.parquet")
    report = tmp_path / "loaded.json"
    args = ["-q", command, "--config", "publish.toml", "--sink", sink, "--dataset", "d", "--run-date", "2026-01-02"]
    if command == "publish":
        args.append("in.parquet")
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(report), preload, *args],
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
    assert loaded["pandas_imported"] is False
    assert loaded["arrow_has_numpy"] is False
    assert "pandas is not loaded by an atomic-publish command" in str(loaded["pandas_after"])
    # pyarrow runs under its own loader, the finder is gone, NumPy is importable after
    assert loaded["arrow_loader"] == loaded["arrow_spec_loader"] == "SourceFileLoader"
    assert loaded["numpy_after"] is True
    published = tmp_path / "out" / "d" / f"2026-01-02.{fmt}"
    if fmt == "parquet":
        got = pq.read_table(published)
    else:
        got = pacsv.read_csv(published, convert_options=pacsv.ConvertOptions(column_types=ROWS.schema))
    assert got.select(ROWS.column_names).equals(ROWS)


def test_an_iceberg_publish_and_its_diagnosis_load_neither_numpy_nor_pandas(tmp_path: Path) -> None:
    """pyiceberg imports pyarrow.dataset, whose import made pyarrow's C++ import pandas (and so NumPy).
    Nor requests: only a REST catalog's requests need bounding (it was imported for every catalog:
    ~5 MB and 40 ms of an Iceberg publish on SQLite)."""
    from pyiceberg.catalog.sql import SqlCatalog

    uri, warehouse = f"sqlite:///{tmp_path}/catalog.db", f"file://{tmp_path}/wh"
    config = (
        f'[sinks.lake]\ntype = "iceberg"\ncatalog_name = "lake"\nnamespace = "n"\n'
        f'[sinks.lake.catalog]\ntype = "sql"\nuri = "{uri}"\nwarehouse = "{warehouse}"\n'
    )
    for command in ("publish", "diagnose"):
        loaded = _run(tmp_path, config, "lake", command=command)
        assert (loaded["numpy_imported"], loaded["pandas_imported"], loaded["arrow_has_numpy"]) == (False, False, False)
        assert loaded["requests_imported"] is False, command
    catalog = SqlCatalog("lake", uri=uri, warehouse=warehouse)  # pyiceberg's own catalog, not the sink's code
    (table,) = catalog.list_tables("n")  # the run's table, whatever the sink names it
    got = catalog.load_table(table).scan().to_arrow()
    assert got.select(ROWS.column_names).sort_by("refund_id").equals(ROWS.sort_by("refund_id"))


def test_another_packages_sink_gets_pyarrow_as_usual(tmp_path: Path) -> None:
    """A sink named by its import path may hand NumPy arrays to pyarrow."""
    example = Path(__file__).resolve().parents[2] / "examples" / "sqlite_sink"
    (tmp_path / "sqlite_sink.py").write_text((example / "sqlite_sink.py").read_text())
    sqlite3.connect(tmp_path / "db.sqlite").close()  # the sink never creates its database
    config = f'[sinks.db]\ntype = "sqlite_sink:SINK"\npath = "{tmp_path}/db.sqlite"\n'
    loaded = _run(tmp_path, config, "db")
    assert loaded["arrow_has_numpy"] is True
    assert loaded["pandas_after"] == "importable"
    assert "_LeanArrow" not in loaded["finders"]


def test_numpy_imported_before_the_command_is_left_as_it_is(tmp_path: Path) -> None:
    loaded = _run(tmp_path, _file_config("parquet"), "out", preload="numpy")
    assert loaded["arrow_has_numpy"] is True
    assert loaded["pandas_after"] == "importable"
    assert "_LeanArrow" not in loaded["finders"]


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


@pytest.mark.parametrize(
    ("typ", "value", "shown"),
    [
        (pa.timestamp("ns"), 1_700_000_000_123_456_789, "2023-11-14 22:13:20.123456789"),
        (pa.timestamp("ns", tz="Europe/Paris"), 1_700_000_000_123_456_789, "2023-11-14 23:13:20.123456789+01:00"),
        (pa.time64("ns"), 3_723_123_456_789, "01:02:03.123456789"),
    ],
)
def test_a_value_with_nanoseconds_is_refused_by_name_without_pandas(
    tmp_path: Path, typ: pa.DataType, value: int, shown: str
) -> None:
    """Naming the value took pyarrow's Python value of it, which needs pandas for nanoseconds: the
    CLI (and a user's install, which has no pandas) raised pyarrow's ValueError instead of refusing."""
    from atomic_publish.sdk import SchemaMismatch, exit_code_for

    uri, warehouse = f"sqlite:///{tmp_path}/catalog.db", f"file://{tmp_path}/wh"
    (tmp_path / "publish.toml").write_text(
        f'[sinks.lake]\ntype = "iceberg"\nnamespace = "n"\n[sinks.lake.catalog]\ntype = "sql"\n'
        f'uri = "{uri}"\nwarehouse = "{warehouse}"\n'
    )
    pq.write_table(pa.table({"id": ["a", "b"], "at": pa.array([None, value], typ)}), tmp_path / "in.parquet")
    args = ["publish", "--config", "publish.toml", "--sink", "lake", "--dataset", "d", "--run-date", "2026-01-02"]
    proc = subprocess.run(
        [sys.executable, "-m", "atomic_publish", *args, "in.parquet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == exit_code_for(SchemaMismatch("x")), proc.stderr
    assert f"column 'at' has a value with nanoseconds ({shown})" in proc.stderr
    assert "Traceback" not in proc.stderr


NESTED = textwrap.dedent(
    """
    import json, sys
    from atomic_publish.cli import _LeanArrow
    _LeanArrow.install()  # as in a command: no pandas
    import pyarrow as pa
    from atomic_publish.publishers._arrow import nanoseconds_as_text

    ts = pa.timestamp("ns", tz="UTC")
    batch = pa.record_batch({
        "s": pa.array([{"t": 1001}, None, {"t": None}], pa.struct([("t", ts)])),
        "l": pa.array([[1001, None], None, [5]], pa.list_(pa.duration("ns"))),
        "m": pa.array([[("k", 1001)], None, [("j", 7)]], pa.map_(pa.string(), pa.time64("ns"))),
        "d": pa.array([1001, 1001, None], ts).dictionary_encode(),
        "f": pa.array([[1, 2], None, [3, 4]], pa.list_(pa.timestamp("ns"), 2)),
    })
    print(json.dumps([nanoseconds_as_text(batch.slice(start)).to_pylist() for start in (0, 2)]))
    print("pandas" in sys.modules)
    """
)


def test_values_in_nanoseconds_inside_structs_lists_maps_and_dictionaries_print_without_pandas() -> None:
    """The Kafka sink's JSON text of such values: pyarrow's to_pylist failed on them without pandas."""
    out = subprocess.run([sys.executable, "-c", NESTED], capture_output=True, text=True, check=True).stdout
    whole, tail = json.loads(out.splitlines()[0])
    assert out.splitlines()[1] == "False"
    t = "1970-01-01 00:00:00.000001001+00:00"
    assert whole[0] == {
        "s": {"t": t},
        "l": ["0:00:00.000001001", None],
        "m": [["k", "00:00:00.000001001"]],
        "d": t,
        "f": ["1970-01-01 00:00:00.000000001", "1970-01-01 00:00:00.000000002"],
    }
    assert whole[1] == {"s": None, "l": None, "m": None, "d": t, "f": None}
    assert (
        tail
        == [whole[2]]
        == [
            {
                "s": {"t": None},
                "l": ["0:00:00.000000005"],
                "m": [["j", "00:00:00.000000007"]],
                "d": None,
                "f": ["1970-01-01 00:00:00.000000003", "1970-01-01 00:00:00.000000004"],
            }
        ]
    )


@pytest.mark.parametrize("user_value", [None, ""])
def test_the_cli_skips_pydantic_s_plugin_scan_unless_the_user_set_it(tmp_path, user_value):  # type: ignore[no-untyped-def]
    """pydantic scans every installed distribution's entry points for plugins when the first model
    is made (the configuration's): ~30 ms of every command. The CLI sets PYDANTIC_DISABLE_PLUGINS
    unless the user set it (to anything: "" turns the scan back on)."""
    import os

    config = tmp_path / "publish.toml"
    config.write_text(f'[sinks.f]\ntype = "file"\nroot = "{tmp_path / "out"}"\n')
    data = tmp_path / "in.csv"
    data.write_text("id,v\n1,a\n")
    program = textwrap.dedent(
        """
        import atexit, sys
        def report():
            import pydantic.plugin._loader as loader
            print("scanned" if loader._plugins is not None else "not scanned", flush=True)
        atexit.register(report)
        sys.argv = ["atomic-publish", *sys.argv[1:]]
        from atomic_publish.cli import run
        run()
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if user_value is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = user_value
    args = ["-q", "publish", "--config", str(config), "--sink", "f", "--dataset", "d", "--run-date", "2026-04-24"]
    proc = subprocess.run(
        [sys.executable, "-c", program, *args, str(data)], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == ("scanned" if user_value == "" else "not scanned")


def test_the_cli_s_start_up_sets_off_no_cycle_collection(tmp_path):  # type: ignore[no-untyped-def]
    """A command's start-up makes hundreds of thousands of objects that all stay (its imports, its
    configuration's models): with the interpreter's threshold (700) that was 114-188 collections,
    15-54 ms of a small publish. The CLI collects after 200,000 (as mypy does): once it runs, a
    1,000-row publish to the file sink sets off none. A program that imports the library keeps the
    interpreter's."""
    config = tmp_path / "publish.toml"
    config.write_text(f'[sinks.f]\ntype = "file"\nroot = "{tmp_path / "out"}"\n')
    data = tmp_path / "in.csv"
    data.write_text("id,v\n" + "".join(f"{i},v{i}\n" for i in range(1000)))
    program = textwrap.dedent(
        """
        import atexit, gc, sys
        collections = []
        gc.callbacks.append(lambda phase, info: collections.append(info["generation"]) if phase == "stop" else None)
        sys.argv = ["atomic-publish", *sys.argv[1:]]
        from atomic_publish.cli import run
        before = len(collections)  # the CLI module's own imports: ~26, ~4 ms
        atexit.register(lambda: print("collections", len(collections) - before, gc.get_threshold(), flush=True))
        run()
        """
    )
    args = ["-q", "publish", "--config", str(config), "--sink", "f", "--dataset", "d", "--run-date", "2026-04-24"]
    proc = subprocess.run(
        [sys.executable, "-c", program, *args, str(data)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "collections 0 (200000, 30, 30)"

    library = textwrap.dedent(
        f"""
        import gc
        from atomic_publish import publish
        publish({str(data)!r}, dataset="e", run_date="2026-04-24", sink="f", config={str(config)!r})
        print(gc.get_threshold())
        """
    )
    proc = subprocess.run([sys.executable, "-c", library], capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, str(gc_default_threshold())), proc.stderr


def gc_default_threshold() -> tuple[int, int, int]:
    """The threshold of a fresh interpreter (this one's may have been changed by a test)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import gc; print(gc.get_threshold())"], capture_output=True, text=True
    )
    return tuple(int(x) for x in proc.stdout.strip("()\n").split(", "))  # type: ignore[return-value]
