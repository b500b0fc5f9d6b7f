"""Durable filesystem primitives: fsync, no-clobber rename, atomic small-file writes.

The file sink's guarantees rest on three kernel facts: rename(2) is atomic to other observers, a
rename is durable only once its directory is fsync'd, and RENAME_NOREPLACE (or link(2)) refuses to
overwrite an existing name, which is what makes "two attempts race, exactly one publishes" hold
without trusting the run lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import queue
import threading
from pathlib import Path
from typing import Any

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
    _renameat2 = getattr(_libc, "renameat2", None)
except OSError:  # pragma: no cover - non-glibc platforms
    _libc, _renameat2 = None, None

if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` durable (a rename is not durable until this)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` atomically, raising FileExistsError if ``dst`` exists.

    Uses renameat2(RENAME_NOREPLACE) where the kernel and filesystem support it. Elsewhere falls back
    to link(2) + unlink(2): link is just as atomic and just as refusing, but a crash between the two
    calls leaves the staged name as a second link to the published inode; the diagnostic reports
    that leftover as an orphan, and removing it never touches the published name.
    """
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(src))
    os.link(src, dst)  # raises FileExistsError when dst exists
    os.unlink(src)


def write_durable(path: Path, data: bytes, *, exclusive: bool = True) -> None:
    """Write ``data`` to ``path`` and fsync it. ``exclusive`` refuses to reuse an existing name."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_json_noreplace(tmp: Path, dst: Path, document: dict[str, Any] | None) -> None:
    """Write a JSON document to ``tmp`` durably, then move it to ``dst`` without clobbering
    (``document`` None: ``tmp`` is written already).

    Readers see either no ``dst`` or the whole document, never a partial one.
    """
    if document is not None:
        data = json_bytes(document)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a leftover of this same attempt (it never reuses names otherwise)
        write_durable(tmp, data)
    rename_noreplace(tmp, dst)
    fsync_dir(dst.parent)
    if tmp.parent != dst.parent:
        fsync_dir(tmp.parent)


def json_bytes(document: dict[str, Any]) -> bytes:
    """The one JSON encoding used for manifests: stable key order, so re-runs compare cleanly."""
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def read_json(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return doc


def sha256_file(path: Path, chunk: int = 4 << 20) -> tuple[str, int]:
    """Return (hex sha256, size) of the file at ``path``, reading in bounded chunks."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


class ThreadedWriter:
    """A writer that encodes on worker threads (``_arrow.CsvWriter``, ``_parquet.ParallelWriter``).
    Used as a context manager, like ``pq.ParquetWriter``: leaving the block normally writes what is
    still to come (``close``); leaving it by an exception writes nothing more (``abandon``)."""

    _POLL = 0.1

    def __enter__(self) -> Any:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()

    def close(self) -> None:
        raise NotImplementedError

    def abandon(self) -> None:
        raise NotImplementedError

    @classmethod
    def wait(cls, future: Any) -> Any:
        """The future's result, waited for in short polls, like ``BackgroundSha256``'s waits: a
        signal's exception in the middle of a wait on a condition variable must not leave the
        caller waiting for a wake-up that was lost."""
        while True:
            try:
                return future.result(timeout=cls._POLL)
            except TimeoutError:
                continue


class WriteOnlySink:
    """What pyarrow's writers need of a Python file object, for sinks that only count and pass
    bytes on: a forward-only stream whose ``close`` is left to its owner (who fsyncs or completes
    an upload first)."""

    size = 0
    closed = False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class BackgroundSha256:
    """sha256 on a second thread (hashlib releases the GIL for large buffers): the caller goes on
    encoding the next batch while the bytes it already produced are hashed, instead of adding the
    hash to its own time. The queue is bounded, so memory stays bounded if hashing falls behind.
    Chunks must not change after update() (pass bytes, not a buffer someone reuses)."""

    def __init__(self, depth: int = 8) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._hash_loop, name="sha256", daemon=True)
        self._thread.start()
        self._finished = False

    # Every wait polls (0.1 s): a signal's exception raised in the main thread in the middle of a
    # queue operation can leave the queue's condition variables with a lost wake-up (threading's
    # primitives are not safe against such exceptions). Found under load: SIGTERM during staging
    # hung the publish for good, the hashing thread waiting on a queue that held its end mark.
    _POLL = 0.1

    def _hash_loop(self) -> None:
        while True:
            try:
                chunk = self._queue.get(timeout=self._POLL)
            except queue.Empty:
                continue
            if chunk is None:
                return
            self._digest.update(chunk)

    def _put(self, item: bytes | None) -> None:
        while True:
            try:
                self._queue.put(item, timeout=self._POLL)
                return
            except queue.Full:
                continue

    def update(self, chunk: bytes) -> None:
        self._put(chunk)

    def hexdigest(self) -> str:
        """Wait for the hasher and return the hex digest (also stops the thread on error paths).

        A signal's exception (Terminated) can land anywhere in here; the error path then calls this
        again. So the end mark counts as sent only once it is queued (a second mark after an
        interrupted one is harmless: the thread stops at the first), and the join is always retried."""
        if not self._finished:
            self._put(None)
            self._finished = True
        self._thread.join()
        return self._digest.hexdigest()


class HashingWriter(WriteOnlySink):
    """A file-like sink for pyarrow writers that writes, hashes (BackgroundSha256) and counts the
    bytes as they pass, instead of re-reading the whole staged file before commit."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self._hasher = BackgroundSha256()

    def write(self, data: Any) -> int:
        # pyarrow reuses the buffer it hands us once write() returns, so the hasher gets a copy
        # (found by the contract suite: hashing the live buffer produced wrong checksums).
        chunk = bytes(data)
        self._fh.write(chunk)
        self._hasher.update(chunk)
        self.size += len(chunk)
        return len(chunk)

    def finish(self) -> str:
        """Wait for the hasher and return the hex digest (also stops the thread on error paths)."""
        return self._hasher.hexdigest()

    def flush(self) -> None:
        self._fh.flush()
