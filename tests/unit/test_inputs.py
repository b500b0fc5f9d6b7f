import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atomic_publish import InputError, SchemaMismatch, open_input
from atomic_publish.publishers._arrow import as_reader, conform, require_rows

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.int64())])


def _drain(reader):
    return pa.Table.from_batches(list(reader), schema=reader.schema)


def test_malformed_row_names_file_and_line(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,name,amount\n1,a,10\n2,b,20\n3,c\n4,d,40\n")
    with pytest.raises(InputError) as info:
        _drain(open_input(path))
    assert f"{path}:4:" in str(info.value) and "expected 3 columns, got 2" in str(info.value)


def test_malformed_row_far_into_a_large_file_names_its_line(tmp_path):
    path = tmp_path / "big.csv"
    lines = ["id,name,amount"] + [f"{i},n{i},{i}" for i in range(300_000)]
    lines[250_001] = "oops"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"{path}:250002:"):
        _drain(open_input(path))


def test_bad_value_names_file_line_and_column(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,name,amount\n1,a,10\n2,b,twenty\n")
    with pytest.raises(InputError) as info:
        _drain(open_input(path, SCHEMA))
    message = str(info.value)
    assert f"{path}:3:" in message and "'amount'" in message and "'twenty'" in message


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,name\n1,a\n")
    with pytest.raises(SchemaMismatch, match="'amount'"):
        open_input(path, SCHEMA)


def test_empty_file_and_header_only_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        _drain(open_input(empty))
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,name,amount\n")
    with pytest.raises(InputError, match="no rows"):
        require_rows(open_input(header_only, SCHEMA), source=str(header_only))


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(InputError, match="format"):
        open_input(tmp_path / "data.xlsx")
    with pytest.raises(InputError, match="not found"):
        open_input(tmp_path / "nope.csv")


def test_parquet_input_streams_in_batches(tmp_path):
    path = tmp_path / "in.parquet"
    table = pa.table({"id": list(range(200_000)), "name": ["x"] * 200_000, "amount": [1] * 200_000})
    pq.write_table(table, path, row_group_size=50_000)
    reader = open_input(path, SCHEMA)
    sizes = [b.num_rows for b in reader]
    assert sum(sizes) == 200_000 and max(sizes) <= 65_536


def test_anything_with_arrow_c_stream_is_accepted_and_cast():
    class Foreign:
        def __init__(self, table):
            self.table = table

        def __arrow_c_stream__(self, requested_schema=None):
            return self.table.__arrow_c_stream__(requested_schema)

    source = pa.table({"amount": pa.array([1, 2], pa.int32()), "id": [1, 2], "name": ["a", "b"], "extra": [0, 0]})
    out = _drain(conform(as_reader(Foreign(source)), SCHEMA))
    assert out.schema == SCHEMA and out.column("amount").to_pylist() == [1, 2]


def test_value_that_does_not_cast_is_named():
    source = pa.table({"id": [1], "name": ["a"], "amount": ["lots"]})
    with pytest.raises(SchemaMismatch, match="'amount'"):
        _drain(conform(as_reader(source), SCHEMA))


def test_not_an_arrow_stream():
    with pytest.raises(InputError, match="not an Arrow stream"):
        as_reader([1, 2, 3])


def test_csv_input_reports_how_far_it_has_been_read(tmp_path):
    """What the progress bar's percentage for CSV input stands on: bytes of the file read so far."""
    import pyarrow.csv as pacsv

    from atomic_publish.publishers._arrow import open_inputs

    paths = []
    for n in range(2):
        path = tmp_path / f"part{n}.csv"
        pacsv.write_csv(pa.table({"id": range(200_000), "name": [f"refund-{i}" for i in range(200_000)]}), path)
        paths.append(path)
    files = open_inputs(paths)
    total = sum(p.stat().st_size for p in paths)
    assert files.size == total and files.bytes_read() == 0
    seen = []
    for _ in files.reader():
        seen.append(files.bytes_read())
    assert len(seen) > 2 and seen == sorted(seen) and 0 < seen[0] < total
    assert seen[-1] == total
    gz = tmp_path / "part.csv.gz"
    gz.write_bytes(__import__("gzip").compress(paths[0].read_bytes()))
    assert open_inputs([gz]).size is None  # compressed: its size says nothing about the rows left


def test_a_later_csv_file_is_read_as_the_run_s_types_and_keeps_its_strings_exactly(tmp_path):
    """Found from outside: a later file's values were guessed on their own and then cast to the
    run's string column: "007" became "7", "0x1F" "31", a 20-digit number a rounded double."""
    from atomic_publish.publishers._arrow import open_inputs

    first = tmp_path / "first.csv"
    first.write_text("s,n\nabc,1\n")
    later = ["2026-01-01T05:00:00+05:30", "007", "0x1F", "12345678901234567890", "TRUE", "1.10", "1e3"]
    files = [first]
    for i, value in enumerate(later):  # one file each: a file's guess is the guess of its one value
        files.append(tmp_path / f"later-{i}.csv")
        files[-1].write_text(f"s,n\n{value},{i}\n")
    table = open_inputs(files).reader().read_all()
    assert table.column("s").to_pylist() == ["abc", *later]
    assert table.column("n").to_pylist() == [1, *range(len(later))]


def test_a_bz2_csv_is_read_as_its_text(tmp_path):
    """Found from outside: a .csv.bz2 was taken, then read as raw bytes ("the file is empty")."""
    import bz2

    from atomic_publish.publishers._arrow import open_inputs

    path = tmp_path / "data.csv.bz2"
    path.write_bytes(bz2.compress(b"id,v\n1,a\n2,b\n"))
    table = open_inputs([path]).reader().read_all()
    assert table.to_pylist() == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]


