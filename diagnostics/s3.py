"""Diagnosis of the S3 sink, from the bucket alone, scoped to the run's own prefixes.

- published: the run's manifest, whose objects all exist with the size and ETag it records;
- orphans: objects under the run's attempt prefixes that the manifest does not reference, and
  incomplete multipart uploads under them (attributed to their attempt by key, no age needed);
- RUNNING: an unexpired lease object of another attempt.

Cost: one GET of the manifest, a HEAD per referenced object, and listings scoped to
``<base>/_attempts/<run_date>/``: it grows with the run's own objects, never with the bucket.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from publishers._types import Run
from publishers.s3 import S3Layout, S3SinkConfig, client, read_manifest, run_lease

from .taxonomy import (
    Artifact,
    CleanReport,
    Diagnosis,
    LockHolder,
    State,
    attempts_of,
    nothing_to_clean,
    verdict_factory,
)


class S3Diagnostic:
    sink_name = "s3"

    def __init__(self, config: S3SinkConfig) -> None:
        self.config = config
        self.layout = S3Layout(config)

    def diagnose(self, run: Run) -> Diagnosis:
        now = dt.datetime.now(dt.UTC)
        s3 = client(self.config)
        bucket = self.config.bucket

        verdict = verdict_factory(self.sink_name, run, self.layout.uri(self.layout.base(run.dataset)), now)

        holder = run_lease(self.config, run).live_holder()
        staged = self._attempt_objects(s3, run) + self._uploads(s3, run)
        if holder is not None:
            return verdict(
                State.RUNNING,
                f"attempt {holder.get('attempt')} (pid {holder.get('pid')} on {holder.get('host')}) holds the run's "
                f"lease until {holder.get('expires_at')}",
                holder=LockHolder.from_lease(holder, self.layout.uri(self.layout.lease(run.dataset, run.run_date))),
                evidence=tuple(staged),
            )
        key = self.layout.manifest(run.dataset, run.run_date)
        try:
            response = s3.get_object(Bucket=bucket, Key=key)
            raw = response["Body"].read()
        except s3.exceptions.NoSuchKey:
            response, raw = None, None
        stray = self._stray_in_published_location(s3, run)
        if raw is None:
            if stray:
                where = self.layout.uri(self.layout.published_location(run.dataset, run.run_date))
                return verdict(
                    State.UNKNOWN,
                    f"objects at the published location {where} without a manifest: data that no evidence explains",
                    evidence=tuple(stray + staged),
                )
            if staged:
                return verdict(
                    State.ORPHANED,
                    f"no manifest; {len(staged)} leftover(s) of dead attempt(s) {attempts_of(staged)}",
                    evidence=tuple(staged),
                    orphans=tuple(staged),
                )
            return verdict(State.NOTHING_IN_FLIGHT, "no manifest and nothing left behind")

        manifest_art = Artifact(
            kind="manifest",
            location=self.layout.uri(key),
            size_bytes=len(raw),
            modified_at=response["LastModified"].astimezone(dt.UTC) if response else None,
        )
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            return verdict(
                State.UNKNOWN, f"the manifest {self.layout.uri(key)} is not JSON: {exc}", evidence=(manifest_art,)
            )
        manifest_art = Artifact(
            kind="manifest",
            location=manifest_art.location,
            size_bytes=manifest_art.size_bytes,
            modified_at=manifest_art.modified_at,
            attempt=manifest.get("attempt"),
            rows=manifest.get("rows"),
        )
        problems = []
        if manifest.get("run_id") != run.run_id:
            problems.append(f"the manifest names run {manifest.get('run_id')!r}")
        referenced = {o["key"]: o for o in manifest.get("objects", [])}
        for obj_key, expected in referenced.items():
            try:
                head = s3.head_object(Bucket=bucket, Key=obj_key)
            except Exception:
                problems.append(f"{self.layout.uri(obj_key)} is missing")
                continue
            if head["ContentLength"] != expected.get("size") or head["ETag"] != expected.get("etag"):
                problems.append(
                    f"{self.layout.uri(obj_key)} changed: {head['ContentLength']} bytes, ETag {head['ETag']}; "
                    f"the manifest says {expected.get('size')} bytes, ETag {expected.get('etag')}"
                )
        if stray:
            problems.append(f"{len(stray)} object(s) at the published location besides the manifest")
        if problems:
            return verdict(State.UNKNOWN, "; ".join(problems), evidence=(manifest_art, *stray, *staged))
        orphans = [
            a for a in staged if a.kind != "object" or a.location not in {self.layout.uri(k) for k in referenced}
        ]
        if orphans:
            return verdict(
                State.PUBLISHED_WITH_ORPHANS,
                f"published by attempt {manifest.get('attempt')}; {len(orphans)} leftover(s) of attempt(s) "
                f"{attempts_of(orphans)}",
                evidence=(manifest_art, *orphans),
                orphans=tuple(orphans),
            )
        return verdict(
            State.DONE,
            f"published by attempt {manifest.get('attempt')} at {manifest.get('published_at')}: {manifest.get('rows')} "
            f"rows in {len(referenced)} object(s), sizes and ETags verified",
            evidence=(manifest_art,),
        )

    # -- evidence -------------------------------------------------------------------------------

    def _attempt_objects(self, s3: Any, run: Run) -> list[Artifact]:
        prefix = self.layout.run_attempts(run.dataset, run.run_date)
        found = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                attempt = obj["Key"][len(prefix) :].split("/", 1)[0]
                found.append(
                    Artifact(
                        kind="object",
                        location=self.layout.uri(obj["Key"]),
                        size_bytes=obj["Size"],
                        modified_at=obj["LastModified"].astimezone(dt.UTC),
                        attempt=attempt,
                        identity=("object", obj["Key"], obj["ETag"]),
                    )
                )
        return found

    def _uploads(self, s3: Any, run: Run) -> list[Artifact]:
        prefix = self.layout.run_attempts(run.dataset, run.run_date)
        found = []
        response = s3.list_multipart_uploads(Bucket=self.config.bucket, Prefix=prefix)
        for upload in response.get("Uploads", []):
            attempt = upload["Key"][len(prefix) :].split("/", 1)[0]
            found.append(
                Artifact(
                    kind="incomplete-upload",
                    location=self.layout.uri(upload["Key"]),
                    modified_at=upload["Initiated"].astimezone(dt.UTC),
                    attempt=attempt,
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
            if not o["Key"].endswith("/" + "_MANIFEST.json")
        ]

    # -- clean ----------------------------------------------------------------------------------

    def clean(self, diagnosis: Diagnosis, *, older_than: dt.timedelta | None = None) -> CleanReport:
        early = nothing_to_clean(diagnosis)
        if early is not None:
            return early
        operator = Run(diagnosis.dataset, diagnosis.run_date)
        s3 = client(self.config)
        with run_lease(self.config, operator):  # raises RunInProgress if an attempt started since the diagnosis
            removed: list[Artifact] = []
            skipped: list[tuple[Artifact, str]] = []
            now = dt.datetime.now(dt.UTC)
            scope = self.layout.run_attempts(diagnosis.dataset, diagnosis.run_date)
            referenced = self._referenced(s3, operator)
            for art in diagnosis.orphans:
                age = art.age_seconds(now)
                if older_than is not None and (age is None or age < older_than.total_seconds()):
                    skipped.append((art, f"younger than {older_than}"))
                    continue
                kind, key, token = art.identity
                if not key.startswith(scope) or key in referenced:
                    skipped.append((art, "outside this run's attempt prefixes, or referenced by the manifest"))
                    continue
                if kind == "object":
                    try:
                        head = s3.head_object(Bucket=self.config.bucket, Key=key)
                    except Exception:
                        skipped.append((art, "already gone"))
                        continue
                    if head["ETag"] != token:
                        skipped.append((art, "changed since the diagnosis; diagnose again"))
                        continue
                    s3.delete_object(Bucket=self.config.bucket, Key=key)
                else:
                    try:
                        s3.abort_multipart_upload(Bucket=self.config.bucket, Key=key, UploadId=token)
                    except s3.exceptions.NoSuchUpload:
                        skipped.append((art, "already gone"))
                        continue
                removed.append(art)
        return CleanReport(
            run_id=diagnosis.run_id, state_before=diagnosis.state, removed=tuple(removed), skipped=tuple(skipped)
        )

    def _referenced(self, s3: Any, run: Run) -> set[str]:
        manifest = read_manifest(s3, self.config.bucket, self.layout.manifest(run.dataset, run.run_date))
        return {o["key"] for o in (manifest or {}).get("objects", [])}

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        s3 = client(self.config)
        prefix = f"{self.layout.base(dataset)}/_attempts/"
        dates = set()
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.config.bucket, Prefix=prefix, Delimiter="/"
        ):
            for common in page.get("CommonPrefixes", []):
                try:
                    dates.add(dt.date.fromisoformat(common["Prefix"][len(prefix) :].rstrip("/")))
                except ValueError:
                    continue
        return sorted(dates)
