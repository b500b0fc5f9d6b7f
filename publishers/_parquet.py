"""Byte-level concatenation of Parquet files written alike, as parquet-mr's
``ParquetFileWriter.appendFile`` does: the parts' column chunks are copied as they are (no decoding,
no re-compression), and one footer lists every part's row groups with their offsets shifted to where
the bytes now sit.

A Parquet file is ``PAR1``, column chunks, a footer (a Thrift ``FileMetaData`` in the compact
protocol), the footer's length (4 bytes, little endian) and ``PAR1``. Nothing inside a column chunk
refers to an absolute position: only the footer does (``RowGroup.file_offset``,
``ColumnChunk.file_offset``, ``ColumnMetaData.data_page_offset``, ``index_page_offset``,
``dictionary_page_offset``). So a file whose parts were written with one schema is the parts' bytes
between their magic and their footer, one after the other, and a footer built from theirs.

Only what this module understands is merged: a part with anything that also points into the file
(a page index, a bloom filter, encrypted metadata, column chunks in another file) or a field the
Parquet spec this was written against does not define, or parts whose schemas, key-value metadata
(pyarrow's ``ARROW:schema``) or writer differ, are :class:`NotConcatenable` and the caller
re-encodes instead. The Thrift codec keeps every field it decodes, known or not, and encodes
canonically (as Apache Thrift's C++ library, which pyarrow uses): decoding a pyarrow footer and
encoding it again gives the same bytes (tests/unit/test_parquet_concat.py).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ._fs import ThreadedWriter

MAGIC = b"PAR1"
_TAIL = 8  # footer length (4) + magic (4)

# The compact protocol's type codes.
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)


class NotConcatenable(Exception):
    """These files cannot be joined byte by byte (the reason says why); re-encode them instead."""


@dataclass
class TList:
    etype: int
    items: list[Any]


@dataclass
class TMap:
    ktype: int
    vtype: int
    items: list[tuple[Any, Any]]


@dataclass
class TStruct:
    """A Thrift struct as it was decoded: ``[field id, type, value]`` in wire order."""

    fields: list[list[Any]] = field(default_factory=list)

    def ids(self) -> set[int]:
        return {f[0] for f in self.fields}

    def get(self, fid: int, default: Any = None) -> Any:
        return next((f[2] for f in self.fields if f[0] == fid), default)

    def set(self, fid: int, value: Any) -> None:
        for f in self.fields:
            if f[0] == fid:
                f[2] = value
                return
        raise KeyError(fid)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise NotConcatenable("the Parquet footer ends early")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise NotConcatenable("the Parquet footer ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise NotConcatenable("a varint in the Parquet footer is too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, ttype: int, depth: int) -> Any:
        if depth > 64:
            raise NotConcatenable("the Parquet footer nests too deep")
        if ttype in (_TRUE, _FALSE):  # an element of a container: one byte
            return self.byte() == _TRUE
        if ttype == _BYTE:
            return struct.unpack("<b", self.take(1))[0]
        if ttype in (_I16, _I32, _I64):
            return self.zigzag()
        if ttype == _DOUBLE:
            return struct.unpack("<d", self.take(8))[0]
        if ttype == _BINARY:
            return self.take(self.varint())
        if ttype in (_LIST, _SET):
            head = self.byte()
            size, etype = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return TList(etype, [self.value(etype, depth + 1) for _ in range(size)])
        if ttype == _MAP:
            size = self.varint()
            if not size:
                return TMap(0, 0, [])
            kv = self.byte()
            ktype, vtype = kv >> 4, kv & 0x0F
            pairs = [(self.value(ktype, depth + 1), self.value(vtype, depth + 1)) for _ in range(size)]
            return TMap(ktype, vtype, pairs)
        if ttype == _STRUCT:
            return self.struct(depth + 1)
        raise NotConcatenable(f"unknown Thrift type {ttype} in the Parquet footer")

    def struct(self, depth: int = 0) -> TStruct:
        out, last = TStruct(), 0
        while True:
            head = self.byte()
            if head == 0:
                return out
            ttype, delta = head & 0x0F, head >> 4
            fid = last + delta if delta else self.zigzag()
            last = fid
            value = ttype == _TRUE if ttype in (_TRUE, _FALSE) else self.value(ttype, depth)
            out.fields.append([fid, ttype, value])


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while n > 0x7F:
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7
        self.out.append(n)

    def zigzag(self, n: int, bits: int) -> None:
        self.varint(((n << 1) ^ (n >> (bits - 1))) & ((1 << bits) - 1))

    def value(self, ttype: int, value: Any) -> None:
        if ttype in (_TRUE, _FALSE):
            self.out.append(_TRUE if value else _FALSE)
        elif ttype == _BYTE:
            self.out += struct.pack("<b", value)
        elif ttype in (_I16, _I32, _I64):
            self.zigzag(value, {_I16: 16, _I32: 32, _I64: 64}[ttype])
        elif ttype == _DOUBLE:
            self.out += struct.pack("<d", value)
        elif ttype == _BINARY:
            self.varint(len(value))
            self.out += value
        elif ttype in (_LIST, _SET):
            size = len(value.items)
            if size < 15:
                self.out.append(size << 4 | value.etype)
            else:
                self.out.append(0xF0 | value.etype)
                self.varint(size)
            for item in value.items:
                self.value(value.etype, item)
        elif ttype == _MAP:
            self.varint(len(value.items))
            if value.items:
                self.out.append(value.ktype << 4 | value.vtype)
                for k, v in value.items:
                    self.value(value.ktype, k)
                    self.value(value.vtype, v)
        elif ttype == _STRUCT:
            self.struct(value)
        else:
            raise ValueError(f"unknown Thrift type {ttype}")

    def struct(self, value: TStruct) -> None:
        last = 0
        for fid, ttype, v in value.fields:
            wire = (_TRUE if v else _FALSE) if ttype in (_TRUE, _FALSE) else ttype
            if last < fid <= last + 15:
                self.out.append((fid - last) << 4 | wire)
            else:
                self.out.append(wire)
                self.zigzag(fid, 16)
            last = fid
            if ttype not in (_TRUE, _FALSE):
                self.value(ttype, v)
        self.out.append(0)


def decode(data: bytes) -> TStruct:
    """A compact-protocol struct (a whole Parquet footer) from its bytes."""
    reader = _Reader(data)
    out = reader.struct()
    if reader.pos != len(data):
        raise NotConcatenable(f"{len(data) - reader.pos} bytes after the Parquet footer's struct")
    return out


def encode(value: TStruct) -> bytes:
    writer = _Writer()
    writer.struct(value)
    return bytes(writer.out)


# What each struct of the footer may hold to be merged (parquet.thrift, format 2.10). Absent here:
# FileMetaData 8-9 (encryption), ColumnChunk 1 (another file), 4-7 (page index offsets) and 8-9
# (encryption), ColumnMetaData 14-15 (bloom filter): each points somewhere this module does not move.
_FILE_FIELDS = {1, 2, 3, 4, 5, 6, 7}
_ROW_GROUP_FIELDS = {1, 2, 3, 4, 5, 6, 7}
_CHUNK_FIELDS = {2, 3}
_COLUMN_FIELDS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17}
_SAME_IN_EVERY_PART = (1, 2, 5, 6, 7)  # version, schema, key-value metadata, created_by, column orders


@dataclass
class Footer:
    """A part's footer: its metadata and where its column chunks end (where the footer starts)."""

    meta: TStruct
    raw: bytes  # the last bytes of the file: the footer, its length and the magic
    data_end: int


