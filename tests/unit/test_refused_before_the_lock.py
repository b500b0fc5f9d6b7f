"""What a publish refuses from its arguments and its input's schema is refused before the run's
lock: nothing at the destination changes, not even a directory. Found from outside: each of these
still created the file sink's root with its ``_locks`` and ``_staging`` (or an Iceberg catalog, a
namespace and the warehouse), though the refusal said nothing had changed."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atomic_publish import ConfigError, InputError, SchemaMismatch, load_config, publish

DATE = "2026-04-24"
ROWS = pa.table({"id": [1, 2], "v": ["a", "b"]})


def file_config(tmp_path, fmt="parquet"):
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.lake]\ntype = "file"\nroot = "{tmp_path / "dest"}"\nformat = "{fmt}"\n')
    return load_config(cfg)


class NotArrow:
    pass


def _empty_reader():
    return pa.RecordBatchReader.from_batches(
        ROWS.schema, iter(ROWS.slice(0, 0).to_batches() or [pa.RecordBatch.from_pylist([], schema=ROWS.schema)])
    )


@pytest.mark.parametrize(
    ("records", "keywords", "fmt", "error", "fragment"),
    [
        (NotArrow(), {}, "parquet", InputError, "records of type NotArrow are not an Arrow stream"),
        (ROWS.slice(0, 0), {}, "parquet", InputError, "the input has no rows"),
        (_empty_reader, {}, "parquet", InputError, "the input has no rows"),
        (pa.table({"id": [1], "s": [{"x": 1}]}), {}, "csv", InputError, "'s'"),
        (ROWS, {"schema": pa.schema([("id", pa.int64()), ("w", pa.string())])}, "parquet", SchemaMismatch, "'w'"),
        (ROWS, {"schema": "id int"}, "parquet", InputError, "schema must be a pyarrow.Schema, not str"),
        (ROWS, {"progress": 5}, "parquet", InputError, "progress must be a callable"),
        (pa.table([[1], [2]], names=["id", "id"]), {}, "csv", InputError, "column 'id' appears more than once"),
        (
            pa.table({"id": [1], "l": pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), pa.array([[1]]))}),
            {},
            "csv",
            InputError,
            "nested values",
        ),
        (pa.table({"id": [1], "i": pa.array([None], pa.month_day_nano_interval())}), {}, "csv", InputError, "interval"),
        (pa.table([[1], [2]], names=["id", " "]), {}, "csv", InputError, "column 2 has an empty name"),
    ],
    ids=[
        "not-arrow",
        "empty-table",
        "empty-reader",
        "nested-into-csv",
        "schema-missing-column",
        "schema-str",
        "progress",
        "repeated-name",
        "empty-name",
        "dictionary-of-lists-into-csv",
        "interval-into-csv",
    ],
)
def test_a_refused_publish_to_the_file_sink_creates_nothing(tmp_path, records, keywords, fmt, error, fragment):
    config = file_config(tmp_path, fmt)
    data = records() if callable(records) and not isinstance(records, NotArrow) else records
    with pytest.raises(error) as caught:
        publish(data, dataset="items", run_date=DATE, sink="lake", config=config, **keywords)
    assert fragment in str(caught.value), str(caught.value)
    assert not (tmp_path / "dest").exists(), sorted(p.name for p in (tmp_path / "dest").rglob("*"))


def test_a_config_that_is_neither_a_path_nor_a_loaded_config_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigError, match="config must be a path to a TOML file, a LoadedConfig or None, not int"):
        publish(ROWS, dataset="items", run_date=DATE, config=123)


@pytest.mark.parametrize(
    ("column", "fragment"),
    [
        (pa.array([None], pa.null()), "only nulls"),
        (pa.array([1], pa.duration("s")), "which an Iceberg table cannot store"),
    ],
    ids=["null-column", "duration"],
)
def test_a_type_no_iceberg_table_keeps_is_refused_before_the_catalog_is_touched(tmp_path, column, fragment):
    catalog = tmp_path / "catalog.db"
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\n[sinks.lake.catalog]\ntype = "sql"\n'
        f'uri = "sqlite:///{catalog}"\nwarehouse = "file://{tmp_path / "warehouse"}"\n'
    )
    table = pa.table({"id": [1], "t": column})
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    for records in (table, str(source)):
        with pytest.raises(SchemaMismatch) as caught:
            publish(records, dataset="items", run_date=DATE, sink="lake", config=load_config(cfg))
        assert fragment in str(caught.value) and "'t'" in str(caught.value), str(caught.value)
    assert not (tmp_path / "warehouse").exists()
    if catalog.exists():  # an empty file at most: no table of the catalog, no namespace
        with sqlite3.connect(catalog) as conn:
            assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []


def test_a_read_that_fails_on_the_first_batch_is_bad_input_and_creates_nothing(tmp_path):
    """Found from outside: the first batch is read before the lock, outside the wrapper that names
    an input's OSError, so it escaped as a raw OSError (exit 1, "a bug")."""

    def batches():
        raise OSError(5, "Input/output error", "/mnt/source/part-1.csv")
        yield  # a generator

    reader = pa.RecordBatchReader.from_batches(ROWS.schema, batches())
    with pytest.raises(InputError, match=r"reading the input failed: .*part-1\.csv"):
        publish(reader, dataset="items", run_date=DATE, sink="lake", config=file_config(tmp_path))
    assert not (tmp_path / "dest").exists()


