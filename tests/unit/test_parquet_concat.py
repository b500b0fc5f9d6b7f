"""Parquet files joined byte for byte (publishers/_parquet.py, what the file sink's distributed
commit does with the parts of a Parquet run): property-based over tables, row-group sizes, codecs and
part counts. Read back by pyarrow's own reader (not the project's code), row group by row group, and
compared with the parts; the footer codec re-encodes pyarrow's footers byte for byte; what cannot be
joined so is refused before a byte is written; a damaged footer is refused, never misread."""

from __future__ import annotations

import datetime as dt
import io
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomic_publish.publishers import _parquet

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.float64()),
        ("ok", pa.bool_()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("tags", pa.list_(pa.int32())),
        ("money", pa.decimal128(12, 2)),
    ]
)


def _table(start: int, n: int, seed: int) -> pa.Table:
    rows = range(start, start + n)
    return pa.table(
        {
            "id": list(rows),
            "name": [None if (i + seed) % 7 == 0 else f"n{(i * seed) % 11}-\u00e9" * (i % 3) for i in rows],
            "amount": [None if (i + seed) % 5 == 0 else i * 0.25 for i in rows],
            "ok": [(i + seed) % 2 == 0 for i in rows],
            "at": [dt.datetime(2026, 4, 24, tzinfo=dt.UTC) + dt.timedelta(seconds=i * seed) for i in rows],
            "tags": [list(range(i % 4)) if i % 6 else None for i in rows],
            "money": [None if i % 9 == 0 else __import__("decimal").Decimal(i) / 100 for i in rows],
        },
        schema=SCHEMA,
    )


def _write(path: Path, table: pa.Table, row_group: int, compression: str, **options) -> Path:  # type: ignore[no-untyped-def]
    with pq.ParquetWriter(path, table.schema, compression=compression, **options) as writer:
        for start in range(0, table.num_rows, row_group):  # as the sink writes: one call per row group
            writer.write_table(table.slice(start, row_group), row_group_size=row_group)
    return path


def _join(paths: list[Path]) -> bytes:
    out = io.BytesIO()
    checked: list[int] = []
    rows = _parquet.plan(paths).write(out, lambda i, path, digest, size: checked.append(i))
    assert checked == list(range(len(paths)))
    assert rows == sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    return out.getvalue()


parts_strategy = st.lists(
    st.tuples(st.integers(0, 700), st.integers(1, 300), st.sampled_from(["zstd", "snappy", "none", "gzip"])),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=parts_strategy, seed=st.integers(1, 50))
def test_joined_parts_read_back_as_the_parts_one_after_the_other(tmp_path_factory, parts, seed):
    tmp = tmp_path_factory.mktemp("join")
    tables, paths, start = [], [], 0
    for i, (n, group, codec) in enumerate(parts):
        tables.append(_table(start, n, seed))
        paths.append(_write(tmp / f"p{i}.parquet", tables[-1], group, codec))
        start += n
    for path in paths:  # the codec gives back the very bytes pyarrow's Thrift wrote
        footer = _parquet.read_footer(path)
        assert _parquet.encode(_parquet.decode(footer.raw[:-8])) == footer.raw[:-8]

    joined = tmp / "joined.parquet"
    joined.write_bytes(_join(paths))
    back = pq.ParquetFile(joined)
    assert back.schema_arrow == SCHEMA
    assert back.read().equals(pa.concat_tables(tables))
    # Row group by row group (each found through the shifted offsets): the parts' own, in order.
    # (Each file and footer opened once: up to 2,800 groups here.)
    opened = [(part, part.metadata) for part in map(pq.ParquetFile, paths)]
    groups = [(part, footer, g) for part, footer in opened for g in range(footer.num_row_groups)]
    joined_footer = back.metadata
    assert joined_footer.num_row_groups == len(groups)
    for i, (part, footer, g) in enumerate(groups):
        assert back.read_row_group(i).equals(part.read_row_group(g))
        assert (
            joined_footer.row_group(i).column(0).statistics.to_dict()
            == footer.row_group(g).column(0).statistics.to_dict()
        )


def test_a_joined_file_is_the_parts_bytes_and_one_footer(tmp_path):
    paths = [_write(tmp_path / f"p{i}.parquet", _table(i * 500, 500, 3), 200, "zstd") for i in range(3)]
    joined = _join(paths)
    body = b"".join(p.read_bytes()[4 : _parquet.read_footer(p).data_end] for p in paths)
    assert joined.startswith(b"PAR1" + body) and joined.endswith(b"PAR1")
    assert _join(paths) == joined  # the same parts, the same bytes


