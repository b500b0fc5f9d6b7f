"""Input records as streamed Arrow batches: open CSV/Parquet files, accept any Arrow stream, cast
to a target schema batch by batch, and name the file and line of bad input.

Nothing here materialises a whole input: readers yield bounded batches, so memory stays flat
whatever the input size.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ._errors import InputError, SchemaMismatch
from ._fs import ThreadedWriter

# Peak memory scales with the CSV block size (the reader parses blocks ahead in parallel): measured
# on the refunds pipeline, 4 MiB blocks peaked at ~340 MB RSS and 1 MiB at ~180 MB, same speed.
CSV_BLOCK_BYTES = 1 << 20
CSV_BLOCK_ENV = "ATOMIC_PUBLISH_CSV_BLOCK_MB"
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2")  # a .tsv was read as comma-separated: no longer taken
_COMPRESSED = (".gz", ".bz2")  # pyarrow decompresses these by the name


def _compressed(path: Path) -> bool:
    return path.name.lower().endswith(_COMPRESSED)


_PARQUET_SUFFIXES = (".parquet", ".pq")


def input_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(f"{path}: cannot tell the format from the name; use .csv or .parquet")


def check_input_path(path: Path) -> os.stat_result:
    """The input's stat, or InputError saying what is wrong with it (missing, not a regular file,
    a name that is not UTF-8: pyarrow cannot open it; found from outside: exit 1)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise InputError(f"{shown}: the file's name is not UTF-8 text; rename the file") from None
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: input file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the input: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else ("a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        )
        raise InputError(f"{path}: the input is {kind}, not a regular file; give a CSV or Parquet file")
    return st


def open_input(
    path: str | Path,
    schema: pa.Schema | None = None,
    *,
    meter: Callable[[int], None] | None = None,
    text: Sequence[str] = (),
) -> pa.RecordBatchReader:
    """Open a CSV or Parquet file as a streamed RecordBatchReader (cast to ``schema`` if given; a
    CSV file's columns are then read as the schema's types, not guessed). The file must not change
    while it is read: a change of size or mtime is refused at its end. ``meter`` (uncompressed CSV
    only) is told how many bytes of the file have been read, batch by batch. ``text``: CSV columns
    read as strings whatever they look like (not cast: ``schema`` must be None)."""
    exact = pa.schema([(name, pa.string()) for name in text]) if text else None
    return _open_input(Path(path), schema, meter, exact, None)


def _open_input(
    path: Path,
    schema: pa.Schema | None,
    meter: Callable[[int], None] | None,
    exact: pa.Schema | None,
    footer: tuple[pq.FileMetaData, os.stat_result] | None,
) -> pa.RecordBatchReader:
    """``open_input``; ``exact``: CSV columns read as these types by the CSV parser itself (not
    guessed, not cast: ``schema`` must be None); ``footer``: a Parquet footer already parsed, and
    the file's stat when it was (used only if the file is still that one: a file of 10M rows in
    1,014 row groups parses to ~10 MB, held for the whole read)."""
    before = check_input_path(path)
    fmt = input_format(path)
    read_as = schema if schema is not None else exact
    if fmt == "csv":
        reader = _open_csv(path, read_as, meter)
    else:
        metadata = footer[0] if footer is not None and _same_file(footer[1], before) else None
        reader = _open_parquet(path, metadata)
    check_columns(reader.schema, str(path))
    reader = _unchanged(reader, path, before)
    return conform(reader, schema, source=str(path)) if schema is not None else reader


def check_columns(schema: pa.Schema, source: str) -> None:
    """Refuse empty and duplicate column names (a destination would drop, rename or merge them)."""
    seen: set[str] = set()
    for index, name in enumerate(schema.names):
        if not name.strip():
            raise InputError(f"{source}: column {index + 1} has an empty name")
        if name in seen:
            raise InputError(f"{source}: column {name!r} appears more than once")
        seen.add(name)


def _unchanged(reader: pa.RecordBatchReader, path: Path, before: os.stat_result) -> pa.RecordBatchReader:
    """The same batches, and at the end a check that the file was not rewritten while it was read
    (a stale publish of a file that changed under it would pass every checksum)."""

    def changed() -> InputError | None:
        after = path.stat()
        if (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino):
            return None
        return InputError(f"{path}: the file changed while it was read ({before.st_size} -> {after.st_size} bytes)")

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except InputError as exc:
            # A row cut by a writer still appending reads as malformed: the change is the cause.
            raise (changed() or exc) from None
        if (error := changed()) is not None:
            raise error

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


@dataclass(frozen=True)
class InputFiles:
    """A run's input files, kept as files until the sink asks for them.

    Most sinks read them as one stream of batches (``reader()``). A sink that can publish the
    files as they are (the S3 sink writing Parquet, given Parquet) uploads their bytes instead: a
    job that already wrote its output in the sink's format pays for the upload, not a re-encode.
    Build one with ``open_inputs``, which checks every file before anything is written anywhere.
    """

    paths: tuple[Path, ...]
    format: str  # "csv", "parquet" or "mixed"
    # Parquet footers (when every file is Parquet): row counts and schema without reading data.
    footers: tuple[pq.FileMetaData, ...] = dataclasses.field(default=(), compare=False, repr=False)
    # Each footer's file as it was when the footer was read: reader() reuses a footer for a file
    # still the same (not parsing it twice; one copy held), and reads it again from any other.
    _footer_stats: tuple[os.stat_result, ...] = dataclasses.field(default=(), compare=False, repr=False)
    _read: dict[Path, int] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # The first file's columns and types as open_inputs read them (the run's schema; for CSV, the
    # types guessed from its first block, as reader() guesses them).
    schema: pa.Schema | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def rows(self) -> int | None:
        """Total rows from the Parquet footers; None unless every file is Parquet."""
        return sum(f.num_rows for f in self.footers) if self.format == "parquet" else None

    @property
    def size(self) -> int | None:
        """Total bytes of the files when every one is uncompressed CSV (progress by bytes read), else None."""
        if self.format != "csv" or any(_compressed(p) for p in self.paths):
            return None
        return sum(p.stat().st_size for p in self.paths)

    def bytes_read(self) -> int:
        """How many bytes of the CSV files the reader has got through so far."""
        return sum(self._read.values())

    def _meter(self, path: Path) -> Callable[[int], None]:
        def record(position: int) -> None:
            self._read[path] = position

        return record

    @property
    def parquet_schema(self) -> pa.Schema | None:
        """The one Arrow schema every Parquet file declares, or None (not all Parquet, or they differ)."""
        if self.format != "parquet":
            return None
        schemas = [f.schema.to_arrow_schema() for f in self.footers]
        first = schemas[0]
        return first if all(s.equals(first) for s in schemas[1:]) else None

    def _footer(self, index: int) -> tuple[pq.FileMetaData, os.stat_result] | None:
        if index < len(self.footers) and index < len(self._footer_stats):
            return self.footers[index], self._footer_stats[index]
        return None

    def reader(self, schema: pa.Schema | None = None) -> pa.RecordBatchReader:
        """Every file as one stream. The first file's columns are the run's, with the types of the
        first file with rows: files before it that hold no row (a CSV header alone reads as columns
        of type null) add nothing and do not set the types (found from outside: a header-only first
        file made every later value "not a valid null"). A CSV column that ``schema`` makes a string
        is read as text from the start ("007" stays "007", a word far down a column of numbers is
        taken), and so is one it makes a decimal or a bool, by the CSV parser as that type: a guess
        cast would change values (found from outside: 1234567890123456.78 guessed as a float came out
        of decimal128(20, 2) as ...456.75, 12.345 as 12.35, and 10 and -1 as a bool as true; the
        parser refuses them). The other columns are guessed, and cast to ``schema`` by the caller
        (``conform``): a CSV parser's own reading of timestamps, dates and integers is stricter than
        a cast that loses nothing (a naive time into a UTC one, 1.0 into an int64)."""
        start = 0
        while start < len(self.paths) - 1 and self._holds_no_row(start):
            start += 1
        parsed = [f for f in schema if _parsed_exactly(f.type)] if schema else []
        exact = pa.schema(parsed) if parsed else None
        first = _open_input(self.paths[start], None, self._meter(self.paths[start]), exact, self._footer(start))
        names = self.schema.names if self.schema is not None and start else first.schema.names
        run_schema = pa.schema([first.schema.field(name) for name in names])

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in first:
                yield batch.select(names) if start else batch
            for index in range(start + 1, len(self.paths)):
                path = self.paths[index]
                # Read as the run's types (found from outside: a later CSV file's values were guessed
                # on their own, then cast, so "007" in a string column was published as "7"). Its
                # columns are the first file's: open_inputs refused any other set before this.
                yield from _open_input(path, run_schema, self._meter(path), None, self._footer(index))

        return pa.RecordBatchReader.from_batches(run_schema, batches())

    def _holds_no_row(self, index: int) -> bool:
        if self.format == "parquet":
            return bool(self.footers[index].num_rows == 0)
        path = self.paths[index]
        return not (_csv_has_rows(path) if input_format(path) == "csv" else bool(pq.read_metadata(path).num_rows))


def open_inputs(paths: Sequence[str | Path]) -> InputFiles:
    """Check input files (present, a known format, a readable header or footer, a row in one of
    them) without reading the rest of their data, so bad input is refused before anything is
    written at the destination."""
    if not paths:
        raise InputError("no input file given")
    resolved = tuple(Path(p) for p in paths)
    formats = set()
    footers = []
    stats = []
    columns: list[list[str]] = []
    schemas: list[pa.Schema] = []
    has_rows = False
    for path in resolved:
        before = check_input_path(path)
        fmt = input_format(path)
        formats.add(fmt)
        if fmt == "parquet":
            stats.append(before)
            try:
                footers.append(pq.read_metadata(path))
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"{path}: not a readable Parquet file: {_first_line(exc)}") from None
            schema = footers[-1].schema.to_arrow_schema()
            check_columns(schema, str(path))
            has_rows = has_rows or footers[-1].num_rows > 0
        else:
            reader = open_input(path)  # reads the header line: a missing or broken one is reported now
            schema = reader.schema
            if not has_rows:  # and the first rows (one block), until a file has any
                has_rows = _csv_has_rows(path)
        columns.append(schema.names)
        schemas.append(schema)
    for path, names in zip(resolved[1:], columns[1:], strict=True):  # the first file's columns are the run's
        missing = [n for n in columns[0] if n not in names]
        extra = [n for n in names if n not in columns[0]]
        if missing or extra:
            raise SchemaMismatch(
                f"{path}: its columns differ from the first input file's ({resolved[0]}), which are the run's: "
                + "; ".join(
                    f"{what} {', '.join(map(repr, cols))}"
                    for what, cols in (("missing", missing), ("extra", extra))
                    if cols
                )
            )
    if not has_rows:  # refused here, before the run's lock or a sink's catalog is created (found from outside)
        raise InputError(f"{', '.join(map(str, resolved))}: the input has no rows; nothing to publish")
    fmt = formats.pop() if len(formats) == 1 else "mixed"
    if fmt != "parquet":
        footers, stats = [], []
    return InputFiles(resolved, fmt, tuple(footers), schema=schemas[0], _footer_stats=tuple(stats))


