"""The S3 sink: the run's data as objects under an attempt's own prefix, published by ONE
conditional write of a manifest (``If-None-Match: *``), which only one attempt can win.

Layout (``<base>`` = ``s3://<bucket>/<prefix>/<dataset>``)::

    <base>/_attempts/<run_date>/<attempt>/part-00000.<csv|parquet>   data of one attempt (multipart)
    <base>/<run_date>/_MANIFEST.json                                 the marker: the commit point
    <base>/_leases/<run_date>.json                                   the live attempt's lease (RUNNING)

The published location ``<base>/<run_date>/`` holds the manifest and nothing else: a reader that
lists it without reading the manifest sees either nothing or the manifest, never part of a run.
Data objects are immutable and referenced from the manifest by key, size, ETag and sha256.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from ._arrow import InputFiles, refuse_nested_for_csv, refuse_schema_drift, schema_to_json
from ._crash import crash_point
from ._errors import (
    CommitAborted,
    CommitOutcomeUnknown,
    CommitRejected,
    DestinationUnavailable,
    Fenced,
    InputError,
    LostRace,
)
from ._fs import WriteOnlySink, sha256_file
from ._lease import Lease, LeaseTaken
from ._protocol import Capabilities, ProgressCallback, SinkDefinition, SinkOptions
from ._types import Receipt, Run, Staged, check_parts, combine_checksums

log = logging.getLogger("atomic_publish.s3")

MANIFEST_NAME = "_MANIFEST.json"
# The longest key the sink writes after its prefix:
# /<dataset: 100 chars>/_attempts/<date>/<attempt>/part-00000.parquet.uploading
LONGEST_KEY_SUFFIX = (
    len("/") + 100 + len("/_attempts/2026-04-24/20260424T060000Z-abcdef/part-00000-abcd-000.parquet.uploading")
)
INTENT_SUFFIX = ".uploading"
FENCE_VERSION = 1
ATTEMPTS = "_attempts"
LEASES = "_leases"


class S3SinkConfig(SinkOptions):
    """Options of a ``type = "s3"`` sink. Credentials come only from the usual AWS sources
    (environment, shared config and credentials files, profiles, instance roles)."""

    type: Literal["s3"] = "s3"
    bucket: str
    prefix: str = Field(description="key prefix of every dataset; never empty (cleanup is scoped to it)")
    format: Literal["csv", "parquet"] = "csv"
    endpoint_url: str | None = Field(default=None, description="for MinIO or another S3; omit on AWS")
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    profile: str | None = Field(default=None, description="AWS profile name (credentials stay in ~/.aws)")
    part_size_mb: int = Field(default=8, ge=5, le=5120)
    max_concurrency: int = Field(default=4, ge=1, le=32)
    lease_seconds: int = Field(default=60, ge=5)
    allow_schema_change: bool = Field(
        default=False, description="publish records whose schema differs from the dataset's last published run"
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        from . import _names

        return _names.s3_bucket(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        from . import _names

        if isinstance(value, str) and not value.strip("/"):
            raise ValueError("prefix must not be empty or '/': recovery would then reach the whole bucket")
        # Every key the sink writes is <prefix>/<dataset>/...: the longest must fit S3's 1,024 bytes.
        return _names.s3_key_fits(_names.s3_prefix(value), LONGEST_KEY_SUFFIX)


@functools.lru_cache(maxsize=8)
def client(config: S3SinkConfig) -> Any:
    """One boto3 client per sink config and process (clients are thread-safe): building one loads
    and parses botocore's service model, measured at 0.15 s, and a publish asks seven times.
    Every request is bounded (connect and read timeouts); botocore retries idempotent failures."""
    return _make_client(config, attempts=3)


@functools.lru_cache(maxsize=8)
def conditional_client(config: S3SinkConfig) -> Any:
    """The client for conditional writes (the manifest, the lease, a fence): botocore never retries
    them by itself. A retried conditional PUT whose first try landed but lost its answer gets 412,
    which would turn "my write landed" into "someone else won"; the callers read the key back
    instead and decide from what is there."""
    return _make_client(config, attempts=1)


def _make_client(config: S3SinkConfig, *, attempts: int) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=config.profile) if config.profile else boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        config=Config(
            s3={"addressing_style": config.addressing_style},
            retries={"total_max_attempts": attempts, "mode": "standard"},
            # botocore's default request checksums stay on: measured against the same server, an
            # upload with "when_required" took 2x as long as with the default (CRC32). An old
            # S3-compatible that refuses checksum headers: AWS_REQUEST_CHECKSUM_CALCULATION=when_required.
            connect_timeout=min(config.timeout_seconds, 10.0),
            read_timeout=config.timeout_seconds,
            tcp_keepalive=True,
        ),
    )


def describe_endpoint(config: S3SinkConfig) -> str:
    return f"s3://{config.bucket}" + (f" at {config.endpoint_url}" if config.endpoint_url else "")


def unavailable(config: S3SinkConfig, doing: str, exc: BaseException) -> DestinationUnavailable:
    """A one-line error naming the bucket and endpoint for a client or network failure."""
    code, status = error_code(exc) if isinstance(exc, Exception) else ("", 0)
    what = f"{code} ({status})" if code else f"{type(exc).__name__}: {_first_line(exc)}"
    return DestinationUnavailable(f"{describe_endpoint(config)}: {doing} failed: {what}")


def _first_line(exc: BaseException) -> str:
    from ._secrets import redact

    text = redact(str(exc).strip())
    return text.splitlines()[0] if text else type(exc).__name__


class S3Layout:
    def __init__(self, config: S3SinkConfig) -> None:
        self.config = config

    def base(self, dataset: str) -> str:
        return f"{self.config.prefix}/{dataset}"

    def run_attempts(self, dataset: str, run_date: dt.date) -> str:
        return f"{self.base(dataset)}/{ATTEMPTS}/{run_date.isoformat()}/"

    def attempt_prefix(self, run: Run) -> str:
        return f"{self.run_attempts(run.dataset, run.run_date)}{run.attempt}/"

    def manifest(self, dataset: str, run_date: dt.date) -> str:
        return f"{self.base(dataset)}/{run_date.isoformat()}/{MANIFEST_NAME}"

    def published_location(self, dataset: str, run_date: dt.date) -> str:
        return f"{self.base(dataset)}/{run_date.isoformat()}/"

    def lease(self, dataset: str, run_date: dt.date) -> str:
        return f"{self.base(dataset)}/{LEASES}/{run_date.isoformat()}.json"

    @staticmethod
    def intent(key: str) -> str:
        """The intent object an attempt writes before it starts an upload to ``key``: some servers
        (MinIO) list incomplete uploads only for an exact key, so the diagnosis finds the key here."""
        return key + INTENT_SUFFIX

    def uri(self, key: str) -> str:
        return f"s3://{self.config.bucket}/{key}"


def error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")), int(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    )


def is_unknown_outcome(exc: Exception) -> bool:
    """5xx, throttling, timeouts and broken connections: the request may or may not have applied."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, ReadTimeoutError

    if isinstance(exc, ReadTimeoutError | ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        _, status = error_code(exc)
        return status >= 500 or status == 0
    return False


class _MultipartSink(WriteOnlySink):
    """A file-like sink for pyarrow writers that streams the bytes into one multipart upload.

    Parts are uploaded by a small pool while the next part is encoded; at most ``max_concurrency``
    parts are in flight, so memory is bounded by (concurrency + 1) x part size whatever the input.
    The upload is created at once, so an attempt killed mid-stage leaves an incomplete multipart
    upload under its own prefix, which the diagnosis finds and recovery aborts.
    """

    def __init__(self, s3: Any, bucket: str, key: str, part_size: int, concurrency: int) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.part_size = part_size
        self.upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        # The part being filled: pyarrow's bytes are copied into it once (it reuses its own buffer
        # after write() returns) and it is handed to the upload as it is, with no join.
        self._part = bytearray()
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
        self._slots = threading.BoundedSemaphore(concurrency)
        self.digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self._part += view
        self.size += view.nbytes
        if len(self._part) >= self.part_size:
            # Parts may run a little over part_size; S3 only sets a minimum.
            self._submit(self._part)
            self._part = bytearray()
        return view.nbytes

    def _submit(self, chunk: bytearray) -> None:
        number = len(self._parts) + 1
        self._slots.acquire()

        def upload() -> dict[str, Any]:
            try:
                etag = self.s3.upload_part(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=chunk
                )["ETag"]
                return {"PartNumber": number, "ETag": etag}
            finally:
                self._slots.release()

        self._parts.append(self._pool.submit(upload))

    def complete(self) -> str:
        if self._part or not self._parts:
            self._submit(self._part)
            self._part = bytearray()
        parts = [f.result() for f in self._parts]
        self._pool.shutdown()
        return str(
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
            )["ETag"]
        )

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


