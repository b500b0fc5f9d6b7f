"""S3 for the tests: moto's server as a separate HTTP endpoint (real requests, real conditional
writes: If-None-Match and If-Match are honoured), with a bucket created at start."""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ._process import ServiceError, ServiceProcess, free_port

ENV_ENDPOINT = "ATOMIC_PUBLISH_TEST_S3_ENDPOINT"
ENV_BUCKET = "ATOMIC_PUBLISH_TEST_S3_BUCKET"
DEFAULT_BUCKET = "atomic-publish"
# moto accepts any credentials; these are throwaway values for the local endpoint only.
_LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class S3Service:
    endpoint: str
    bucket: str
    origin: str
    region: str = "us-east-1"
    credentials: dict[str, str] = field(default_factory=dict)
    process: ServiceProcess | None = None
    startup_seconds: float | None = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            **self.credentials,
        )

    def create_bucket(self, name: str) -> str:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name


def from_environment() -> S3Service | None:
    endpoint = os.environ.get(ENV_ENDPOINT)
    if not endpoint:
        return None
    service = S3Service(
        endpoint, os.environ.get(ENV_BUCKET, DEFAULT_BUCKET), "env", region=os.environ.get("AWS_REGION", "us-east-1")
    )
    service.create_bucket(service.bucket)
    return service


def start_local_s3(workdir: Path, timeout: float = 30.0) -> S3Service:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise ServiceError("moto's server is not installed: pip install 'moto[server]'") from None
    port = free_port()
    process = ServiceProcess(
        "moto-s3",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        workdir / "moto.log",
        env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
    )
    process.start()
    endpoint = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1) as response:
            return response.status == 200

    seconds = process.wait_ready(ready, timeout, f"moto server at {endpoint}")
    service = S3Service(
        endpoint,
        DEFAULT_BUCKET,
        "local",
        credentials=dict(_LOCAL_CREDENTIALS),
        process=process,
        startup_seconds=seconds,
    )
    service.create_bucket(service.bucket)
    return service