def csv_block_bytes() -> int:
    """The CSV reader's block (``ATOMIC_PUBLISH_CSV_BLOCK_MB``, default 1 MiB): a row must fit in one."""
    value = os.environ.get(CSV_BLOCK_ENV)
    if not value:
        return CSV_BLOCK_BYTES
    try:
        megabytes = int(value)
    except ValueError:
        raise InputError(f"{CSV_BLOCK_ENV} = {value!r} is not a whole number of MiB") from None
    return max(1, megabytes) << 20


def _open_csv(path: Path, schema: pa.Schema | None, meter: Callable[[int], None] | None = None) -> pa.RecordBatchReader:
    # The types a CSV reader can read a text as; any other (a list, a struct) is guessed, then cast.
    column_types = {f.name: f.type for f in schema if _reads_from_text(f.type)} if schema is not None else None
    plain = not _compressed(path)
    source: Any = pa.OSFile(str(path)) if meter is not None and plain else path  # its tell(): how far
    try:
        inner = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=csv_block_bytes()),
            convert_options=pacsv.ConvertOptions(
                column_types=column_types, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise _csv_error(path, exc, column_types) from None
    wanted = {f.name for f in schema if pa.types.is_binary(f.type)} if schema is not None else set()
    for field in inner.schema:
        # pyarrow reads a column that is not valid UTF-8 as binary: text with a broken encoding.
        if (pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)) and field.name not in wanted:
            line = _first_invalid_utf8_line(path)
            where = f"{path}:{line}" if line else str(path)
            raise InputError(f"{where}: column {field.name!r} is not valid UTF-8 text; convert the file to UTF-8")
    measure = (lambda: meter(source.tell())) if meter is not None and plain else None
    return pa.RecordBatchReader.from_batches(inner.schema, _csv_batches(path, inner, measure))