def _data_end(where: object, size: int, head: bytes, tail: bytes) -> tuple[int, int]:
    """The footer's length and where the column chunks end, from a Parquet file's size, first 4
    bytes and last 8."""
    if size < len(MAGIC) + _TAIL or head != MAGIC:
        raise NotConcatenable(f"{where} is not a Parquet file ({size} bytes, starting {head!r})")
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != MAGIC:
        raise NotConcatenable(f"{where} does not end in {MAGIC!r} (an encrypted footer, or not Parquet)")
    data_end = size - _TAIL - length
    if data_end < len(MAGIC):
        raise NotConcatenable(f"{where}'s footer length {length} is larger than the file")
    return length, data_end


def read_footer(path: Path) -> Footer:
    """The footer of the Parquet file at ``path``, checked to be one this module can merge."""
    with open(path, "rb") as fh:
        head = fh.read(len(MAGIC))
        size = fh.seek(0, 2)
        fh.seek(max(size - _TAIL, 0))
        length, data_end = _data_end(path, size, head, fh.read(_TAIL))
        fh.seek(data_end)
        raw = fh.read(length + _TAIL)
    meta = decode(raw[:length])
    _check(meta, path, data_end)
    return Footer(meta, raw, data_end)


def _only(value: TStruct, allowed: set[int], what: str, path: Path) -> None:
    extra = value.ids() - allowed
    if extra:
        raise NotConcatenable(f"{path}: {what} has fields {sorted(extra)} this merge does not move")


