"""Evidence of the S3 sink, from the bucket alone, scoped to the run's own prefixes.

- commit record: the run's manifest, whose objects must all exist with the size and ETag it records;
  a fence at the commit point (left by ``recover``) is shown, and means "not published";
- leftovers: objects under the run's attempt prefixes that the manifest does not reference, the
  intents an attempt writes before each upload, and incomplete multipart uploads, found by prefix
  (AWS, moto) and by the exact key each intent names (MinIO lists uploads only for an exact key);
- holder: an unexpired lease object of another attempt whose holder is not known dead.

Cost: one GET of the manifest, a HEAD per referenced object, and listings scoped to
``<base>/_attempts/<run_date>/``: it grows with the run's own objects, never with the bucket.
``clean`` fences before it removes: with nothing at the commit point, it writes a fence there
(``If-None-Match: *``), so a late manifest PUT of a dead attempt can no longer land.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from atomic_publish.publishers._errors import RecoveryNeeded
from atomic_publish.publishers._lease import Lease
from atomic_publish.publishers._types import Run
from atomic_publish.publishers.layouts.s3 import (
    INTENT_SUFFIX,
    REFUSED_CREDENTIALS,
    S3Layout,
    S3SinkConfig,
    client,
    conditional_client,
    error_code,
    fence_document,
    incomplete_uploads,
    is_condition_failure,
    is_fence,
    is_unknown_outcome,
    read_commit_point,
    read_manifest,
    run_lease,
    unavailable,
)
from atomic_publish.publishers.taxonomy import Artifact, Diagnosis, Evidence, LockHolder, State

from .engine import Gone, SinkDiagnostic

_FENCE_TRIES = 5  # an extension of a fence is retried when the fence changed under it


class S3Diagnostic(SinkDiagnostic):
    sink_name = "s3"
    # An upload goes before the intent that names it (the intent is how MinIO's uploads are found).
    removal_order = {"incomplete-upload": 0, "object": 1, "upload-intent": 2}

    def __init__(self, config: S3SinkConfig) -> None:
        self.config = config
        self.layout = S3Layout(config)
        self.diagnose_timeout = config.diagnose_timeout_seconds

    def destination(self, run: Run) -> str:
        return self.layout.uri(self.layout.base(run.dataset))

    def surely_unpublished(self, run: Run) -> bool:
        """One GET: no manifest at the run's commit point (nothing, or recover's fence)."""
        key = self.layout.manifest(run.dataset, run.run_date)
        doc, _ = read_commit_point(client(self.config), self.config.bucket, key)
        return doc is None or is_fence(doc)

    # -- evidence -------------------------------------------------------------------------------

    def evidence(self, run: Run) -> Evidence:
        s3 = client(self.config)
        bucket = self.config.bucket
        destination = self.destination(run)
        try:
            # First: a bucket that does not exist answers this listing with NoSuchBucket (no HeadBucket
            # of its own: one request less in every diagnosis, so in every publish).
            staged = self._attempt_artifacts(s3, run)
        except Exception as exc:
            if error_code(exc)[0] in REFUSED_CREDENTIALS:  # the configuration's to fix, not UNKNOWN (exit 2)
                raise unavailable(self.config, "listing the run's attempts", exc) from None
            if error_code(exc)[0] != "NoSuchBucket":
                raise
            missing = f"the bucket {bucket} does not exist (a publish never creates one: create it, or fix `bucket`)"
            return Evidence(destination, missing=missing)
        # The lease is read after the listing: staging the listing found of an attempt that took the
        # lease meanwhile is that live attempt's (RUNNING), not an orphan.
        lease = run_lease(self.config, run).live_holder()
        holder = None
        if lease is not None:
            holder = LockHolder.from_lease(lease, self.layout.uri(self.layout.lease(run.dataset, run.run_date)))
        stray = self._stray_in_published_location(s3, run)
        key = self.layout.manifest(run.dataset, run.run_date)
        doc, _ = read_commit_point(s3, bucket, key)
        context: list[Artifact] = []
        problems: list[str] = []
        if stray:
            where = self.layout.uri(self.layout.published_location(run.dataset, run.run_date))
            problems.append(
                f"{len(stray)} object(s) at the published location {where} besides the manifest: data that no "
                "evidence explains"
            )
            context.extend(stray)
        if doc is None or is_fence(doc):
            if doc is not None:
                context.append(
                    Artifact(
                        kind="fence",
                        location=self.layout.uri(key),
                        detail=f"left by recover at {doc.get('fenced_at')} for attempt(s) "
                        f"{', '.join(doc.get('fenced_attempts', []))}: not a manifest; not published",
                    )
                )
            return Evidence(
                destination, holder=holder, leftovers=tuple(staged), problems=tuple(problems), context=tuple(context)
            )
        if "unreadable" in doc:
            problems.append(f"the manifest {self.layout.uri(key)} is not JSON")
        elif doc.get("run_id") != run.run_id:
            problems.append(f"the manifest names run {doc.get('run_id')!r}")
        referenced = {o["key"]: o for o in doc.get("objects", []) if isinstance(o, dict) and "key" in o}
        for obj_key, expected in referenced.items():
            try:
                head = s3.head_object(Bucket=bucket, Key=obj_key)
            except Exception as exc:
                if error_code(exc)[1] in (403, 404):
                    problems.append(f"{self.layout.uri(obj_key)} is missing")
                    continue
                raise
            if head["ContentLength"] != expected.get("size") or head["ETag"] != expected.get("etag"):
                problems.append(
                    f"{self.layout.uri(obj_key)} changed: {head['ContentLength']} bytes, ETag {head['ETag']}; "
                    f"the manifest says {expected.get('size')} bytes, ETag {expected.get('etag')}"
                )
        record = Artifact(
            kind="manifest",
            location=self.layout.uri(key),
            attempt=doc.get("attempt"),
            rows=doc.get("rows"),
            detail=f"at {doc.get('published_at')}: {doc.get('rows')} rows in {len(referenced)} object(s), "
            "sizes and ETags verified",
        )
        leftovers = tuple(a for a in staged if not (a.kind == "object" and a.identity[1] in referenced))
        return Evidence(
            destination,
            record=record,
            holder=holder,
            leftovers=leftovers,
            problems=tuple(problems),
            context=tuple(context),
        )

    def _attempt_artifacts(self, s3: Any, run: Run) -> list[Artifact]:
        prefix = self.layout.run_attempts(run.dataset, run.run_date)
        found: list[Artifact] = []
        intents: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                is_intent = key.endswith(INTENT_SUFFIX)
                if is_intent:
                    intents.append(key[: -len(INTENT_SUFFIX)])
                found.append(
                    Artifact(
                        kind="upload-intent" if is_intent else "object",
                        location=self.layout.uri(key),
                        size_bytes=obj["Size"],
                        modified_at=obj["LastModified"].astimezone(dt.UTC),
                        attempt=key[len(prefix) :].split("/", 1)[0],
                        identity=("object", key, obj["ETag"]),
                    )
                )
        for upload in incomplete_uploads(s3, self.config.bucket, prefix, intents):
            found.append(
                Artifact(
                    kind="incomplete-upload",
                    location=self.layout.uri(upload["Key"]),
                    modified_at=upload["Initiated"].astimezone(dt.UTC),
                    attempt=upload["Key"][len(prefix) :].split("/", 1)[0],
                    detail=f"upload id {upload['UploadId'][:16]}...",
                    identity=("upload", upload["Key"], upload["UploadId"]),
                )
            )
        return found

    def _stray_in_published_location(self, s3: Any, run: Run) -> list[Artifact]:
        prefix = self.layout.published_location(run.dataset, run.run_date)
        listed = s3.list_objects_v2(Bucket=self.config.bucket, Prefix=prefix, MaxKeys=50).get("Contents", [])
        return [
            Artifact(
                kind="unexplained-object",
                location=self.layout.uri(o["Key"]),
                size_bytes=o["Size"],
                modified_at=o["LastModified"].astimezone(dt.UTC),
            )
            for o in listed
            if not o["Key"].endswith("/_MANIFEST.json")
        ]

    # -- clean (the loop is SinkDiagnostic.clean) -------------------------------------------------

    def run_lock(self, run: Run) -> Lease:
        # A live attempt's lease makes this raise RunInProgress, even one that started after the diagnosis.
        return run_lease(self.config, run, purpose="recover")

    def fence(self, diagnosis: Diagnosis, attempts: set[str]) -> None:
        """Occupy the empty commit point with a fence naming ``attempts``, so a manifest PUT of a
        dead attempt that is still in the network (``If-None-Match: *``) fails with 412 once its
        staging is gone, and an attempt that reads the fence knows it was fenced. A fence an earlier
        recover left there is extended to name ``attempts`` too, by a PUT conditional on its ETag
        (found from outside: it was left naming only the earlier attempts, so a stalled attempt
        whose staging this recover removed replaced it and published a manifest of deleted data).
        A published run needs none: its manifest already occupies the commit point."""
        if diagnosis.state is not State.ORPHANED:
            return
        key = self.layout.manifest(diagnosis.dataset, diagnosis.run_date)
        writer, reader = conditional_client(self.config), client(self.config)
        condition: dict[str, str] = {"IfNoneMatch": "*"}
        fenced = set(attempts)
        for _ in range(_FENCE_TRIES):
            body = fence_document(diagnosis.run_id, sorted(fenced))
            try:
                writer.put_object(
                    Bucket=self.config.bucket, Key=key, Body=body, ContentType="application/json", **condition
                )
                return
            except Exception as exc:
                if not is_condition_failure(exc) and not is_unknown_outcome(exc):
                    raise
            doc, etag = read_commit_point(reader, self.config.bucket, key)  # the commit point decides
            if doc is None:
                condition, fenced = {"IfNoneMatch": "*"}, set(attempts)
                continue
            if not is_fence(doc) or doc.get("run_id") != diagnosis.run_id:
                raise RecoveryNeeded(
                    f"the commit point {self.layout.uri(key)} is no longer empty (a manifest landed since the "
                    "diagnosis); nothing was removed: diagnose again",
                    diagnosis,
                )
            named = set(doc.get("fenced_attempts") or ())
            if attempts <= named:
                return  # a fence naming them is there (ours, its answer lost, or one before it)
            condition, fenced = {"IfMatch": str(etag)}, named | attempts
        raise RecoveryNeeded(
            f"the fence at {self.layout.uri(key)} changed under every try to extend it; nothing was removed: "
            "diagnose again",
            diagnosis,
        )

    def recheck(self, diagnosis: Diagnosis, artifact: Artifact) -> str | None:
        kind, key, token = artifact.identity
        if not key.startswith(self.layout.run_attempts(diagnosis.dataset, diagnosis.run_date)):
            return "outside this run's attempt prefixes"
        manifest = read_manifest(
            client(self.config), self.config.bucket, self.layout.manifest(diagnosis.dataset, diagnosis.run_date)
        )
        if manifest and key in {o.get("key") for o in manifest.get("objects", [])}:
            return "referenced by the manifest"
        if kind == "object":
            try:
                head = client(self.config).head_object(Bucket=self.config.bucket, Key=key)
            except Exception:
                return "already gone"
            if head["ETag"] != token:
                return "changed since the diagnosis; diagnose again"
        return None

    def remove(self, diagnosis: Diagnosis, artifact: Artifact) -> None:
        kind, key, token = artifact.identity
        s3 = client(self.config)
        if kind == "object":
            s3.delete_object(Bucket=self.config.bucket, Key=key)
            return
        try:
            s3.abort_multipart_upload(Bucket=self.config.bucket, Key=key, UploadId=token)
        except s3.exceptions.NoSuchUpload:
            raise Gone(artifact.location) from None

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        s3 = client(self.config)
        prefix = f"{self.layout.base(dataset)}/_attempts/"
        dates = set()
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.config.bucket, Prefix=prefix, Delimiter="/"
            ):
                for common in page.get("CommonPrefixes", []):
                    try:
                        dates.add(dt.date.fromisoformat(common["Prefix"][len(prefix) :].rstrip("/")))
                    except ValueError:
                        continue
        except Exception as exc:  # a missing bucket is the config's to fix (exit 2), the rest exit 5
            raise unavailable(self.config, "listing the run dates with leftovers", exc) from exc
        return sorted(dates)