def test_a_group_refuses_repeated_and_empty_column_names_before_any_lock(tmp_path):
    """Found from outside: a group published a table with two 'id' columns that publish() refuses
    (with Postgres or Iceberg in the group it failed later, after the locks, exit 5 or 1)."""
    from atomic_publish import publish_group

    journal = tmp_path / "journal"
    journal.mkdir()
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.a]\ntype = "file"\nroot = "{tmp_path / "a"}"\nformat = "parquet"\n'
        f'[sinks.b]\ntype = "file"\nroot = "{tmp_path / "b"}"\nformat = "parquet"\n'
        f'[groups.g]\nsinks = ["a", "b"]\njournal = "{journal}"\n'
    )
    for names, fragment in ((["id", "id"], "appears more than once"), (["id", ""], "has an empty name")):
        table = pa.table([[1], [2]], names=names)
        with pytest.raises(InputError, match=fragment):
            publish_group(table, group="g", dataset="items", run_date=DATE, config=load_config(cfg))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert sorted(p.name for p in journal.iterdir()) == []


def test_a_group_whose_input_read_fails_is_bad_input_and_creates_nothing(tmp_path):
    """A group reads an Arrow stream whole before its locks: an OSError of that read escaped as
    itself (exit 1, "a bug"), where one sink's publish names the input (exit 2)."""
    from atomic_publish import publish_group

    journal = tmp_path / "journal"
    journal.mkdir()
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.a]\ntype = "file"\nroot = "{tmp_path / "a"}"\n'
        f'[sinks.b]\ntype = "file"\nroot = "{tmp_path / "b"}"\n'
        f'[groups.g]\nsinks = ["a", "b"]\njournal = "{journal}"\n'
    )

    def batches():
        yield from ROWS.to_batches()
        raise OSError(5, "Input/output error", "/mnt/source/part-2.csv")

    reader = pa.RecordBatchReader.from_batches(ROWS.schema, batches())
    with pytest.raises(InputError, match=r"reading the input failed: .*part-2\.csv"):
        publish_group(reader, group="g", dataset="items", run_date=DATE, config=load_config(cfg))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert list(journal.iterdir()) == []


def test_a_group_refuses_a_schema_the_input_cannot_take_before_any_lock(tmp_path):
    """publish_group(schema=...) as publish(schema=...): a column it names that the input lacks, a
    value that does not cast, or a schema that is not one, is refused before any lock or journal."""
    from atomic_publish import publish_group

    journal = tmp_path / "journal"
    journal.mkdir()
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.a]\ntype = "file"\nroot = "{tmp_path / "a"}"\n'
        f'[sinks.b]\ntype = "file"\nroot = "{tmp_path / "b"}"\nformat = "parquet"\n'
        f'[groups.g]\nsinks = ["a", "b"]\njournal = "{journal}"\n'
    )
    data = tmp_path / "in.csv"
    data.write_text("id,v\n007,a\n")
    from atomic_publish import open_inputs

    cases = [
        (ROWS, pa.schema([("id", pa.int64()), ("w", pa.string())]), SchemaMismatch, r"missing column\(s\) 'w'"),
        (ROWS, pa.schema([("id", pa.int64()), ("v", pa.int64())]), SchemaMismatch, "column 'v' does not fit"),
        (open_inputs([data]), pa.schema([("id", pa.string()), ("w", pa.string())]), SchemaMismatch, "'w'"),
        (ROWS, {"id": "int64"}, InputError, "schema must be a pyarrow.Schema, not dict"),
    ]
    for records, schema, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            publish_group(records, group="g", dataset="items", run_date=DATE, config=load_config(cfg), schema=schema)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert list(journal.iterdir()) == []
    # and taken: "007" read as text in both sinks
    schema = pa.schema([("id", pa.string()), ("v", pa.string())])
    publish_group(
        open_inputs([data]), group="g", dataset="items", run_date=DATE, config=load_config(cfg), schema=schema
    )
    assert (tmp_path / "a" / "items" / f"{DATE}.csv").read_text().splitlines()[1] == '"007","a"'
    assert pq.read_table(tmp_path / "b" / "items" / f"{DATE}.parquet").column("id").to_pylist() == ["007"]


def test_an_iceberg_partition_column_missing_from_the_data_is_refused_before_the_catalog(tmp_path):
    catalog = tmp_path / "catalog.db"
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        '[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\npartition_column = "day"\n'
        f'[sinks.lake.catalog]\ntype = "sql"\nuri = "sqlite:///{catalog}"\nwarehouse = "file://{tmp_path / "wh"}"\n'
    )
    with pytest.raises(SchemaMismatch, match="partition_column 'day' is not in the data"):
        publish(ROWS, dataset="items", run_date=DATE, sink="lake", config=load_config(cfg))
    assert not (tmp_path / "wh").exists() and not catalog.exists()
