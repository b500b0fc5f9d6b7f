"""The CSV encoding of the file and S3 sinks runs on worker threads (``_arrow.CsvWriter``). What it
writes must be byte for byte what pyarrow's own ``CSVWriter`` writes for the same batches: a re-run's
checksum, a reader's parse and the concatenation of parts' files (which skips each part's header)
all depend on it."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import threading

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomic_publish import InputError
from atomic_publish.publishers._arrow import CsvWriter

_TEXT = st.text(alphabet=st.sampled_from([*"ab,\"\n\r é\t\\'x€0", "\u2028"]), max_size=12)
_COLUMNS = {
    "i": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "f": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "s": (pa.string(), _TEXT),
    "b": (pa.bool_(), st.booleans()),
    "d": (pa.date32(), st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))),
    "t": (pa.timestamp("us", tz="UTC"), st.datetimes(timezones=st.just(dt.UTC))),
    "m": (pa.decimal128(12, 2), st.decimals(min_value=-(10**9), max_value=10**9, places=2)),
    "y": (pa.binary(), _TEXT.map(str.encode)),
}


def _expected(schema: pa.Schema, batches: list[pa.RecordBatch]) -> bytes:
    out = io.BytesIO()
    writer = pacsv.CSVWriter(out, schema)
    for batch in batches:
        writer.write_batch(batch)
    writer.close()
    return out.getvalue()


def _ours(schema: pa.Schema, batches: list[pa.RecordBatch], workers: int, piece: int = 0) -> bytes:
    out = io.BytesIO()
    writer = CsvWriter(out, schema, "here", workers=workers)
    if piece:
        writer.PIECE_ROWS = piece  # a batch longer than this is encoded in pieces
    try:
        for batch in batches:
            writer.write(batch)
        writer.close()
    finally:
        writer.abandon()
    return out.getvalue()


@st.composite
def _tables(draw):  # type: ignore[no-untyped-def]
    names = draw(st.lists(st.sampled_from(sorted(_COLUMNS)), min_size=1, max_size=5, unique=True))
    rows = draw(st.integers(0, 40))
    columns = {}
    for name in names:
        typ, values = _COLUMNS[name]
        columns[name] = pa.array(draw(st.lists(st.none() | values, min_size=rows, max_size=rows)), typ)
    table = pa.record_batch(columns)
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=6)))
    bounds = [0, *cuts, rows]
    batches = [table.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    return table.schema, [b for b in batches if b.num_rows or draw(st.booleans())]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tables(), st.integers(1, 3), st.sampled_from([0, 1, 2, 7]))
def test_the_same_bytes_as_pyarrows_csv_writer(case, workers, piece):  # type: ignore[no-untyped-def]
    schema, batches = case
    assert _ours(schema, batches, workers, piece) == _expected(schema, batches)


def test_many_batches_stay_in_order():
    """More batches than can be in flight at once, each a different size: the order is the input's."""
    batches = [pa.record_batch({"n": pa.array(range(k * 1000, k * 1000 + k + 1), pa.int64())}) for k in range(200)]
    ours = _ours(batches[0].schema, batches, workers=3)
    assert ours == _expected(batches[0].schema, batches)
    assert ours.splitlines()[1:4] == [b"0", b"1000", b"1001"]


def test_an_empty_input_is_the_header_alone():
    schema = pa.schema([("a", pa.int64()), ("b c", pa.string())])
    assert _ours(schema, [], workers=2) == _expected(schema, []) == b'"a","b c"\n'


def test_bytes_that_are_not_utf8_are_refused_as_input_naming_the_column():
    schema = pa.schema([("n", pa.int64()), ("raw", pa.binary())])
    good = pa.record_batch([pa.array([1]), pa.array([b"ok"])], schema=schema)
    bad = pa.record_batch([pa.array([2]), pa.array([b"\xff\xfe"])], schema=schema)
    with pytest.raises(InputError, match=r"^here: column\(s\) 'raw' hold bytes that are not UTF-8 text"):
        _ours(schema, [good] * 10 + [bad] + [good] * 10, workers=2)


def test_a_batch_of_another_schema_is_refused():
    schema = pa.schema([("n", pa.int64())])
    with pytest.raises(pa.ArrowInvalid, match="schema differs"):
        _ours(schema, [pa.record_batch({"n": pa.array(["x"])})], workers=2)


class Interrupted(BaseException):
    """Stands in for the Terminated a signal handler raises."""


def test_an_interrupted_write_abandons_at_once_and_its_threads_end():
    """A signal's exception while batches are in flight: nothing more reaches the sink, abandon()
    does not wait for the encodings, and the worker threads stop on their own."""
    schema = pa.schema([("n", pa.int64())])
    batch = pa.record_batch({"n": pa.array(range(50_000), pa.int64())})

    class Sink(io.BytesIO):
        def write(self, data):  # type: ignore[no-untyped-def]
            if self.tell() > 100:
                raise Interrupted
            return super().write(data)

    sink = Sink()
    writer = CsvWriter(sink, schema, "here", workers=2)
    with pytest.raises(Interrupted):
        for _ in range(50):
            writer.write(batch)
    writer.abandon()
    writer.abandon()  # the error path may call it again
    for thread in threading.enumerate():
        if thread.name.startswith("csv-encode"):
            thread.join(10)
            assert not thread.is_alive(), "an encoding thread outlived the abandoned writer"