def read_manifest(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The manifest at ``key``, or None if it cannot be read as JSON (missing, unreachable, garbled)."""
    try:
        return dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    except Exception:
        return None


def read_commit_point(s3: Any, bucket: str, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """(document, ETag) at the commit point, or (None, None) if nothing is there. The document is
    a manifest, or a fence (``is_fence``). Raises on any other failure (the caller cannot know)."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        return None, None
    raw = response["Body"].read()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = {"unreadable": raw[:200].decode(errors="replace")}
    return (doc if isinstance(doc, dict) else {"unreadable": str(doc)[:200]}), str(response["ETag"])


def is_fence(doc: dict[str, Any] | None) -> bool:
    """A fence is what ``recover`` leaves at a run's commit point after removing dead attempts'
    staging: a late manifest PUT of theirs (``If-None-Match: *``) then fails. It is not a manifest:
    readers treat it as "not published", and the next attempt replaces it with ``If-Match``."""
    return bool(doc) and doc.get("fence") is True  # type: ignore[union-attr]


def fence_document(run_id: str, attempts: Sequence[str]) -> bytes:
    return (
        json.dumps(
            {
                "fence": True,
                "fence_version": FENCE_VERSION,
                "run_id": run_id,
                "fenced_attempts": sorted(attempts),
                "fenced_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "note": "NOT PUBLISHED: recover removed the staging of dead attempts and fenced their commits; "
                "the next publish of this run replaces this object",
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    ).encode()


def is_condition_failure(exc: Exception) -> bool:
    """412 (the condition failed) or 409 (a concurrent conditional write to the same key)."""
    code, status = error_code(exc)
    return status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")


def run_lease(config: S3SinkConfig, run: Run) -> Lease:
    """The run's lease object (see publishers._lease), taken and renewed by conditional writes."""
    s3, writer = client(config), conditional_client(config)
    key = S3Layout(config).lease(run.dataset, run.run_date)

    def read_versioned() -> tuple[bytes, str] | None:
        try:
            response = s3.get_object(Bucket=config.bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            if _is_client_failure(exc):
                raise unavailable(config, "reading the run's lease", exc) from exc
            raise
        return bytes(response["Body"].read()), str(response["ETag"])

    def swap(data: bytes, expected: str | None) -> str:
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            response = writer.put_object(
                Bucket=config.bucket, Key=key, Body=data, ContentType="application/json", **condition
            )
        except Exception as exc:
            if is_condition_failure(exc):
                raise LeaseTaken(key) from None  # Lease reads it back: it may be our own landed write
            if _is_client_failure(exc):
                raise unavailable(config, "writing the run's lease", exc) from exc
            raise
        return str(response["ETag"])

    return Lease(
        run,
        config.lease_seconds,
        S3Layout(config).uri(key),
        (read_versioned, swap),
        lambda: s3.delete_object(Bucket=config.bucket, Key=key),
    )


CAPABILITIES = Capabilities(max_parts=None, stages_files=True)


def object_name(part: int, token: str, fmt: str, index: int | None = None) -> str:
    """``part-<part>[-<token>][-<file>].<fmt>``: a run staged in one piece keeps ``part-00000.csv``
    (and ``part-00000.parquet``, ``part-00001.parquet``, ... for files published as they are)."""
    if part == 0 and not token:
        return f"part-{index or 0:05d}.{fmt}"
    name = f"part-{part:05d}" + (f"-{token}" if token else "")
    return name + (f"-{index:03d}" if index is not None else "") + f".{fmt}"


class S3Publisher:
    sink_name = "s3"
    capabilities = CAPABILITIES

    def __init__(self, config: S3SinkConfig) -> None:
        self.config = config
        self.layout = S3Layout(config)

    def run_lock(self, run: Run) -> Lease:
        return run_lease(self.config, run)

    def _declare(self, s3: Any, key: str, run: Run) -> None:
        """Write the intent object of an upload before starting it (see S3Layout.intent)."""
        body = json.dumps({"key": key, "run_id": run.run_id, "attempt": run.attempt}).encode()
        s3.put_object(Bucket=self.config.bucket, Key=self.layout.intent(key), Body=body)

    def _start_upload(self, s3: Any, key: str, run: Run) -> _MultipartSink:
        try:
            self._declare(s3, key, run)
            return _MultipartSink(
                s3, self.config.bucket, key, self.config.part_size_mb << 20, self.config.max_concurrency
            )
        except Exception as exc:
            raise unavailable(self.config, f"starting the upload of {self.layout.uri(key)}", exc) from exc

    def _refuse_drift(self, run: Run, schema: pa.Schema) -> None:
        """The schema of the dataset's most recent published run (one listing, one GET)."""
        if self.config.allow_schema_change:
            return
        s3, bucket, base = client(self.config), self.config.bucket, self.layout.base(run.dataset) + "/"
        dates = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(base) :].rstrip("/")
                if name != run.run_date.isoformat() and not name.startswith("_"):
                    dates.append(name)
        for date in sorted(dates, reverse=True):
            key = f"{base}{date}/{MANIFEST_NAME}"
            doc = read_manifest(s3, bucket, key)
            if doc is not None and not is_fence(doc):
                refuse_schema_drift(schema, doc.get("schema"), f"the run {doc.get('run_id')} ({self.layout.uri(key)})")
                return

    def stage(
        self,
        run: Run,
        batches: pa.RecordBatchReader,
        *,
        progress: ProgressCallback | None = None,
        part: int = 0,
        token: str = "",
    ) -> Staged:
        s3 = client(self.config)
        if self.config.format == "csv":
            refuse_nested_for_csv(batches.schema, f"s3://{self.config.bucket}")
        self._refuse_drift(run, batches.schema)
        key = self.layout.attempt_prefix(run) + object_name(part, token, self.config.format)
        sink = self._start_upload(s3, key, run)
        rows = 0
        try:
            if self.config.format == "csv":
                writer: Any = pacsv.CSVWriter(sink, batches.schema)
            else:
                writer = pq.ParquetWriter(sink, batches.schema, compression="zstd")
            try:
                for index, batch in enumerate(batches):
                    if self.config.format == "csv":
                        writer.write_batch(batch)
                    else:
                        writer.write_table(pa.Table.from_batches([batch]))
                    rows += batch.num_rows
                    if progress:
                        progress(rows, sink.size)
                    if index == 0:
                        crash_point("mid_stage")
            finally:
                writer.close()
            etag = sink.complete()
            s3.delete_object(Bucket=self.config.bucket, Key=self.layout.intent(key))
        except BaseException as exc:
            sink.abort()
            with contextlib.suppress(Exception):
                s3.delete_object(Bucket=self.config.bucket, Key=self.layout.intent(key))
            if isinstance(exc, Exception) and _is_client_failure(exc):
                raise unavailable(self.config, f"uploading {self.layout.uri(key)}", exc) from exc
            raise
        crash_point("after_stage")
        objects = [{"key": key, "size": sink.size, "etag": etag, "sha256": sink.digest.hexdigest()}]
        return self._staged(run, objects, rows, batches.schema, part, token)

    def stage_files(
        self,
        run: Run,
        files: InputFiles,
        *,
        progress: ProgressCallback | None = None,
        part: int = 0,
        token: str = "",
    ) -> Staged | None:
        """Upload Parquet input files byte for byte when this sink writes Parquet: one object per
        file, each a multipart upload by boto3's transfer manager (the code of ``upload_file``,
        streaming from the file, so memory stays flat), its sha256 computed alongside on a second
        thread. Declines (None) anything else, which publish() then stages batch by batch."""
        schema = files.parquet_schema
        if self.config.format != "parquet" or schema is None:
            return None
        self._refuse_drift(run, schema)
        s3 = client(self.config)
        prefix = self.layout.attempt_prefix(run)
        objects: list[dict[str, Any]] = []
        rows = 0
        try:
            for index, (path, footer) in enumerate(zip(files.paths, files.footers, strict=True)):
                key = prefix + object_name(part, token, "parquet", index)
                objects.append(self._upload_file(s3, run, path, key, progress, rows, first=index == 0))
                rows += footer.num_rows
        except BaseException:
            self._remove(s3, [o["key"] for o in objects])  # earlier files of this part are complete
            raise
        crash_point("after_stage")
        return self._staged(run, objects, rows, schema, part, token)

    def _upload_file(
        self,
        s3: Any,
        run: Run,
        path: Path,
        key: str,
        progress: ProgressCallback | None,
        rows_before: int,
        *,
        first: bool,
    ) -> dict[str, Any]:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager
        from s3transfer.subscribers import BaseSubscriber

        started = threading.Event()
        sent = [0]

        class Progress(BaseSubscriber):
            def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
                sent[0] += bytes_transferred
                started.set()
                if progress:
                    progress(rows_before, sent[0])

        before = path.stat()
        # Multipart even for a small file: the upload exists (and names the attempt by its key)
        # before any byte goes up, so a kill mid-upload always leaves something the diagnosis finds.
        config = TransferConfig(
            multipart_threshold=1,
            multipart_chunksize=self.config.part_size_mb << 20,
            max_concurrency=self.config.max_concurrency,
        )
        try:
            self._declare(s3, key, run)
        except Exception as exc:
            raise unavailable(self.config, f"starting the upload of {self.layout.uri(key)}", exc) from exc
        with create_transfer_manager(s3, config) as manager, ThreadPoolExecutor(1, "sha256") as hashing:
            digest = hashing.submit(sha256_file, path)
            upload = manager.upload(str(path), self.config.bucket, key, subscribers=[Progress()])
            if first:
                started.wait(timeout=30)
                crash_point("mid_stage")
            try:
                upload.result()
            except Exception as exc:
                raise unavailable(self.config, f"uploading {path} to {self.layout.uri(key)}", exc) from exc
            sha256, hashed_size = digest.result()
        s3.delete_object(Bucket=self.config.bucket, Key=self.layout.intent(key))
        after = path.stat()
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or hashed_size != after.st_size:
            raise InputError(f"{path}: the file changed while it was uploaded")
        head = s3.head_object(Bucket=self.config.bucket, Key=key)
        if head["ContentLength"] != hashed_size:
            raise DestinationUnavailable(
                f"{self.layout.uri(key)} holds {head['ContentLength']} bytes, {path} {hashed_size}"
            )
        return {"key": key, "size": hashed_size, "etag": head["ETag"], "sha256": sha256}

    def _remove(self, s3: Any, keys: Sequence[str]) -> None:
        for key in keys:
            with contextlib.suppress(Exception):
                s3.delete_object(Bucket=self.config.bucket, Key=key)

    def _staged(
        self, run: Run, objects: list[dict[str, Any]], rows: int, schema: pa.Schema, part: int, token: str
    ) -> Staged:
        checksum = combined_checksum(objects)
        return Staged(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=run.attempt,
            location=self.layout.uri(objects[0]["key"]),
            rows=rows,
            bytes=sum(o["size"] for o in objects),
            checksum=checksum,
            details={"objects": objects, "schema": schema_to_json(schema), "format": self.config.format},
            part=part,
            token=token,
        )

    def commit(self, run: Run, staged: Sequence[Staged]) -> Receipt:
        """One conditional PUT of the manifest: ``If-None-Match: *`` on an empty commit point, or
        ``If-Match`` on a fence that ``recover`` left there. Never retried blindly: after any try
        whose answer is not a plain success, the commit point is read back and decides (our own
        manifest: published; another attempt's: LostRace; a newer fence: Fenced; nothing: the
        conditional PUT is safe to try again), until ``commit_timeout_seconds``; then the outcome
        is unknown and nothing is deleted."""
        from botocore.exceptions import ClientError

        check_parts(run, staged)
        staged = sorted(staged, key=lambda p: p.part)
        s3, writer = client(self.config), conditional_client(self.config)
        bucket = self.config.bucket
        objects = [o for part in staged for o in part.details["objects"]]
        published_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        manifest = {
            "manifest_version": 1,
            "run_id": run.run_id,
            "dataset": run.dataset,
            "run_date": run.run_date.isoformat(),
            "attempt": run.attempt,
            "format": staged[0].details["format"],
            "schema": staged[0].details["schema"],
            "rows": sum(p.rows for p in staged),
            "bytes": sum(p.bytes for p in staged),
            "checksum": combine_checksums(staged),
            "parts": len(staged),
            "objects": objects,
            "published_at": published_at,
        }
        key = self.layout.manifest(run.dataset, run.run_date)
        uri = self.layout.uri(key)
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        deadline = time.monotonic() + self.config.commit_timeout_seconds
        last_error: str | None = None

        def settle() -> tuple[str, str | None]:
            """What is at the commit point now: ("ours"|"other"|"fence"|"none", ETag)."""
            doc, etag = read_commit_point(s3, bucket, key)
            if doc is None:
                return "none", None
            if is_fence(doc):
                return "fence", etag
            if doc.get("attempt") == run.attempt:
                return "ours", etag
            return "other", str(doc.get("attempt"))

        try:
            seen, fence_etag = settle()
        except Exception as exc:
            raise CommitAborted(f"cannot read the commit point {uri} before the commit: {_first_line(exc)}") from exc
        if seen in ("other", "ours"):
            raise LostRace(f"run {run.run_id} is already published ({uri}, attempt {fence_etag})")
        expected = fence_etag if seen == "fence" else None
        while True:
            condition = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
            try:
                writer.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
                break
            except ClientError as exc:
                code, status = error_code(exc)
                if not is_condition_failure(exc) and not is_unknown_outcome(exc):
                    # A plain 4xx (access denied, no such bucket): S3 answered that it did not write.
                    raise CommitRejected(f"S3 refused the manifest {uri}: {code} ({status})") from None
                last_error = f"{code} ({status})"
            except Exception as exc:
                if not is_unknown_outcome(exc):
                    raise
                last_error = f"{type(exc).__name__}: {_first_line(exc)}"
            # The PUT may or may not have landed, or the condition failed: the commit point decides.
            try:
                now_seen, detail = settle()
            except Exception as exc:
                now_seen, detail = "unreadable", f"{type(exc).__name__}: {_first_line(exc)}"
            if now_seen == "ours":
                break
            if now_seen == "other":
                raise LostRace(f"run {run.run_id} was published by attempt {detail} ({uri})")
            if now_seen == "fence" and detail != expected:
                raise Fenced(f"recover fenced attempt {run.attempt} of {run.run_id} ({uri}); it did not publish")
            if time.monotonic() >= deadline:
                raise CommitOutcomeUnknown(
                    f"the manifest PUT of {run.run_id} to {uri} ended without an answer ({last_error}) for "
                    f"{self.config.commit_timeout_seconds:g} s; run `atomic-publish diagnose` (the manifest settles it)"
                )
            time.sleep(0.2)
        crash_point("after_commit")
        return Receipt(
            sink=self.sink_name,
            run_id=run.run_id,
            attempt=run.attempt,
            location=uri,
            rows=manifest["rows"],
            bytes=manifest["bytes"],
            checksum=str(manifest["checksum"]),
            published_at=published_at,
            details={"objects": len(objects)},
        )

    def discard(self, run: Run, staged: Sequence[Staged]) -> None:
        s3 = client(self.config)
        bucket = self.config.bucket
        for attempt in sorted({run.attempt} | {s.attempt for s in staged}):
            prefix = self.layout.attempt_prefix(Run(run.dataset, run.run_date, attempt))
            keys = [
                obj["Key"]
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for obj in page.get("Contents", [])
            ]
            # Uploads first (found by prefix, and by the exact keys the intents name), then objects.
            intents = [k[: -len(INTENT_SUFFIX)] for k in keys if k.endswith(INTENT_SUFFIX)]
            for upload in incomplete_uploads(s3, bucket, prefix, intents):
                with contextlib.suppress(Exception):
                    s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            for key in keys:
                s3.delete_object(Bucket=bucket, Key=key)


def incomplete_uploads(s3: Any, bucket: str, prefix: str, exact_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Incomplete multipart uploads under ``prefix``: listed by prefix (AWS, moto) and by each exact
    key an intent names (MinIO lists uploads only for an exact key), without duplicates."""
    found: dict[str, dict[str, Any]] = {}
    for wanted in (prefix, *exact_keys):
        response = s3.list_multipart_uploads(Bucket=bucket, Prefix=wanted)
        for upload in response.get("Uploads", []):
            if upload["Key"].startswith(prefix):
                found[upload["UploadId"]] = upload
    return sorted(found.values(), key=lambda u: (u["Key"], u["UploadId"]))


def combined_checksum(objects: Sequence[dict[str, Any]]) -> str:
    """The run's checksum: ``sha256:<hex>`` of its one object, or ``sha256-of-objects:<hex>``, the
    sha256 of the objects' sha256s, one per line, in order (each object keeps its own)."""
    if len(objects) == 1:
        return f"sha256:{objects[0]['sha256']}"
    joined = "\n".join(o["sha256"] for o in objects).encode()
    return f"sha256-of-objects:{hashlib.sha256(joined).hexdigest()}"


def _is_client_failure(exc: Exception) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)


def _make_diagnostic(config: S3SinkConfig) -> Any:
    from diagnostics.s3 import S3Diagnostic

    return S3Diagnostic(config)


SINK = SinkDefinition(
    name="s3",
    config_model=S3SinkConfig,
    make_publisher=S3Publisher,
    make_diagnostic=_make_diagnostic,
    description="S3 / MinIO: attempt-owned objects + a manifest written with If-None-Match",
    capabilities=CAPABILITIES,
)