def csv_header(schema: pa.Schema) -> bytes:
    """The bytes pyarrow's CSV writer puts before the first row for ``schema``, whatever its quoting
    rules. (Not through ``schema.empty_table()``, which imports pandas: 0.3 s and 40 MB for every
    CSV publish.)"""
    out = pa.BufferOutputStream()
    pacsv.CSVWriter(out, schema).close()
    return out.getvalue().to_pybytes()


class CsvWriter(ThreadedWriter):
    """pyarrow's CSV writer with the encoding spread over threads: the same bytes as
    ``pacsv.CSVWriter(sink, schema)`` fed the same batches, in the same order, written to ``sink``
    by the calling thread only. ``pacsv.write_csv`` releases the GIL, so batches are encoded side by
    side while the caller reads the next ones (500k refunds rows, 5 alternating rounds in process:
    0.81 s -> 0.49 s, byte-identical output; a third worker on this 2-core machine: 0.52 s). At most
    ``2 * workers`` batches are in flight, so memory stays bounded.

    A binary column that is not UTF-8 text is refused as input (found from outside: exit 1,
    "unexpected ArrowInvalid: Invalid UTF8 payload"): CSV holds text only.

    Use as a context manager (``ThreadedWriter``); every wait polls."""

    PIECE_ROWS = 16384  # as the Parquet input's batches (PARQUET_BATCH_ROWS)

    def __init__(self, sink: Any, schema: pa.Schema, where: str, *, workers: int | None = None) -> None:
        import collections
        import concurrent.futures

        self._sink = sink
        self._schema = schema
        self._where = where
        count = workers or min(4, max(1, os.cpu_count() or 1))
        self._depth = 2 * count
        self._pool = concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix="csv-encode")
        self._pending: collections.deque[Any] = collections.deque()
        self._options = pacsv.WriteOptions(include_header=False)
        sink.write(csv_header(schema))

    def _encode(self, batch: pa.RecordBatch | pa.Table) -> pa.Buffer:
        out = pa.BufferOutputStream()
        pacsv.write_csv(batch, out, write_options=self._options)
        return out.getvalue()

    def _write_oldest(self) -> None:
        try:
            data = self.wait(self._pending[0])
        except pa.ArrowInvalid as exc:
            if "UTF8" not in str(exc):
                raise
            binary = [f.name for f in self._schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
            raise InputError(
                f"{self._where}: column(s) {', '.join(map(repr, binary))} hold bytes that are not UTF-8 text, "
                "which a CSV file cannot hold; publish them to a Parquet sink"
            ) from None
        self._pending.popleft()
        self._sink.write(data)

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if not batch.schema.equals(self._schema):
            raise pa.ArrowInvalid(f"a batch's schema differs from the CSV file's: {batch.schema} vs {self._schema}")
        # Bounded pieces (the rows of a CSV line do not depend on each other): a large batch is
        # encoded in parallel too, and no more than a piece's text is held per job.
        for start in range(0, max(batch.num_rows, 1), self.PIECE_ROWS):
            self._pending.append(self._pool.submit(self._encode, batch.slice(start, self.PIECE_ROWS)))
            while len(self._pending) >= self._depth:
                self._write_oldest()

    def close(self) -> None:
        while self._pending:
            self._write_oldest()
        self._pool.shutdown(wait=False)

    def abandon(self) -> None:
        """After an error: nothing more is written; encodings under way finish on their own."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _parsed_exactly(t: pa.DataType) -> bool:
    """A type a CSV column is read as by the parser when a schema declares it (see InputFiles.reader)."""
    return bool(
        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)
    )


def _reads_from_text(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_date32(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_decimal(t)
        or pa.types.is_binary(t)
        or pa.types.is_null(t)
    )


def _csv_has_rows(path: Path) -> bool:
    """Whether the file's first block holds a row, converting that block only (the reader of
    open_input yields a block once it has read the next, which could refuse a value there that
    ``schema=`` would have read as text: found from outside)."""
    try:
        inner = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=csv_block_bytes()),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        for batch in inner:
            if batch.num_rows:
                return True
    except (pa.ArrowInvalid, OSError) as exc:
        raise _csv_error(path, exc) from None
    return False


def _csv_batches(
    path: Path, inner: pacsv.CSVStreamingReader, measure: Callable[[], None] | None = None
) -> Iterator[pa.RecordBatch]:
    last = None
    try:
        for batch in inner:
            if measure is not None:
                measure()
            if last is not None:
                yield last
            last = batch
    except (pa.ArrowInvalid, OSError) as exc:
        raise _csv_error(path, exc, dict(zip(inner.schema.names, inner.schema.types, strict=True))) from None
    if last is not None:
        _refuse_an_unclosed_quote(path, last)
        yield last


def _refuse_an_unclosed_quote(path: Path, last: pa.RecordBatch) -> None:
    """pyarrow ends a quoted value that is never closed at the end of the file, silently: the rows
    after its opening quote become part of that value (found from outside: a two-row file published
    as one row). Such a value is the last one pyarrow read, and the file ends with ``"`` and its
    text; a closed quote or an unquoted value never leaves that tail. (A compressed file is not checked:
    its tail is only at the end of a second decompression.)"""
    if last.num_rows == 0 or _compressed(path) or not pa.types.is_string(last.schema[-1].type):
        return
    value = last.column(last.num_columns - 1)[last.num_rows - 1].as_py()
    if not value:
        return
    raw = b'"' + value.replace('"', '""').encode()
    size = path.stat().st_size
    if size < len(raw):
        return
    with open(path, "rb") as fh:
        fh.seek(size - len(raw))
        if fh.read() != raw:
            return
        fh.seek(0)
        line = 1 + sum(chunk.count(b"\n") for chunk in _chunks(fh, size - len(raw)))
    raise InputError(f"{path}:{line}: a quoted value is never closed: it runs to the end of the file")


def _chunks(fh: Any, limit: int, size: int = 1 << 20) -> Iterator[bytes]:
    while limit > 0 and (chunk := fh.read(min(size, limit))):
        limit -= len(chunk)
        yield chunk


def _first_invalid_utf8_line(path: Path) -> int | None:
    opener: Any = open
    if path.name.lower().endswith(".gz"):
        import gzip

        opener = gzip.open
    elif path.name.lower().endswith(".bz2"):
        import bz2

        opener = bz2.open
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def _open_parquet(path: Path, metadata: pq.FileMetaData | None = None) -> pa.RecordBatchReader:
    try:
        # No pre-buffering: measured on a 1.4M-row file, pre-buffering with threads took 111 MB of
        # extra RSS, 60 MB without, for 0.26 s vs 0.40 s. Threads alone (the columns of a row group
        # decoded in parallel) cost 3-8 MB and save 7-8%: the file sink at 10M rows 5.0 -> 4.66 s
        # (Parquet), Iceberg 5.72 -> 5.26 s, CSV unchanged (measured 2026-12-04, alternating rounds).
        pf = pq.ParquetFile(path, metadata=metadata, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {_first_line(exc)}") from None
    batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, use_threads=True)

    def checked() -> Iterator[pa.RecordBatch]:
        rows = 0
        try:
            for batch in batches:
                rows += batch.num_rows
                yield batch
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: corrupt Parquet data after row {rows:,}: {_first_line(exc)}") from None

    return pa.RecordBatchReader.from_batches(pf.schema_arrow, checked())


# Reading 7M refund rows and encoding them as CSV: 65,536-row batches peaked at 132 MB, 16,384 at
# 106 MB, in the same time (9.7 s vs 9.5 s).
PARQUET_BATCH_ROWS = 16384


_PARSE_ERR = re.compile(r"Expected (\d+) columns, got (\d+)")
_CONVERT_ERR = re.compile(r"In CSV column #(\d+): .*?conversion error to (\S+): invalid value '(.*)'", re.S)
_COLUMN_ERR = re.compile(r"In CSV column #(\d+): (.*)", re.S)


def _csv_error(path: Path, exc: Exception, types: dict[str, pa.DataType] | None = None) -> InputError:
    """Turn a pyarrow CSV error into one that names the file and line (and, for a column read as
    the type ``types`` declares for it, the value that does not fit).

    pyarrow's streaming reader does not report row numbers, so on this (rare, already failing) path
    the file is scanned again with the csv module to find the offending line.
    """
    text = str(exc)
    if "Empty CSV file" in text:
        return InputError(f"{path}: the file is empty (no header line)")
    if m := _PARSE_ERR.search(text):
        expected = int(m.group(1))
        found = _find_row(path, lambda row: len(row) != expected)
        where = f"{path}:{found[0]}" if found else str(path)
        if found and found[2] and any("\n" in value for value in found[1]) and _odd_quotes_from(path, found[0]):
            # A quote opened in a column before the last one and never closed: pyarrow takes the rest
            # of the file into that value, then finds the row short (found from outside: it was
            # reported as a malformed row at the file's last line).
            return InputError(f"{where}: a quoted value is never closed: it runs to the end of the file")
        return InputError(f"{where}: malformed row: expected {expected} columns, got {m.group(2)}")
    if m := _CONVERT_ERR.search(text):
        col, typ, value = int(m.group(1)), m.group(2), m.group(3)
        header = _header(path)
        name = header[col] if col < len(header) else f"#{col}"
        line = _find_line(path, lambda row: col < len(row) and row[col] == value)
        where = f"{path}:{line}" if line else str(path)
        return InputError(f"{where}: column {name!r}: value {value!r} is not a valid {typ}")
    if (m := _COLUMN_ERR.search(text)) and types:
        col, reason = int(m.group(1)), (m.group(2).strip().splitlines() or [""])[0].rstrip(".")
        header = _header(path)
        name = header[col] if col < len(header) else f"#{col}"
        declared = types.get(name)
        if declared is not None:
            misfit = _first_misfit(path, col, declared)
            if misfit:
                return InputError(
                    f"{path}:{misfit[0]}: column {name!r}: value {misfit[1]!r} does not fit {declared}: {reason}"
                )
            return InputError(f"{path}: column {name!r} does not fit {declared}: {reason}")
    if "straddling" in text or ("block" in text.lower() and "size" in text.lower()):
        return InputError(
            f"{path}: a row is larger than the CSV reader's block ({csv_block_bytes() >> 20} MiB); set "
            f"{CSV_BLOCK_ENV} to more MiB than the longest row"
        )
    return InputError(f"{path}: cannot read CSV: {_first_line(exc)}")


def _first_misfit(path: Path, col: int, typ: pa.DataType) -> tuple[int, str] | None:
    """(line, value) of the first value in column ``col`` that the CSV parser does not take as
    ``typ``. Values are parsed 65,536 at a time, and a chunk that fails is halved down to its
    first bad value: one parse per row took ~0.27 ms, minutes for a large file."""

    def first(items: list[tuple[int, str]]) -> tuple[int, str] | None:
        if _all_fit([v for _, v in items], typ):
            return None
        while len(items) > 1:
            half = items[: len(items) // 2]
            items = items[len(items) // 2 :] if _all_fit([v for _, v in half], typ) else half
        return items[0]

    chunk: list[tuple[int, str]] = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        start = reader.line_num + 1
        for row in reader:
            if col < len(row):
                chunk.append((start, row[col]))
            start = reader.line_num + 1
            if len(chunk) >= 65_536:
                if found := first(chunk):
                    return found
                chunk = []
    return first(chunk) if chunk else None


def _all_fit(values: list[str], typ: pa.DataType) -> bool:
    """Whether the CSV parser takes every one of ``values`` as ``typ`` (a null marker is a null)."""
    try:
        pacsv.read_csv(
            pa.py_buffer(b"v\n" + b"".join(map(_csv_quoted, values))),
            convert_options=pacsv.ConvertOptions(
                column_types={"v": typ}, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _csv_quoted(value: str) -> bytes:
    """One CSV value as it would be read from the file: quoted only if it must be (a quoted
    empty string is not the null an unquoted one is)."""
    if not any(c in value for c in ',"\r\n'):
        return value.encode() + b"\n"
    return b'"' + value.replace('"', '""').encode() + b'"\n'


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return next(csv.reader(fh), [])


def _find_line(path: Path, bad: Any) -> int | None:
    found = _find_row(path, bad)
    return found[0] if found else None


def _odd_quotes_from(path: Path, line: int) -> bool:
    """Whether the file from ``line`` to its end holds an odd number of ``"``: a quote never closed
    (escaped quotes and closed values come in pairs)."""
    with open(path, "rb") as fh:
        for _ in range(line - 1):
            fh.readline()
        return sum(chunk.count(b'"') for chunk in iter(lambda: fh.read(1 << 20), b"")) % 2 == 1


def _find_row(path: Path, bad: Any) -> tuple[int, list[str], bool] | None:
    """The first row ``bad`` picks: the line it starts on (a quoted value may span lines), the row,
    and whether it runs to the end of the file."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        start = reader.line_num + 1
        for row in reader:
            if row and bad(row):
                return start, row, next(reader, None) is None
            start = reader.line_num + 1
    return None


