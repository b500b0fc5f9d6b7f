"""rechunk: fixed-size row groups made of fixed-size chunks, whatever the input's batching, so the
Parquet bytes a sink writes do not depend on how its input was batched (and no row group is copied
whole into one buffer)."""

from __future__ import annotations

import io
import itertools

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from atomic_publish.publishers._arrow import rechunk

ROWS = 2_500
DATA = pa.table(
    {
        "id": pa.array([f"r{i:06d}" for i in range(ROWS)]),
        "amount": pa.array([(i * 7919) % 100_003 for i in range(ROWS)], pa.int64()),
        "note": pa.array([None if i % 11 == 0 else "x" * (i % 13) for i in range(ROWS)]),
    }
)


def batched(cuts: list[int]) -> pa.RecordBatchReader:
    """DATA as a stream cut at ``cuts`` (sorted, deduplicated row offsets)."""
    edges = [0, *sorted({c for c in cuts if 0 < c < ROWS}), ROWS]
    batches = [DATA.slice(a, b - a).combine_chunks().to_batches()[0] for a, b in itertools.pairwise(edges)]
    return pa.RecordBatchReader.from_batches(DATA.schema, batches)


def parquet_bytes(reader: pa.RecordBatchReader, rows: int, piece: int) -> bytes:
    out = io.BytesIO()
    with pq.ParquetWriter(out, reader.schema, compression="zstd") as writer:
        for table in rechunk(reader, rows, piece):
            writer.write_table(table, row_group_size=table.num_rows)
    return out.getvalue()


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=ROWS), max_size=30))
def test_the_layout_and_the_bytes_do_not_depend_on_the_input_batching(cuts: list[int]) -> None:
    tables = list(rechunk(batched(cuts), 1_000, 250))
    assert [t.num_rows for t in tables] == [1_000, 1_000, 500]
    for table in tables:
        lengths = {len(chunk) for chunk in table.column(0).chunks}
        assert lengths == {250}, lengths
    assert pa.concat_tables(tables).equals(DATA)
    assert parquet_bytes(batched(cuts), 1_000, 250) == parquet_bytes(batched([]), 1_000, 250)


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=ROWS), max_size=30))
def test_a_piece_that_does_not_divide_the_group_ends_each_group_short(cuts: list[int]) -> None:
    tables = list(rechunk(batched(cuts), 1_000, 300))
    assert [[len(c) for c in t.column(0).chunks] for t in tables] == [[300, 300, 300, 100]] * 2 + [[300, 200]]
    assert pa.concat_tables(tables).equals(DATA)
    assert parquet_bytes(batched(cuts), 1_000, 300) == parquet_bytes(batched([]), 1_000, 300)


def test_an_empty_stream_yields_nothing() -> None:
    assert list(rechunk(pa.RecordBatchReader.from_batches(DATA.schema, []), 1_000)) == []