def _check(meta: TStruct, path: Path, data_end: int, *, unset_ok: bool = False) -> None:
    """Only fields this module moves, every offset within the column chunks (``unset_ok``: or 0,
    which pyarrow writes for the pages of a row group without rows)."""
    _only(meta, _FILE_FIELDS, "the file metadata", path)

    def within(value: Any, name: str) -> None:
        if value is None or (unset_ok and value == 0):
            return
        if not (isinstance(value, int) and len(MAGIC) <= value <= data_end):
            raise NotConcatenable(f"{path}: {name} {value!r} is not within its column chunks [4, {data_end}]")

    if not isinstance(meta.get(3, 0), int):
        raise NotConcatenable(f"{path}: num_rows is not an integer")
    for group in _structs(meta.get(4), path):
        _only(group, _ROW_GROUP_FIELDS, "a row group", path)
        within(group.get(5), "a row group's file_offset")
        for chunk in _structs(group.get(1), path):
            _only(chunk, _CHUNK_FIELDS, "a column chunk", path)
            if chunk.get(2) != 0:  # 0: not set (parquet-mr); else where the chunk ends
                within(chunk.get(2), "a column chunk's file_offset")
            column = chunk.get(3)
            if not isinstance(column, TStruct):
                raise NotConcatenable(f"{path}: a column chunk has no metadata in the footer")
            _only(column, _COLUMN_FIELDS, "a column's metadata", path)
            for fid, name in ((9, "data_page_offset"), (10, "index_page_offset"), (11, "dictionary_page_offset")):
                within(column.get(fid), name)


def _structs(value: Any, path: Path) -> list[TStruct]:
    if value is None:
        return []
    if not isinstance(value, TList) or not all(isinstance(v, TStruct) for v in value.items):
        raise NotConcatenable(f"{path}: the footer has a list of something else where structs belong")
    return value.items


def _items(value: Any) -> list[Any]:
    return value.items if isinstance(value, TList) else []


def merged_footer(footers: Sequence[Footer], starts: Sequence[int]) -> bytes:
    """The footer of the file that holds each part's column chunks from ``starts[i]`` on (where its
    byte 4 now sits), with its length and the magic: what follows the chunks."""
    first = footers[0].meta
    fields = {f[0]: f for f in first.fields}
    for footer in footers[1:]:
        other = {f[0]: f for f in footer.meta.fields}
        for fid in _SAME_IN_EVERY_PART:
            if encode(TStruct([fields[fid]] if fid in fields else [])) != encode(
                TStruct([other[fid]] if fid in other else [])
            ):
                raise NotConcatenable(f"the parts differ in their footer's field {fid} (schema, metadata or writer)")
    groups: list[TStruct] = []
    for footer, start in zip(footers, starts, strict=True):
        shift = start - len(MAGIC)
        for group in _items(footer.meta.get(4)):
            g = _copy(group)
            if 5 in g.ids():
                g.set(5, g.get(5) + shift)
            if 7 in g.ids():
                g.set(7, len(groups))
            for chunk in _items(g.get(1)):
                if chunk.get(2):
                    chunk.set(2, chunk.get(2) + shift)
                column = chunk.get(3)
                for fid in (9, 10, 11):
                    if fid in column.ids():
                        column.set(fid, column.get(fid) + shift)
            groups.append(g)
    if len(groups) > 32_767 and any(7 in g.ids() for g in groups):
        raise NotConcatenable(f"{len(groups)} row groups: more than a row group's ordinal (i16) can number")
    meta = _copy(first)
    meta.set(3, sum(f.meta.get(3, 0) for f in footers))
    if 4 in meta.ids():
        meta.set(4, TList(_STRUCT, groups))
    body = encode(meta)
    return body + len(body).to_bytes(4, "little") + MAGIC


