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
import dataclasses
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._arrow import CsvWriter, InputFiles, refuse_nested_for_csv, refuse_schema_drift, schema_to_json
from ._crash import crash_point
from ._errors import (
    CommitOutcomeUnknown,
    CommitRejected,
    DestinationUnavailable,
    Fenced,
    InputError,
    LostRace,
)
from ._fs import sha256_file
from ._lease import Lease
from ._parquet import parquet_writer
from ._protocol import ProgressCallback
from ._types import Receipt, Run, Staged, check_parts, combine_checksums
from .layouts.s3 import (
    CAPABILITIES,
    INTENT_SUFFIX,
    MANIFEST_NAME,
    S3Layout,
    S3SinkConfig,
    _first_line,
    _is_client_failure,
    _MultipartSink,
    client,
    conditional_client,
    error_code,
    incomplete_uploads,
    is_condition_failure,
    is_fence,
    is_unknown_outcome,
    read_commit_point,
    read_manifest,
    run_lease,
    unavailable,
)


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
        # Only Parquet gives back every value exactly (CSV: a null string and an empty one are the same).
        self.capabilities = dataclasses.replace(CAPABILITIES, reads_back=config.format == "parquet")

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
            raise self._failure(s3, run, f"starting the upload of {self.layout.uri(key)}", exc) from exc

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

    def check_schema(self, schema: pa.Schema) -> None:
        """Before the lock: CSV holds flat values only."""
        if self.config.format == "csv":
            refuse_nested_for_csv(schema, f"s3://{self.config.bucket}")

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
            csv = self.config.format == "csv"
            if csv:
                writer: Any = CsvWriter(sink, batches.schema, f"s3://{self.config.bucket}")
            else:
                writer = parquet_writer(sink, batches.schema, compression="zstd")  # columns on threads
            with writer:
                for index, batch in enumerate(batches):
                    if csv:
                        writer.write(batch)
                    else:
                        writer.write_table(pa.Table.from_batches([batch]))
                    rows += batch.num_rows
                    if progress:
                        progress(rows, sink.size)
                    if index == 0:
                        crash_point("mid_stage")
            etag = sink.complete()
            s3.delete_object(Bucket=self.config.bucket, Key=self.layout.intent(key))
        except BaseException as exc:
            sink.abort()
            with contextlib.suppress(Exception):
                s3.delete_object(Bucket=self.config.bucket, Key=self.layout.intent(key))
            if isinstance(exc, Exception) and _is_client_failure(exc):
                raise self._failure(s3, run, f"uploading {self.layout.uri(key)}", exc) from exc
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
            raise self._failure(s3, run, f"starting the upload of {self.layout.uri(key)}", exc) from exc
        with create_transfer_manager(s3, config) as manager, ThreadPoolExecutor(1, "sha256") as hashing:
            digest = hashing.submit(sha256_file, path)
            upload = manager.upload(str(path), self.config.bucket, key, subscribers=[Progress()])
            if first:
                started.wait(timeout=30)
                crash_point("mid_stage")
            try:
                upload.result()
            except Exception as exc:
                raise self._failure(s3, run, f"uploading {path} to {self.layout.uri(key)}", exc) from exc
            sha256, hashed_size = digest.result()
        try:
            s3.delete_object(Bucket=self.config.bucket, Key=self.layout.intent(key))
        except Exception as exc:
            raise self._failure(s3, run, f"finishing the upload of {self.layout.uri(key)}", exc) from exc
        after = path.stat()
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or hashed_size != after.st_size:
            raise InputError(f"{path}: the file changed while it was uploaded")
        try:
            head = s3.head_object(Bucket=self.config.bucket, Key=key)
        except Exception as exc:
            raise self._failure(s3, run, f"checking the upload of {self.layout.uri(key)}", exc) from exc
        if head["ContentLength"] != hashed_size:
            raise DestinationUnavailable(
                f"{self.layout.uri(key)} holds {head['ContentLength']} bytes, {path} {hashed_size}"
            )
        return {"key": key, "size": hashed_size, "etag": head["ETag"], "sha256": sha256}

    def _failure(self, s3: Any, run: Run, doing: str, exc: BaseException) -> Exception:
        """What a failed upload means. If ``recover`` fenced this attempt meanwhile (a fence at the
        commit point names it), the upload failed because recover removed its staging: Fenced,
        exit 13, not an outage. Otherwise the one-line unavailable error."""
        key = self.layout.manifest(run.dataset, run.run_date)
        with contextlib.suppress(Exception):
            doc, _ = read_commit_point(s3, self.config.bucket, key)
            if doc is not None and is_fence(doc) and run.attempt in doc.get("fenced_attempts", ()):
                return Fenced(_fenced_message(run, self.layout.uri(key)))
        return unavailable(self.config, doing, exc)

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
            """What is at the commit point now: ("ours"|"other"|"fence"|"fenced"|"none", ETag). A
            fence that names this attempt ("fenced") is recover's word that it removed the attempt's
            staging: this attempt was stalled past its lease, never to commit again."""
            doc, etag = read_commit_point(s3, bucket, key)
            if doc is None:
                return "none", None
            if is_fence(doc):
                return ("fenced" if run.attempt in doc.get("fenced_attempts", ()) else "fence"), etag
            if doc.get("attempt") == run.attempt:
                return "ours", etag
            return "other", str(doc.get("attempt"))

        # The first try is the PUT itself (an empty commit point is the usual case): the commit point
        # is read only when a PUT's answer is not a plain success, and then decides. A fence that
        # recover left there (not naming this attempt) is replaced by a PUT conditional on its ETag.
        expected: str | None = None
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
                # This attempt's manifest: our PUT landed (its answer lost), or a group's recover
                # rolled it forward while this publisher was stopped (found from outside: exit 15).
                break
            if now_seen == "other":
                raise LostRace(f"run {run.run_id} was published by attempt {detail} ({uri})")
            if now_seen == "fenced":
                raise Fenced(_fenced_message(run, uri))
            if now_seen == "fence" and expected is None:
                expected = detail  # a fence from before this attempt: replace it, on its ETag
                continue
            if now_seen == "fence" and detail != expected:
                raise Fenced(_fenced_message(run, uri))
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

    def read_published(self, run: Run) -> pa.RecordBatchReader:
        """The published run read back exactly (``Capabilities.reads_back``): the objects its manifest
        lists, in order, each checked against its sha256 as it is read. FileNotFoundError when the
        commit point holds no manifest of ``run.attempt``; only Parquet: a CSV run is refused
        (InputError), as CSV cannot give back every value (a null string and an empty one)."""
        import tempfile

        s3, bucket = client(self.config), self.config.bucket
        key = self.layout.manifest(run.dataset, run.run_date)
        doc, _ = read_commit_point(s3, bucket, key)
        if doc is None or is_fence(doc) or doc.get("attempt") != run.attempt:
            raise FileNotFoundError(f"{self.layout.uri(key)} holds no manifest of attempt {run.attempt}")
        if doc.get("format") != "parquet":
            raise InputError(f"{self.layout.uri(key)} publishes CSV, which does not give back the run's exact values")

        def opened(obj: dict[str, Any]) -> Any:
            """The object downloaded into an anonymous temporary file (never whole in memory), hashed."""
            spool, digest = tempfile.TemporaryFile(), hashlib.sha256()  # noqa: SIM115 (closed by its reader)
            try:
                body = s3.get_object(Bucket=bucket, Key=obj["key"])["Body"]
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    digest.update(chunk)
                    spool.write(chunk)
                if digest.hexdigest() != obj["sha256"]:
                    raise InputError(f"{self.layout.uri(obj['key'])} does not match the sha256 its manifest records")
            except BaseException:
                spool.close()
                raise
            spool.seek(0)
            return spool

        objects = list(doc["objects"])
        first = opened(objects[0])
        schema = pq.ParquetFile(first).schema_arrow

        def batches() -> Any:
            for index, obj in enumerate(objects):
                spool = first if index == 0 else opened(obj)
                try:
                    for batch in pq.ParquetFile(spool).iter_batches():
                        yield batch if batch.schema == schema else batch.cast(schema)
                finally:
                    spool.close()

        return pa.RecordBatchReader.from_batches(schema, batches())

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


def combined_checksum(objects: Sequence[dict[str, Any]]) -> str:
    """The run's checksum: ``sha256:<hex>`` of its one object, or ``sha256-of-objects:<hex>``, the
    sha256 of the objects' sha256s, one per line, in order (each object keeps its own)."""
    if len(objects) == 1:
        return f"sha256:{objects[0]['sha256']}"
    joined = "\n".join(o["sha256"] for o in objects).encode()
    return f"sha256-of-objects:{hashlib.sha256(joined).hexdigest()}"


def _fenced_message(run: Run, uri: str) -> str:
    return (
        f"recover fenced attempt {run.attempt} of {run.run_id} ({uri}): it did not publish, and its staging may "
        "be gone; run `atomic-publish diagnose`"
    )