@pytest.mark.parametrize(
    "other, reason",
    [
        ({"write_page_index": True}, "fields [4, 5, 6, 7] this merge does not move"),
        ({"schema": pa.schema([("id", pa.int64())])}, "differ in their footer's field 2"),
        ({"bloom_filter_options": {"id": {}}}, "fields [14, 15] this merge does not move"),
    ],
    ids=["page-index", "another-schema", "bloom-filter"],
)
def test_what_cannot_be_joined_byte_for_byte_is_refused_before_a_byte_is_written(tmp_path, other, reason):
    table = _table(0, 100, 1)
    first = _write(tmp_path / "a.parquet", table, 50, "zstd")
    if "schema" in other:
        second = _write(tmp_path / "b.parquet", table.select(["id"]), 50, "zstd")
    else:
        try:
            second = _write(tmp_path / "b.parquet", table, 50, "zstd", **other)
        except TypeError:  # this pyarrow does not write bloom filters
            pytest.skip(f"pyarrow {pa.__version__} cannot write {other}")
    with pytest.raises(_parquet.NotConcatenable, match=reason.replace("[", r"\[")):
        _parquet.plan([first, second])


def _offsets(path: str) -> tuple[int, list[tuple[int | None, int | None]]]:
    """pyarrow's reading of a footer (rows; each column chunk's data and dictionary page offsets)."""
    meta = pq.read_metadata(path)
    found = []
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            column = meta.row_group(g).column(c)
            found.append((column.data_page_offset, column.dictionary_page_offset))
    return meta.num_rows, found


class _ChildReader:
    """pyarrow's reader in a child process: on some damaged footers it aborts the whole process
    (a ParquetException thrown inside a noexcept accessor, "Repetition level histogram size
    mismatch": std::terminate), which would take the test run with it. None: the child aborted."""

    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = None

    def read(self, path: Path) -> tuple[int, list[tuple[int | None, int | None]]] | None:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self.pool.submit(_offsets, str(path)).result(timeout=120)
        except BrokenProcessPool:
            self.close()
            return None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


@pytest.fixture(scope="module")
def child_reader() -> Iterator[_ChildReader]:
    reader = _ChildReader()
    yield reader
    reader.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_footer_is_refused_or_read_never_misread(tmp_path_factory, child_reader, data):
    """Any byte of the footer changed: the plan is refused with NotConcatenable, or, when the footer
    still decodes to one whose offsets are all inside the file, the joined file is what pyarrow makes
    of the damaged part (pyarrow reads both, or aborts on both); never another exception, never an
    offset outside the part's chunks."""
    tmp = tmp_path_factory.mktemp("damage")
    good = _write(tmp / "good.parquet", _table(0, 60, 2), 25, "snappy")
    raw = bytearray(good.read_bytes())
    length = int.from_bytes(raw[-8:-4], "little")
    at = data.draw(st.integers(len(raw) - 8 - length, len(raw) - 9))
    raw[at] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    bad = tmp / "bad.parquet"
    bad.write_bytes(bytes(raw))
    try:
        joined = _parquet.plan([good, bad])
    except _parquet.NotConcatenable:
        return
    out = io.BytesIO()
    joined.write(out, lambda i, path, digest, size: None)
    joined_path = tmp / "joined.parquet"
    joined_path.write_bytes(out.getvalue())
    read = child_reader.read(joined_path)
    if read is None:  # pyarrow aborted on the joined footer: it does on the damaged part's own too
        assert child_reader.read(bad) is None
        return
    rows, offsets = read
    assert rows == joined.rows
    data_end = len(out.getvalue()) - len(joined.footer)
    for data_page, dictionary_page in offsets:
        for offset in (data_page, dictionary_page):
            assert offset is None or 4 <= offset <= data_end


def test_a_footer_pyarrow_aborts_on_is_read_in_a_child_and_the_next_read_works(tmp_path, child_reader):
    """One damaged byte found by the property above (pyarrow 26: the plan accepts the footer, and
    pyarrow's column accessors abort the process on it): the child's abort is reported as None, for
    the joined file as for the damaged part, and the reader starts a new child for the next read."""
    good = _write(tmp_path / "good.parquet", _table(0, 60, 2), 25, "snappy")
    raw = bytearray(good.read_bytes())
    raw[3948] = 68
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(raw))
    joined = tmp_path / "joined.parquet"
    with joined.open("wb") as out:
        _parquet.plan([good, bad]).write(out, lambda i, path, digest, size: None)
    assert (child_reader.read(joined) is None) == (child_reader.read(bad) is None)
    rows, offsets = child_reader.read(good) or (0, [])
    assert rows == 60 and len(offsets) == 3 * len(SCHEMA)