def _file_sink(tmp_path):
    from atomic_publish import load_config

    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.lake]\ntype = "file"\nroot = "{tmp_path / "dest"}"\nformat = "parquet"\n')
    return load_config(cfg)


def test_a_header_only_first_csv_file_does_not_set_the_run_s_types(tmp_path):
    """Found from outside: a first file holding only its header read as columns of type null, which
    became the run's types, so every value of the next file was "not a valid null" (after the lock)."""
    from atomic_publish import publish

    (tmp_path / "x.csv").write_text("id,z\n")
    (tmp_path / "y.csv").write_text("z,id\n1,A\n2,B\n")
    config = _file_sink(tmp_path)
    result = publish(
        [tmp_path / "x.csv", tmp_path / "y.csv"], dataset="d", run_date="2026-04-24", sink="lake", config=config
    )
    written = pq.read_table(result.receipt.location)
    assert written.schema.names == ["id", "z"]  # the first file's columns, in its order
    assert written.to_pylist() == [{"id": "A", "z": 1}, {"id": "B", "z": 2}]


def test_csv_files_with_a_schema_are_read_as_its_types_never_guessed(tmp_path):
    """Found from outside: with ``schema=`` the CSV values were guessed, then cast, so "007" became
    "7" and a non-number far down a string column was refused as "not a valid int64"."""
    from atomic_publish import publish

    rows = "".join(f"{i}\n" for i in range(200_000))  # more than a first block of numbers
    (tmp_path / "a.csv").write_text("id\n007\n" + rows + "A12\n")
    schema = pa.schema([("id", pa.string())])
    config = _file_sink(tmp_path)
    result = publish(tmp_path / "a.csv", dataset="d", run_date="2026-04-24", sink="lake", config=config, schema=schema)
    ids = pq.read_table(result.receipt.location).column("id").to_pylist()
    assert ids[0] == "007" and ids[-1] == "A12" and len(ids) == 200_002


@pytest.mark.parametrize(
    ("text", "schema", "published"),
    [
        ("ts\n2024-01-01 10:00:00\n", pa.schema([("ts", pa.timestamp("us", tz="UTC"))]), "2024-01-01 10:00:00+00:00"),
        ("ts\n2024-01-01T10:00:00Z\n", pa.schema([("ts", pa.timestamp("us"))]), "2024-01-01 10:00:00"),
        ("x\n1.0\n2.0\n", pa.schema([("x", pa.int64())]), "1"),
        ("x\n2024-01-01T00:00:00\n", pa.schema([("x", pa.date32())]), "2024-01-01"),
    ],
)
def test_csv_columns_schema_does_not_make_strings_are_guessed_then_cast(tmp_path, text, schema, published):
    """Found from outside (a regression of reading every column as the schema's type): a CSV
    parser reads timestamps, integers and dates more strictly than a cast, so these published
    before and were refused. Only the columns schema= makes strings are read as text."""
    from atomic_publish import publish

    (tmp_path / "in.csv").write_text(text)
    config = _file_sink(tmp_path)
    result = publish(tmp_path / "in.csv", dataset="d", run_date="2026-04-24", sink="lake", config=config, schema=schema)
    assert str(pq.read_table(result.receipt.location).column(0)[0]) == published