def as_reader(records: Any) -> pa.RecordBatchReader:
    """Accept a RecordBatchReader, a Table, a RecordBatch, or anything with ``__arrow_c_stream__``."""
    if isinstance(records, pa.RecordBatchReader):
        return _without_views(records)
    if isinstance(records, InputFiles):
        return records.reader()
    if isinstance(records, pa.Table):
        return _without_views(records.to_reader())
    if isinstance(records, pa.RecordBatch):
        return _without_views(pa.RecordBatchReader.from_batches(records.schema, [records]))
    if hasattr(records, "__arrow_c_stream__"):
        return _without_views(pa.RecordBatchReader.from_stream(records))
    raise InputError(
        f"records of type {type(records).__name__} are not an Arrow stream "
        "(pass a RecordBatchReader, a Table, or an object with __arrow_c_stream__)"
    )


def _without_views(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """String and binary view columns (what polars exports) as plain string and binary, list views
    as lists, and date64 as date32 (a date either way; Parquet keeps date32 only), also inside
    dictionaries, lists, structs and maps: the same values, in the types every writer here takes
    (found from outside: the CSV writers and Postgres failed on string_view with a raw ArrowInvalid,
    exit 1, Postgres on date64 with exit 5, and every sink on polars' categorical columns,
    ``dictionary<int32, string_view>``)."""
    fields = [f.with_type(plain_type(f.type)) for f in reader.schema]
    if all(f.type == g.type for f, g in zip(fields, reader.schema, strict=True)):
        return reader
    schema = pa.schema(fields, metadata=reader.schema.metadata)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            try:
                yield batch.cast(schema)
            except pa.ArrowInvalid as exc:  # a date64 that is not a whole day
                raise InputError(f"the records: {_first_line(exc)}") from None

    return pa.RecordBatchReader.from_batches(schema, batches())


def plain_type(typ: pa.DataType) -> pa.DataType:
    """``typ`` with every view type (string, binary, list) and date64 inside it replaced by its
    plain form (see ``_without_views``)."""
    if pa.types.is_string_view(typ):
        return pa.string()
    if pa.types.is_binary_view(typ):
        return pa.binary()
    if pa.types.is_date64(typ):
        return pa.date32()
    if pa.types.is_dictionary(typ):
        return pa.dictionary(typ.index_type, plain_type(typ.value_type), typ.ordered)
    if pa.types.is_list_view(typ) or pa.types.is_list(typ):
        return pa.list_(typ.value_field.with_type(plain_type(typ.value_type)))
    if pa.types.is_large_list_view(typ) or pa.types.is_large_list(typ):
        return pa.large_list(typ.value_field.with_type(plain_type(typ.value_type)))
    if pa.types.is_fixed_size_list(typ):
        return pa.list_(typ.value_field.with_type(plain_type(typ.value_type)), typ.list_size)
    if pa.types.is_map(typ):
        return pa.map_(
            typ.key_field.with_type(plain_type(typ.key_type)),
            typ.item_field.with_type(plain_type(typ.item_type)),
            typ.keys_sorted,
        )
    if pa.types.is_struct(typ):
        return pa.struct([f.with_type(plain_type(f.type)) for f in typ.fields])
    return typ


def decode_dictionaries(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Dictionary-encoded columns (pandas' Categorical, polars' Categorical) as their values, for a
    writer that takes no dictionaries (the Postgres COPY: found from outside, a categorical column
    was refused as having no column type)."""
    if not any(pa.types.is_dictionary(f.type) for f in reader.schema):
        return reader
    schema = pa.schema(
        [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in reader.schema],
        metadata=reader.schema.metadata,
    )
    return pa.RecordBatchReader.from_batches(schema, (batch.cast(schema) for batch in reader))


def nanoseconds_as_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Timestamp, time and duration values in nanoseconds as the text they print as (what pandas'
    Timestamp prints: a fraction of 9 digits when there are nanoseconds, of 6 when only
    microseconds, none when neither; a duration as Python's timedelta prints, its fraction likewise),
    also inside lists, structs, maps and dictionaries. Python's datetime, time and timedelta keep
    microseconds: without pandas, a timestamp[ns] or a duration[ns] made ``to_pylist`` fail, and a
    time64[ns] lost its nanoseconds silently."""
    for index, field in enumerate(batch.schema):
        if _holds_nanoseconds(field.type):
            text = _nanoseconds_as_text(batch.column(index))
            batch = batch.set_column(index, field.with_type(text.type), text)
    return batch


def _in_nanoseconds(typ: pa.DataType) -> bool:
    temporal = pa.types.is_timestamp(typ) or pa.types.is_time64(typ) or pa.types.is_duration(typ)
    return temporal and typ.unit == "ns"


def _holds_nanoseconds(typ: pa.DataType) -> bool:
    if _in_nanoseconds(typ):
        return True
    if pa.types.is_dictionary(typ):
        return _holds_nanoseconds(typ.value_type)
    return any(_holds_nanoseconds(typ.field(i).type) for i in range(typ.num_fields))


def _nanoseconds_as_text(array: pa.Array) -> pa.Array:
    """``array`` with every value in nanoseconds as its text (a string), at any depth."""
    import pyarrow.compute as pc

    typ = array.type
    if not _holds_nanoseconds(typ):
        return array
    if _in_nanoseconds(typ):
        return pa.array(_texts_of_nanoseconds(array), pa.string())
    if pa.types.is_dictionary(typ):
        return _nanoseconds_as_text(array.dictionary_decode())
    mask = array.is_null() if array.null_count else None
    if pa.types.is_struct(typ):
        children = [_nanoseconds_as_text(child) for child in array.flatten()]
        fields = [typ.field(i).with_type(child.type) for i, child in enumerate(children)]
        return pa.StructArray.from_arrays(children, fields=fields, mask=mask)
    if pa.types.is_map(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        # Offsets from 0 over the values this slice uses (from_arrays takes no sliced offsets with a mask).
        first, last = array.offsets[0].as_py(), array.offsets[len(array)].as_py()
        offsets = pc.subtract(array.offsets, first).cast(array.offsets.type)
        if pa.types.is_map(typ):
            keys = _nanoseconds_as_text(array.keys.slice(first, last - first))
            items = _nanoseconds_as_text(array.items.slice(first, last - first))
            return pa.MapArray.from_arrays(offsets, keys, items, mask=mask)
        kind = pa.ListArray if pa.types.is_list(typ) else pa.LargeListArray
        return kind.from_arrays(offsets, _nanoseconds_as_text(array.values.slice(first, last - first)), mask=mask)
    if pa.types.is_fixed_size_list(typ):
        size = typ.list_size  # (flatten() skips null lists: the values of each, null or not)
        values = array.values.slice(array.offset * size, len(array) * size)
        return pa.FixedSizeListArray.from_arrays(_nanoseconds_as_text(values), size, mask=mask)
    return array


def _texts_of_nanoseconds(array: pa.Array) -> list[str | None]:
    typ = array.type
    duration = pa.types.is_duration(typ)
    ns = array.cast(pa.int64()).to_pylist()
    micro: list[Any]
    if duration:
        micro = [None if v is None else dt.timedelta(microseconds=v // 1000) for v in ns]
    else:
        micro_type = pa.timestamp("us", tz=typ.tz) if pa.types.is_timestamp(typ) else pa.time64("us")
        micro = pa.array([None if v is None else v // 1000 for v in ns], pa.int64()).cast(micro_type).to_pylist()
    head = 19 if pa.types.is_timestamp(typ) else 8  # "YYYY-MM-DD HH:MM:SS" or "HH:MM:SS"
    text: list[str | None] = []
    for value, whole in zip(micro, ns, strict=True):
        if value is None:
            text.append(None)
        elif whole % 1000 and duration:
            plain = str(value - dt.timedelta(microseconds=value.microseconds))  # "[D day(s), ]H:MM:SS"
            text.append(f"{plain}.{value.microseconds:06d}{whole % 1000:03d}")
        elif whole % 1000:
            plain = str(value.replace(microsecond=0))
            text.append(f"{plain[:head]}.{value.microsecond:06d}{whole % 1000:03d}{plain[head:]}")
        else:
            text.append(str(value))
    return text


def nanoseconds_refused(batch: pa.RecordBatch, target: pa.Schema, keeps: str) -> SchemaMismatch | None:
    """Why ``batch`` cannot be cast to ``target`` without losing nanoseconds: the first timestamp or
    time value (in a column the cast changes, at any depth) with a part below the microsecond,
    named with its column and its value (a destination that ``keeps`` microseconds). None when no
    such column loses anything."""
    import pyarrow.compute as pc

    for field in target:
        if field.name not in batch.schema.names or batch.schema.field(field.name).type.equals(field.type):
            continue  # a column the cast leaves as it is keeps its nanoseconds
        for leaf in _timestamps_in_nanoseconds(batch.column(field.name)):
            values = leaf.cast(pa.int64())
            lost = pc.fill_null(pc.not_equal(pc.multiply(pc.divide(values, 1000), 1000), values), False)
            if pc.any(lost).as_py():
                index = pc.index(lost, True).as_py()
                # Not str(leaf[index]): without pandas, pyarrow cannot make a Python value of it.
                (shown,) = _texts_of_nanoseconds(leaf.slice(index, 1))
                return SchemaMismatch(
                    f"column {field.name!r} has a value with nanoseconds ({shown}), and {keeps} keeps "
                    "microseconds: round it to microseconds first (nothing was published)"
                )
    return None


def _timestamps_in_nanoseconds(array: pa.Array | pa.ChunkedArray) -> Iterator[pa.Array]:
    """The timestamp and time values in nanoseconds of ``array``, at any depth (lists, structs,
    maps, dictionaries), as flat arrays of their own."""
    typ = array.type
    if not _holds_nanoseconds(typ):
        return
    if isinstance(array, pa.ChunkedArray):  # a table's column
        for chunk in array.chunks:
            yield from _timestamps_in_nanoseconds(chunk)
    elif _in_nanoseconds(typ):
        if not pa.types.is_duration(typ):  # (no destination that keeps microseconds takes a duration)
            yield array
    elif pa.types.is_dictionary(typ):
        yield from _timestamps_in_nanoseconds(array.dictionary)
    elif pa.types.is_map(typ):
        yield from _timestamps_in_nanoseconds(array.keys)
        yield from _timestamps_in_nanoseconds(array.items)
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        # All the values, as a cast takes them (of a sliced list array too: its cast fails on one
        # outside the slice, and the refusal names that value).
        yield from _timestamps_in_nanoseconds(array.values)
    elif pa.types.is_struct(typ):
        for child in array.flatten():
            yield from _timestamps_in_nanoseconds(child)


def as_microseconds(reader: pa.RecordBatchReader, keeps: str) -> pa.RecordBatchReader:
    """Timestamp and time columns in nanoseconds (pandas' datetime64[ns]) as microseconds, for a
    destination that keeps no finer: each value checked, and one with a part below the microsecond
    refused, naming it (found from outside: Postgres dropped it silently)."""

    def micro(typ: pa.DataType) -> pa.DataType:
        if pa.types.is_timestamp(typ) and typ.unit == "ns":
            return pa.timestamp("us", tz=typ.tz)
        if pa.types.is_time64(typ) and typ.unit == "ns":
            return pa.time64("us")
        return typ

    schema = pa.schema([f.with_type(micro(f.type)) for f in reader.schema], metadata=reader.schema.metadata)
    if schema.equals(reader.schema):
        return reader

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            refused = nanoseconds_refused(batch, schema, keeps)
            if refused is not None:
                raise refused
            yield batch.cast(schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def conform(reader: pa.RecordBatchReader, schema: pa.Schema, *, source: str = "input") -> pa.RecordBatchReader:
    """Select and cast the reader's columns to ``schema``, batch by batch.

    A missing column is reported before any batch is read; a value that does not cast is reported
    with its column and the first offending value.
    """
    have = set(reader.schema.names)
    missing = [f.name for f in schema if f.name not in have]
    if missing:
        raise SchemaMismatch(f"{source}: missing column(s) {', '.join(repr(m) for m in missing)}")

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            columns = []
            for field in schema:
                column = batch.column(field.name)
                if column.type != field.type:
                    try:
                        column = column.cast(field.type)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise SchemaMismatch(
                            f"{source}: column {field.name!r} does not fit type {field.type}: {exc}"
                        ) from None
                if not field.nullable and column.null_count:
                    raise SchemaMismatch(f"{source}: column {field.name!r} has nulls but is declared not null")
                columns.append(column)
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def require_rows(reader: pa.RecordBatchReader, *, source: str = "input") -> pa.RecordBatchReader:
    """Refuse an input with no rows before anything is staged (an empty publish is almost always a
    broken upstream, and publishing it would mark the run DONE with nothing in it)."""
    it = iter(reader)
    head: list[pa.RecordBatch] = []
    for batch in it:
        head.append(batch)
        if batch.num_rows:
            break
    else:
        raise InputError(f"{source}: the input has no rows; nothing to publish")

    def chained() -> Iterator[pa.RecordBatch]:
        yield from head
        yield from it

    return pa.RecordBatchReader.from_batches(reader.schema, chained())


def schema_to_json(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def refuse_nested_for_csv(schema: pa.Schema, where: str) -> None:
    """CSV holds flat values only: a struct, list or map column (also inside a dictionary) is refused
    up front, naming it, and so is an interval, which pyarrow cannot write as text (found from
    outside: both failed with a raw Arrow error, exit 1, after the lock)."""
    for field in schema:
        typ = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if pa.types.is_nested(typ) or pa.types.is_interval(typ):
            what = "an interval" if pa.types.is_interval(typ) else "nested values"
            raise SchemaMismatch(
                f"column {field.name!r} is {field.type}: a CSV file cannot hold {what}; publish to a "
                f'Parquet sink (format = "parquet") or convert it first ({where})'
            )


# Types that hold the same values as another, as ``str(type)`` prints them: a run is not refused as
# drift for the representation its producer chose. Found from outside: pandas 3 gives every string
# column as large_string and a categorical one as a dictionary, so a run published from a DataFrame
# after one from a CSV file was refused ("column 'c' is large_string, was string"). A name followed by
# ":" is a struct field's, not a type.
_SAME_VALUES = re.compile(
    r"\b(large_string|string_view|large_binary|binary_view|large_list_view|large_list|list_view)\b(?!:)"
)
_SAME_VALUES_AS = {
    "large_string": "string",
    "string_view": "string",
    "large_binary": "binary",
    "binary_view": "binary",
    "large_list_view": "list",
    "large_list": "list",
    "list_view": "list",
}
_DICTIONARY = "dictionary<values="


def logical_type_name(name: str) -> str:
    """``name`` (a type as ``str(type)`` prints it, e.g. in a run's manifest) with every type that
    holds the same values as a plainer one written as that one: large and view strings, binaries and
    lists as the plain ones, a dictionary as its values, date64 as date32."""
    while (at := name.find(_DICTIONARY)) >= 0:
        depth, i, values_end = 0, at + len(_DICTIONARY), -1
        while i < len(name):
            ch = name[i]
            if ch == "<":
                depth += 1
            elif ch == ">":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and values_end < 0 and name.startswith(", indices=", i):
                values_end = i
            i += 1
        if values_end < 0 or i >= len(name):
            break  # not a form this function knows: compared as it is
        name = name[:at] + name[at + len(_DICTIONARY) : values_end] + name[i + 1 :]
    name = name.replace("date64[ms]", "date32[day]")
    return _SAME_VALUES.sub(lambda m: _SAME_VALUES_AS[m.group(1)], name)


def refuse_schema_drift(schema: pa.Schema, earlier: list[dict[str, Any]] | None, where: str) -> None:
    """Refuse records whose columns or types differ from the dataset's most recent published run
    (``earlier``, as in its manifest; None when there is none). Nullability may differ, and so may
    the representation of the same values (``logical_type_name``)."""
    if not earlier:
        return
    had = {c.get("name"): str(c.get("type")) for c in earlier}
    has = {f.name: str(f.type) for f in schema}
    problems = [f"column {n!r} is new" for n in has if n not in had]
    problems += [f"column {n!r} is missing" for n in had if n not in has]
    problems += [
        f"column {n!r} is {has[n]}, was {had[n]}"
        for n in has
        if n in had and logical_type_name(has[n]) != logical_type_name(had[n])
    ]
    if problems:
        raise SchemaMismatch(
            f"the data does not have the schema of {where}: {'; '.join(problems)} (set allow_schema_change = true "
            "on the sink to publish it anyway)"
        )


class IpcHasher:
    """sha256 of the Arrow IPC stream of a run's batches: a content checksum that does not depend
    on the sink's storage format (used where the sink has no file of its own to hash)."""

    def __init__(self, schema: pa.Schema) -> None:
        import hashlib

        self.digest = hashlib.sha256()
        self._writer = pa.ipc.new_stream(self, schema)

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        return view.nbytes

    def flush(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return False

    def add(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def hexdigest(self) -> str:
        self._writer.close()
        return self.digest.hexdigest()


def rechunk(reader: pa.RecordBatchReader, rows: int, piece: int = PARQUET_BATCH_ROWS) -> Iterator[pa.Table]:
    """The stream as tables of exactly ``rows`` rows (the last may be shorter), each made of chunks
    of ``piece`` rows (a group's last chunk holds what is left of it when ``piece`` does not divide
    ``rows``): the same layout whatever the input's batching, so a Parquet writer given these tables
    writes the same bytes (its page boundaries follow the chunks). Only a chunk that straddles two
    input batches is copied; the rest are slices (the whole group is never copied into one buffer:
    measured 16 MB less of Arrow memory at 262,144-row groups)."""
    group: list[pa.RecordBatch] = []  # finished chunks of the current group
    partial: list[pa.RecordBatch] = []  # slices of the chunk being filled
    in_group = in_chunk = 0
    for batch in reader:
        while batch.num_rows:
            want = min(piece, rows - in_group)  # this chunk's size
            take = min(want - in_chunk, batch.num_rows)
            partial.append(batch.slice(0, take))
            in_chunk += take
            batch = batch.slice(take)
            if in_chunk == want:
                group.append(_one_chunk(partial))
                partial, in_chunk = [], 0
                in_group += want
                if in_group == rows:
                    yield pa.Table.from_batches(group)
                    group, in_group = [], 0
    if partial:
        group.append(_one_chunk(partial))
    if group:
        yield pa.Table.from_batches(group)


def release_freed_memory() -> None:
    """Give the pages of freed Arrow buffers back to the system now (jemalloc's purge, or
    ``malloc_trim`` under the system allocator). Called by the Parquet writers once a row group is
    written and dropped. Measured when it came (pyarrow of the day, jemalloc with an arena per
    thread): Parquet file sink, 10M input rows, 239 -> 196 MB in the same time. Measured again in the
    eleventh session (pyarrow 26, one arena): without it the file sink peaked at 155-156 MB against
    155-160, Iceberg at 192-193 against 190-192 (3 alternating rounds): jemalloc's purge no longer
    gives much back here (docs/performance.md), ``malloc_trim`` under the system allocator still
    does. Once per row group costs nothing measurable; after every free (``dirty_decay_ms:0``) made
    the publish 60% slower."""
    pa.default_memory_pool().release_unused()


def _one_chunk(slices: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(slices) == 1:
        return slices[0]
    return pa.Table.from_batches(slices).combine_chunks().to_batches()[0]