def _copy(value: Any) -> Any:
    if isinstance(value, TStruct):
        return TStruct([[f[0], f[1], _copy(f[2])] for f in value.fields])
    if isinstance(value, TList):
        return TList(value.etype, [_copy(v) for v in value.items])
    return value


class _Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> Any: ...


@dataclass
class Concat:
    """Parquet files checked to be joinable, and the footer of the file they make."""

    paths: Sequence[Path]
    footers: list[Footer]
    footer: bytes  # the merged footer, its length and the magic

    @property
    def rows(self) -> int:
        return int(sum(f.meta.get(3, 0) for f in self.footers))

    def write(self, sink: _Sink, check: Callable[[int, Path, str, int], None], chunk: int = 4 << 20) -> int:
        """Write the files as one into ``sink``; the rows. Each part's bytes are hashed as they are
        copied, and ``check(i, path, sha256 hex, size)`` is called once a part is read; a part whose
        bytes are not those planned from (it changed since) is a ValueError."""
        sink.write(MAGIC)
        for i, (path, footer) in enumerate(zip(self.paths, self.footers, strict=True)):
            digest, size, tail = hashlib.sha256(), 0, bytearray()
            with open(path, "rb", buffering=0) as fh:
                while block := fh.read(chunk):
                    if size == 0 and block[: len(MAGIC)] != MAGIC:
                        raise ValueError(f"{path} does not start with {MAGIC!r}")
                    digest.update(block)
                    lo, hi = size, size + len(block)
                    size = hi
                    # bytes [4, data_end) go to the sink; [data_end, end) are the footer, compared below
                    a, b = max(lo, len(MAGIC)), min(hi, footer.data_end)
                    if a < b:
                        sink.write(memoryview(block)[a - lo : b - lo])
                    if hi > footer.data_end:
                        tail += block[max(footer.data_end, lo) - lo :]
            check(i, path, digest.hexdigest(), size)
            if bytes(tail) != footer.raw:
                raise ValueError(f"{path} changed while it was being copied")
        sink.write(self.footer)
        return self.rows


def plan(paths: Sequence[Path]) -> Concat:
    """Read and check every part's footer and build the merged one; :class:`NotConcatenable` when
    the parts cannot be joined byte by byte (before anything is written anywhere)."""
    footers = []
    for path in paths:
        footers.append(read_footer(path))
    starts, at = [], len(MAGIC)
    for footer in footers:
        starts.append(at)
        at += footer.data_end - len(MAGIC)
    joined = Concat(paths, footers, merged_footer(footers, starts))
    _parsed_by_pyarrow(joined)
    return joined


def _parsed_by_pyarrow(joined: Concat) -> None:
    """The merged footer as Parquet's own reader parses it (``_unparsed``). A footer this module
    decoded but the reader would not (a damaged part) is refused here, not published."""
    groups = sum(len(_items(f.meta.get(4))) for f in joined.footers)
    problem = _unparsed(joined.footer, joined.rows, groups)
    if problem:
        raise NotConcatenable(f"the joined footer {problem}")


