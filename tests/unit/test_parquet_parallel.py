"""The Parquet output of the file, S3 and Iceberg sinks is written by ``_parquet.ParallelWriter``:
each row group's columns encoded side by side on threads, their column chunks copied into one file.
What it writes must be byte for byte what pyarrow's own ``ParquetWriter`` writes for the same calls:
a re-run's checksum, the Iceberg data file's statistics and any reader depend on it. Read back here
by pyarrow's reader too (not the project's code)."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import itertools
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomic_publish.publishers import _parquet

_TEXT = st.text(alphabet=st.sampled_from([*'ab,"\n é\t\\x€0', "\u2028"]), max_size=12)
_COLUMNS = {
    "i": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "i8": (pa.int8(), st.integers(-128, 127)),
    "f": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "h": (pa.float32(), st.floats(width=32)),
    "s": (pa.string(), _TEXT),
    "ls": (pa.large_string(), _TEXT),
    "b": (pa.bool_(), st.booleans()),
    "d": (pa.date32(), st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))),
    "t": (pa.timestamp("us", tz="UTC"), st.datetimes(timezones=st.just(dt.UTC))),
    "tn": (pa.timestamp("ms"), st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2200, 1, 1))),
    "m": (pa.decimal128(12, 2), st.decimals(min_value=-(10**9), max_value=10**9, places=2)),
    "y": (pa.binary(), st.binary(max_size=10)),
    "fx": (pa.binary(3), st.binary(min_size=3, max_size=3)),
    "l": (pa.list_(pa.int32()), st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), max_size=4)),
    "st": (
        pa.struct([("x", pa.int16()), ("y", pa.string())]),
        st.fixed_dictionaries({"x": st.none() | st.integers(-(2**15), 2**15 - 1), "y": st.none() | _TEXT}),
    ),
    "mp": (pa.map_(pa.string(), pa.int64()), st.lists(st.tuples(_TEXT, st.integers(0, 9)), max_size=3)),
    "n": (pa.null(), st.none()),
}


@st.composite
def _cases(draw):  # type: ignore[no-untyped-def]
    names = draw(st.lists(st.sampled_from(sorted(_COLUMNS)), min_size=1, max_size=6, unique=True))
    rows = draw(st.integers(0, 120))
    columns = {}
    for name in names:
        typ, values = _COLUMNS[name]
        array = pa.array(draw(st.lists(st.none() | values, min_size=rows, max_size=rows)), typ)
        if name == "s" and draw(st.booleans()):
            array = array.dictionary_encode()  # a dictionary column is written as its own kind
        columns[name] = array
    table = pa.table(columns)
    if draw(st.booleans()):
        table = table.replace_schema_metadata({"origin": "test"})
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=4)))
    calls = [table.slice(a, b - a) for a, b in itertools.pairwise([0, *cuts, rows])]
    group = draw(st.sampled_from([None, 1, 7, 50, 10_000]))
    compression = draw(st.sampled_from(["zstd", "snappy", "gzip", None]))
    return table, calls, group, compression


def _theirs(table: pa.Table, calls: list[pa.Table], group: int | None, compression: str | None) -> bytes:
    out = io.BytesIO()
    with pq.ParquetWriter(out, table.schema, compression=compression) as writer:
        for call in calls:
            writer.write_table(call, row_group_size=group)
    return out.getvalue()


def _ours(
    table: pa.Table, calls: list[pa.Table], group: int | None, compression: str | None, workers: int = 3
) -> bytes:
    out = io.BytesIO()
    with _parquet.ParallelWriter(out, table.schema, compression=compression, workers=workers) as writer:
        for call in calls:
            writer.write_table(call, row_group_size=group)
    return out.getvalue()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases(), st.integers(1, 3))
def test_the_same_bytes_as_pyarrows_parquet_writer(case, workers):  # type: ignore[no-untyped-def]
    table, calls, group, compression = case
    ours = _ours(table, calls, group, compression, workers)
    assert ours == _theirs(table, calls, group, compression)
    read = pq.read_table(io.BytesIO(ours))
    assert read.num_rows == table.num_rows


def test_a_large_table_of_the_refunds_shape_is_the_same_bytes_and_reads_back():
    n = 70_000
    table = pa.table(
        {
            "refund_id": [f"r{i:09d}" for i in range(n)],
            "merchant": pa.array([f"m{i % 97}" for i in range(n)]),
            "amount": pa.array(range(n), pa.int64()),
            "at": pa.array([dt.datetime(2026, 4, 24) + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us")),
            "money": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
        }
    )
    calls = [table.slice(a, 16_384) for a in range(0, n, 16_384)]
    ours = _ours(table, calls, 16_384, "zstd")
    assert ours == _theirs(table, calls, 16_384, "zstd")
    assert pq.read_table(io.BytesIO(ours)).equals(table)
    assert pq.ParquetFile(io.BytesIO(ours)).metadata.num_row_groups == 5


def test_no_call_and_an_empty_call_are_pyarrows_files_too():
    table = pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.string())})
    assert _ours(table, [], None, "zstd") == _theirs(table, [], None, "zstd")
    assert _ours(table, [table], None, "zstd") == _theirs(table, [table], None, "zstd")


def test_a_table_of_another_schema_is_refused_as_pyarrow_refuses_it():
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    other = pa.table({"a": [1], "b": [2]})
    with pytest.raises(ValueError, match="does not match schema"), pq.ParquetWriter(io.BytesIO(), schema) as theirs:
        theirs.write_table(other)
    out = io.BytesIO()
    with (
        pytest.raises(ValueError, match="does not match schema"),
        _parquet.ParallelWriter(out, schema, compression="zstd", workers=2) as ours,
    ):
        ours.write_table(other)
    assert out.getvalue() == b"PAR1"  # nothing but the magic, and no footer: the staging is discarded


def test_an_error_while_writing_leaves_no_footer_and_no_thread():
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])

    class Full(io.BytesIO):
        def write(self, data):  # type: ignore[no-untyped-def]
            if self.tell() > 10:
                raise OSError(28, "No space left on device")
            return super().write(data)

    before = threading.active_count()
    sink = Full()
    with (
        pytest.raises(OSError, match="No space"),
        _parquet.ParallelWriter(sink, schema, compression="zstd", workers=2) as writer,
    ):
        for _ in range(3):
            writer.write_table(pa.table({"a": list(range(1000)), "b": ["x"] * 1000}, schema=schema))
    assert not sink.getvalue().endswith(b"PAR1") or len(sink.getvalue()) == 4
    for thread in threading.enumerate():
        if thread.name.startswith("parquet-encode"):
            thread.join(timeout=10)
    assert threading.active_count() <= before


def test_the_sinks_writer_is_the_parallel_one_where_it_helps():
    two = pa.schema([("a", pa.int64()), ("b", pa.string())])
    parallel = _parquet.parquet_writer(io.BytesIO(), two, compression="zstd", workers=2)
    assert isinstance(parallel, _parquet.ParallelWriter)
    assert isinstance(_parquet.parquet_writer(io.BytesIO(), two, compression="zstd", workers=1), pq.ParquetWriter)
    one = pa.schema([("a", pa.int64())])
    assert isinstance(_parquet.parquet_writer(io.BytesIO(), one, compression="zstd", workers=2), pq.ParquetWriter)


def _dictionary_pages(data: bytes, column: str) -> list[int]:
    """Compressed bytes of the dictionary page of ``column`` in each row group (from the footer's
    offsets: the dictionary page comes first, the data pages start where it ends)."""
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    index = meta.schema.names.index(column)
    sizes = []
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group).column(index)
        assert chunk.has_dictionary_page
        sizes.append(chunk.data_page_offset - chunk.dictionary_page_offset)
    return sizes


@pytest.mark.parametrize("workers", [1, 2])
def test_the_sinks_writer_caps_dictionary_pages_and_writes_pyarrows_bytes_for_that_option(workers):  # type: ignore[no-untyped-def]
    """Dictionary pages of at most DICTIONARY_PAGE_BYTES (pyarrow's default, 1 MiB, let the encoder
    of a 262,144-row group of distinct int64 amounts take 31 MB): past it a column falls back to
    plain encoding, as pyarrow's writer does with that option, byte for byte."""
    import random

    rng = random.Random(7)
    n = 200_000
    table = pa.table(
        {
            "amount": pa.array(rng.sample(range(2**40), n), pa.int64()),
            "merchant": pa.array([f"m{i % 97}" for i in range(n)]),
        }
    )
    out = io.BytesIO()
    with _parquet.parquet_writer(out, table.schema, compression="zstd", workers=workers) as writer:
        writer.write_table(table, row_group_size=n)
    ours = out.getvalue()
    theirs = io.BytesIO()
    options = {"dictionary_pagesize_limit": _parquet.DICTIONARY_PAGE_BYTES}
    with pq.ParquetWriter(theirs, table.schema, compression="zstd", **options) as writer:
        writer.write_table(table, row_group_size=n)
    assert ours == theirs.getvalue()
    (amount,) = _dictionary_pages(ours, "amount")
    assert amount <= _parquet.DICTIONARY_PAGE_BYTES + 64  # the page header's few bytes
    assert _dictionary_pages(ours, "merchant") == _dictionary_pages(theirs.getvalue(), "merchant")
    assert pq.read_table(io.BytesIO(ours)).equals(table)


@pytest.mark.parametrize("user_value", [None, "narenas:4"])
def test_the_cli_gives_arrows_jemalloc_one_arena_unless_the_user_chose(user_value):  # type: ignore[no-untyped-def]
    """The writers encode on threads; with jemalloc's arena per thread, the pages one thread freed
    were not reused by another (10M-row Parquet publish: 254-272 MB peak against 204 MB)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("JE_ARROW_MALLOC_CONF", "ARROW_DEFAULT_MEMORY_POOL")}
    if user_value:
        env["JE_ARROW_MALLOC_CONF"] = user_value
    code = (
        "import os; from atomic_publish.cli import _prefer_jemalloc; _prefer_jemalloc(); import pyarrow as pa;"
        "print(pa.default_memory_pool().backend_name, os.environ['JE_ARROW_MALLOC_CONF'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["jemalloc", user_value or "narenas:1,muzzy_decay_ms:0"]