def test_a_run_recorded_with_view_or_date64_types_is_not_drift():
    """Found from outside: a dataset published with string_view or date64 columns (recorded as such)
    refused every later run once those columns were taken as string and date32."""
    from atomic_publish.publishers._arrow import refuse_schema_drift

    earlier = [{"name": "id", "type": "string_view"}, {"name": "on", "type": "date64[ms]"}]
    refuse_schema_drift(pa.schema([("id", pa.string()), ("on", pa.date32())]), earlier, "the run before")
    with pytest.raises(SchemaMismatch, match="'id' is int64, was string"):
        refuse_schema_drift(pa.schema([("id", pa.int64()), ("on", pa.date32())]), earlier, "the run before")


def test_a_run_whose_values_are_the_same_in_another_representation_is_not_drift():
    """Found from outside: pandas 3 gives string columns as large_string and a categorical one as a
    dictionary, so a run from a DataFrame after one from a CSV file was refused as drift."""
    from atomic_publish.publishers._arrow import refuse_schema_drift

    earlier = [
        {"name": "id", "type": "string"},
        {"name": "kind", "type": "string"},
        {"name": "tags", "type": "list<item: string>"},
        {"name": "s", "type": "struct<large_string: int64>"},
    ]
    same = pa.schema(
        [
            ("id", pa.large_string()),
            ("kind", pa.dictionary(pa.int8(), pa.large_string())),
            ("tags", pa.large_list(pa.dictionary(pa.int32(), pa.string_view()))),
            ("s", pa.struct([("large_string", pa.int64())])),
        ]
    )
    refuse_schema_drift(same, earlier, "the run before")
    changed = same.set(1, pa.field("kind", pa.dictionary(pa.int8(), pa.int64())))
    with pytest.raises(SchemaMismatch, match=r"'kind' is dictionary<values=int64.*was string"):
        refuse_schema_drift(changed, earlier, "the run before")
    renamed = same.set(3, pa.field("s", pa.struct([("string", pa.int64())])))  # a field name, not a type
    with pytest.raises(SchemaMismatch, match=r"'s' is struct<string: int64>, was struct<large_string: int64>"):
        refuse_schema_drift(renamed, earlier, "the run before")


def test_a_parquet_footer_is_parsed_once_and_not_reused_for_a_file_replaced_since(tmp_path, monkeypatch):
    """open_inputs parses each Parquet footer (rows, schema); reading the files reuses it instead of
    parsing it again and holding a second copy for the whole read (10M rows in 1,014 row groups:
    ~10 MB each). A file replaced in between is read with its own footer, never the stale one."""
    from atomic_publish.publishers import _arrow

    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3]}), first, row_group_size=1)
    pq.write_table(pa.table({"id": [4, 5]}), second, row_group_size=1)
    files = _arrow.open_inputs([first, second])
    given: list[object] = []
    real = _arrow.pq.ParquetFile

    def recording(*args, metadata=None, **kwargs):  # type: ignore[no-untyped-def]
        given.append(metadata)
        return real(*args, metadata=metadata, **kwargs)

    monkeypatch.setattr(_arrow.pq, "ParquetFile", recording)
    assert _drain(files.reader()).column("id").to_pylist() == [1, 2, 3, 4, 5]
    assert given == list(files.footers)

    replacement = tmp_path / "new.parquet"
    pq.write_table(pa.table({"id": [7, 8, 9, 10, 11, 12]}), replacement, row_group_size=4)
    replacement.replace(second)
    given.clear()
    assert _drain(files.reader()).column("id").to_pylist() == [1, 2, 3, 7, 8, 9, 10, 11, 12]
    assert given == [files.footers[0], None]