def _unparsed(footer: bytes, rows: int, groups: int) -> str | None:
    """What is wrong with ``footer`` (with its length and magic) as Parquet's own reader (pyarrow's
    C++ Thrift) parses it: every field of the type the spec gives, ``rows`` rows in ``groups`` row
    groups; None when nothing is."""
    import io

    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(io.BytesIO(MAGIC + footer))
    except Exception as exc:  # pyarrow raises OSError or ArrowException; either is a refusal
        return f"does not parse: {exc}"
    if (meta.num_rows, meta.num_row_groups) != (rows, groups):
        return f"reads as {meta.num_rows} rows in {meta.num_row_groups} row groups, not {rows} in {groups}"
    return None


# -- writing: each row group's columns encoded side by side -----------------------------------------

_MAX_ORDINAL = 32_767  # RowGroup.ordinal is an i16
_DEFAULT_GROUP_ROWS = 1024 * 1024  # pq.ParquetWriter.write_table's row_group_size=None
_MAX_GROUP_ROWS = 64 * 1024 * 1024  # ... and its cap


def _tail(data: Any, where: str) -> tuple[TStruct, int]:
    """The decoded footer of a whole Parquet file in memory, and where its column chunks end."""
    view = memoryview(data)
    _, data_end = _data_end(where, len(view), bytes(view[: len(MAGIC)]), bytes(view[-_TAIL:]))
    meta = decode(bytes(view[data_end : len(view) - _TAIL]))
    _check(meta, Path(where), data_end, unset_ok=True)
    return meta, data_end


