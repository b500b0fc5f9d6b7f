"""The S3 sink's layout: its options, clients, the keys of a run's staging, lease, manifest and fence,
and the reads both the publisher and the diagnostic make. Shared by both, which never import each other."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

from pydantic import Field, field_validator

from .._errors import (
    ConfigError,
    DestinationUnavailable,
)
from .._fs import WriteOnlySink
from .._lease import Lease, LeaseTaken
from .._protocol import ALLOW_SCHEMA_CHANGE, Capabilities, SinkOptions
from .._types import Run
from ..taxonomy import LockHolder

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
    allow_schema_change: bool = Field(default=False, description=ALLOW_SCHEMA_CHANGE)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        from .. import _names

        return _names.s3_bucket(value)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        # Found from outside: "notaurl" or "ftp://..." was taken, then every command exited 5 (as
        # if the server were down) where the configuration is what needs fixing.
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(?:/[^\s?#]*)?", value):
            raise ValueError("endpoint_url must be an http:// or https:// URL, like http://127.0.0.1:9000")
        if value is not None:
            try:
                urllib.parse.urlsplit(value).port  # noqa: B018 (the check: a port that is not 1-65535)
            except ValueError:
                raise ValueError(f"endpoint_url {value!r} has no valid port (1-65535)") from None
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", value):
            raise ValueError("region must be a region name, like us-east-1")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        from .. import _names

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


# Clients are built one at a time: two threads in boto3's first import at once can each get the
# other's half-imported modules. (The "module 'boto3' has no attribute 'utils'" seen under Ray came
# from an import a cancelled task interrupted: see ray_data.forget_interrupted_imports.)
_CLIENT_LOCK = threading.Lock()
_LOADER: Any = None  # botocore's Loader, shared by every session (see _session)


@functools.lru_cache(maxsize=8)
def _session(config: S3SinkConfig) -> Any:
    """The boto3 session of a sink config (its two clients come from it, like the clients, one per
    config and process), all sessions sharing one loader of botocore's service models
    (s3_model_loader): parsing them is most of a client's cost (measured: 0.16-0.25 s a client with
    its own session, 0.05 s with a new session on the shared loader, 0.02 s for a second client of
    the same session)."""
    import boto3.session
    import botocore.session

    global _LOADER
    core = botocore.session.get_session()
    if _LOADER is None:
        _LOADER = s3_model_loader(core.get_config_variable("data_path"))
    core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core, profile_name=config.profile)


def s3_model_loader(data_path: str | None) -> Any:
    """botocore's loader of service models (``botocore.loaders.create_loader(data_path)``, so
    AWS_DATA_PATH still counts), for S3 clients, with two costs taken out that change nothing it
    returns (a test compares it with botocore's own, model by model):

    - asked for a model, botocore lists every service's directory with each of its API versions
      (~950 listdirs and ~2,900 stats, twice a client) to check that the one asked for is among
      them: this one looks for ``s3`` alone (the only service its clients ask for);
    - it parses the JSON into dicts rather than OrderedDicts (a dict keeps the order; nothing in
      botocore, boto3 or s3transfer tells them apart).

    A client: 129 -> 69 ms (medians of 10 fresh processes each, alternating)."""
    import botocore.loaders

    class JsonFiles(botocore.loaders.JSONFileLoader):
        def _load_file(self, full_path: str, open_method: Any) -> Any:
            if not os.path.isfile(full_path):
                return None
            with open_method(full_path, "rb") as fp:
                return json.loads(fp.read().decode("utf-8"))

    class S3Models(botocore.loaders.Loader):
        FILE_LOADER_CLASS = JsonFiles

        @botocore.loaders.instance_cache
        def list_available_services(self, type_name: str) -> list[str]:
            for location in self._potential_locations():
                service = os.path.join(location, "s3")
                if os.path.isdir(service) and any(
                    self.file_loader.exists(os.path.join(service, version, type_name))
                    for version in os.listdir(service)
                ):
                    return ["s3"]
            return []

    if data_path is None:
        return S3Models()
    paths = [os.path.expanduser(os.path.expandvars(path)) for path in data_path.split(os.pathsep)]
    return S3Models(extra_search_paths=paths)


def _make_client(config: S3SinkConfig, *, attempts: int) -> Any:
    with _CLIENT_LOCK:
        return _build_client(config, attempts)


def _build_client(config: S3SinkConfig, attempts: int) -> Any:
    from botocore.config import Config

    session = _session(config)
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


# Error codes of a request refused for its credentials or access: the configuration's to fix.
REFUSED_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "AllAccessDisabled"}
)


def unavailable(config: S3SinkConfig, doing: str, exc: BaseException) -> DestinationUnavailable | ConfigError:
    """A one-line error naming the bucket and endpoint for a client or network failure; a bucket
    that does not exist is the configuration's to fix (exit 2), not the destination's to come back."""
    code, status = error_code(exc) if isinstance(exc, Exception) else ("", 0)
    if code == "NoSuchBucket":
        return ConfigError(
            f"{describe_endpoint(config)}: the bucket does not exist ({doing}); a publish never creates a bucket: "
            "create it, or fix `bucket`"
        )
    if code in REFUSED_CREDENTIALS:
        # Not a server to wait for: a re-run gets the same answer (found from outside: exit 5, "re-run").
        return ConfigError(
            f"{describe_endpoint(config)}: {doing} failed: {code} ({status}): the server refused these credentials "
            "or this access; fix the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile) or the "
            "bucket's policy"
        )
    what = f"{code} ({status})" if code else f"{type(exc).__name__}: {_first_line(exc)}"
    return DestinationUnavailable(f"{describe_endpoint(config)}: {doing} failed: {what}")


def _first_line(exc: BaseException) -> str:
    from .._secrets import redact

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


def run_lease(config: S3SinkConfig, run: Run, key: str | None = None, *, purpose: str = "publish") -> Lease:
    """The run's lease object (see publishers._lease), taken and renewed by conditional writes; at
    ``key`` when given (a group's lock in an S3 journal), else at the sink's lease of the run."""
    s3, writer = client(config), conditional_client(config)
    key = key or S3Layout(config).lease(run.dataset, run.run_date)

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
        purpose=purpose,
    )


class S3Journal:
    """A group's journal in the bucket of an S3 sink (``journal_sink``), for groups whose publishers
    and operators share no filesystem. The same records as the file journal, under the sink's prefix::

        <prefix>/_journal/<group>/<dataset>/<run_date>.decision.json   written once: If-None-Match: *
        <prefix>/_journal/<group>/<dataset>/<run_date>.complete.json   written once: If-None-Match: *
        <prefix>/_journal/<group>/<dataset>/<run_date>.lock.json       the group's lock: a lease

    A record whose PUT got no plain answer is read back until it settles (ours, another attempt's,
    or nothing and the PUT is tried again), for at most ``commit_timeout_seconds``; then the outcome
    is unknown (DestinationUnavailable). The lock is the S3 sink's lease (taken and renewed by
    conditional writes), so it holds only while its holder renews it, unlike the file journal's flock.
    """

    def __init__(self, config: S3SinkConfig, group: str) -> None:
        self.config, self.group = config, group
        self.layout = S3Layout(config)

    def key(self, run: Run, kind: str) -> str:
        base = "/".join(p for p in (self.config.prefix, "_journal", self.group, run.dataset) if p)
        return f"{base}/{run.run_date.isoformat()}.{kind}.json"

    def read(self, run: Run, kind: str) -> dict[str, Any] | None:
        s3, key = client(self.config), self.key(run, kind)
        try:
            raw = s3.get_object(Bucket=self.config.bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            if _is_client_failure(exc):
                raise unavailable(self.config, f"reading the group journal {self.layout.uri(key)}", exc) from exc
            raise
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise DestinationUnavailable(f"the group journal {self.layout.uri(key)} is not a JSON object")
        return doc

    def record(self, run: Run, kind: str, doc: dict[str, Any]) -> bool:
        """Record ``doc`` unless the run already has a record of this kind; True if this call did."""
        writer, key = conditional_client(self.config), self.key(run, kind)
        body = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
        deadline = time.monotonic() + self.config.commit_timeout_seconds
        while True:
            try:
                writer.put_object(
                    Bucket=self.config.bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*"
                )
                return True
            except Exception as exc:
                if not (is_condition_failure(exc) or is_unknown_outcome(exc) or _is_client_failure(exc)):
                    raise
                why = _first_line(exc)
            # The PUT may or may not have landed, or another record was there: what is there decides.
            with contextlib.suppress(DestinationUnavailable):
                there = self.read(run, kind)
                if there is not None:
                    return bool(there == json.loads(body))
            if time.monotonic() >= deadline:
                raise DestinationUnavailable(
                    f"the group journal {self.layout.uri(key)} did not answer for "
                    f"{self.config.commit_timeout_seconds:g} s ({why})"
                )
            time.sleep(0.2)

    @contextlib.contextmanager
    def lock(self, run: Run) -> Iterator[None]:
        """The group's run lock: one publish or recover of the group's run at a time."""
        with run_lease(self.config, run, self.key(run, "lock")):
            yield

    def holder(self, run: Run) -> LockHolder | None:
        """The live holder of the group's run lock, or None."""
        key = self.key(run, "lock")
        doc = run_lease(self.config, Run(run.dataset, run.run_date), key).live_holder()  # a fresh attempt: sees any
        return None if doc is None else LockHolder.from_lease(doc, self.layout.uri(key))

    def describe(self) -> str:
        return self.layout.uri("/".join(p for p in (self.config.prefix, "_journal", self.group) if p))


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


def _is_client_failure(exc: Exception) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)


CAPABILITIES = Capabilities(max_parts=None, stages_files=True, reads_back=True, checks_schema=True)