class ParallelWriter(ThreadedWriter):
    """``pq.ParquetWriter(sink, schema, compression=...)`` with the columns of each row group encoded
    side by side on threads: the same bytes (tests/unit/test_parquet_parallel.py, any types, nesting,
    codecs and group sizes), in the time of the slowest column's share instead of every column's.
    Parquet's column chunks do not depend on each other: each top-level column of a group is
    written as a one-column file of its own (pyarrow releases the GIL while it encodes), and its
    column chunks are copied into the sink in schema order, with their offsets in the footer
    shifted to where they now sit (the footer is pyarrow's own for the schema, with the row groups
    set). Memory: a group's encoded columns, held until the group is written; the group itself is
    the caller's, as with ``ParquetWriter``.

    Before the footer is written it is parsed by pyarrow's reader (rows and row groups checked); a
    column file with anything this module does not move (a page index, a bloom filter: only
    options the callers do not set) is written by one ``ParquetWriter`` for that group instead.
    Use as a context manager (``ThreadedWriter``): leaving normally writes the footer (``close``),
    leaving by an exception writes nothing more (``abandon``). Waits poll."""

    def __init__(self, sink: _Sink, schema: Any, *, compression: str | None, workers: int, **options: Any) -> None:
        import concurrent.futures
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa, self._pq = pa, pq
        self._sink, self._schema, self._compression = sink, schema, compression
        self._options = options  # more of pq.ParquetWriter's options (page-level ones: see _tail)
        empty = io.BytesIO()
        pq.ParquetWriter(empty, schema, compression=compression, **options).close()
        self._template, _ = _tail(empty.getvalue(), "the Parquet footer of the schema")
        self._fields = [pa.schema([field]) for field in schema]
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="parquet-encode")
        self._groups: list[TStruct] = []
        self._rows = 0
        self._pos = len(MAGIC)
        sink.write(MAGIC)

    def _encode(self, table: Any, schema: Any) -> Any:
        out = self._pa.BufferOutputStream()
        with self._pq.ParquetWriter(out, schema, compression=self._compression, **self._options) as writer:
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
        return out.getvalue()

    @staticmethod
    def _part(data: Any, where: str) -> tuple[Any, TStruct, int]:
        """A one-row-group file's bytes, its row group and where its column chunks end."""
        meta, data_end = _tail(data, where)
        (one,) = _items(meta.get(4))
        return data, one, data_end

    def write_table(self, table: Any, row_group_size: int | None = None) -> None:
        if not table.schema.equals(self._schema, check_metadata=False):
            raise ValueError(
                "Table schema does not match schema used to create file: "
                f"\ntable:\n{table.schema} vs. \nfile:\n{self._schema}"
            )
        size = min(row_group_size or _DEFAULT_GROUP_ROWS, _MAX_GROUP_ROWS)
        for start in range(0, max(table.num_rows, 1), size):
            self._write_group(table.slice(start, size))

    def _write_group(self, group: Any) -> None:
        futures = [self._pool.submit(self._encode, group.select([i]), schema) for i, schema in enumerate(self._fields)]
        files = [self.wait(f) for f in futures]
        try:
            parts = [
                self._part(data, f"column {field.name!r} of row group {len(self._groups)}")
                for data, field in zip(files, self._schema, strict=True)
            ]
        except NotConcatenable:
            whole = self._encode(group, self._schema)
            parts = [self._part(whole, f"row group {len(self._groups)}")]
        start = self._pos
        chunks: list[TStruct] = []
        for data, one, data_end in parts:
            shift = self._pos - len(MAGIC)
            for chunk in _items(one.get(1)):
                chunk = _copy(chunk)
                if chunk.get(2):  # 0: not set
                    chunk.set(2, chunk.get(2) + shift)
                column = chunk.get(3)
                for fid in (9, 10, 11):
                    if column.get(fid):  # 0: no such page (a column without rows)
                        column.set(fid, column.get(fid) + shift)
                chunks.append(chunk)
            self._sink.write(memoryview(data)[len(MAGIC) : data_end])
            self._pos += data_end - len(MAGIC)
        first = parts[0][1]
        row_group = _copy(first)
        row_group.set(1, TList(_STRUCT, chunks))
        row_group.set(2, sum(one.get(2) for _, one, _ in parts))
        if first.get(5):  # where the group's first page is; 0 when its first column has none
            row_group.set(5, first.get(5) + start - len(MAGIC))
        if 6 in row_group.ids():
            row_group.set(6, sum(one.get(6) for _, one, _ in parts))
        if 7 in row_group.ids():
            if len(self._groups) > _MAX_ORDINAL:
                row_group.fields = [f for f in row_group.fields if f[0] != 7]
            else:
                row_group.set(7, len(self._groups))
        self._groups.append(row_group)
        self._rows += group.num_rows

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        meta = _copy(self._template)
        meta.set(3, self._rows)
        meta.set(4, TList(_STRUCT, self._groups))
        body = encode(meta)
        footer = body + len(body).to_bytes(4, "little") + MAGIC
        problem = _unparsed(footer, self._rows, len(self._groups))
        if problem:
            raise ValueError(f"the Parquet footer written {problem}")
        self._sink.write(footer)

    def abandon(self) -> None:
        """After an error: nothing more is written; encodings under way finish on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)


# A column's dictionary page is capped at 256 KiB (pyarrow's default: 1 MiB); past it the column
# falls back to plain encoding. The encoder's hash table grows with the dictionary: writing a
# 262,144-row group of random int64 amounts took 31 MB of Arrow memory for one column at 1 MiB,
# 5 MB at 256 KiB, in 14 ms instead of 50 ms, and the column came out smaller (973 KB, not 1,152):
# a dictionary that big was not paying for itself (docs/performance.md, tenth session).
DICTIONARY_PAGE_BYTES = 256 << 10


def parquet_writer(sink: _Sink, schema: Any, *, compression: str | None, workers: int | None = None) -> Any:
    """The Parquet writer the sinks use: a :class:`ParallelWriter` where it helps (two or more
    columns, two or more CPUs), else ``pq.ParquetWriter``; both write the same bytes, with
    dictionary pages of at most ``DICTIONARY_PAGE_BYTES``."""
    import os

    import pyarrow.parquet as pq

    options = {"dictionary_pagesize_limit": DICTIONARY_PAGE_BYTES}
    count = workers if workers is not None else min(4, os.cpu_count() or 1)
    if count > 1 and len(schema) > 1:
        try:
            return ParallelWriter(sink, schema, compression=compression, workers=count, **options)
        except NotConcatenable:
            pass
    return pq.ParquetWriter(sink, schema, compression=compression, **options)
