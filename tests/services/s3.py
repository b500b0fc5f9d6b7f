"""S3 for the tests: two real servers reached over HTTP, each started as a local process on a free
127.0.0.1 port with the bucket ``atomic-publish`` created:

- moto's server (``start_local_s3``): honours If-None-Match and If-Match; keeps everything in memory;
- MinIO (``tests/services/minio.py``): a real object store on disk, with S3's own validation (bucket
  names, multipart uploads, conditional writes); it also has a ``warehouse`` bucket for Iceberg.

``ATOMIC_PUBLISH_TEST_S3_SERVER=minio|moto|both`` (default both) selects which of them the
``s3_service`` fixture runs each S3 test against; ``ATOMIC_PUBLISH_TEST_S3_ENDPOINT`` (with
``ATOMIC_PUBLISH_TEST_S3_BUCKET``) points every S3 test at one given endpoint instead, with the
credentials the environment gives (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, else boto3's default chain: profiles, SSO, ...).

Fault tests: a service started here as a local process can be killed and started again on the same
address (and, for MinIO, the same data directory): ``service.kill()`` (SIGKILL, no shutdown at all),
``service.start_again()``, or ``service.restart()`` for both. moto keeps its state in memory, so a
restarted moto is empty (its buckets are created again); MinIO keeps every object and upload.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._process import ServiceError, ServiceProcess, free_port

ENV_ENDPOINT = "ATOMIC_PUBLISH_TEST_S3_ENDPOINT"
ENV_BUCKET = "ATOMIC_PUBLISH_TEST_S3_BUCKET"
ENV_SERVER = "ATOMIC_PUBLISH_TEST_S3_SERVER"
SERVERS = ("moto", "minio")  # in this order; the first selected one serves requests that name none
DEFAULT_BUCKET = "atomic-publish"
# moto accepts any credentials; these are throwaway values for the local endpoint only.
_LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# The environment variables a client (the CLI, a subprocess) reads each credential from.
_CREDENTIAL_VARIABLES = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
}


@dataclass
class S3Service:
    endpoint: str
    bucket: str
    origin: str  # "env", "docker" or "local"
    region: str = "us-east-1"
    # boto3 client keyword arguments (aws_access_key_id, ...); empty: boto3's default chain.
    credentials: dict[str, str] = field(default_factory=dict)
    process: ServiceProcess | None = None
    startup_seconds: float | None = None
    server: str = "s3"  # "moto", "minio", or "s3" for an endpoint given by the environment
    buckets: tuple[str, ...] = ()  # created at start (and again by start_again)
    ready: Callable[[], bool] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def env(self) -> dict[str, str]:
        """The credentials as environment variables, for a process (the CLI) that reads them so."""
        return {_CREDENTIAL_VARIABLES[k]: v for k, v in self.credentials.items() if k in _CREDENTIAL_VARIABLES}

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
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
            client.create_bucket(Bucket=name)
        return name

    # -- fault injection: only for a server this harness started as a local process -------------

    def _local_process(self) -> ServiceProcess:
        if self.process is None or self.ready is None:
            raise ServiceError(
                f"the S3 service at {self.endpoint} ({self.origin}) was not started by the harness as a "
                "local process: it cannot be killed or restarted from a test"
            )
        return self.process

    def kill(self) -> None:
        """SIGKILL the server (its whole process group) and wait for it: a crash, no clean shutdown.
        The address and the data directory stay as they are for ``start_again``."""
        process = self._local_process()
        if process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.stop()  # reaps it, closes its log; removes nothing (no remove_after)

    def start_again(self, timeout: float = 30.0) -> float:
        """Start the killed (or stopped) server again with the same command line: same port, same
        data directory, same credentials. Returns the seconds it took to answer again."""
        process = self._local_process()
        if process.alive():
            raise ServiceError(f"{process.name} is still running (pid {process.pid}): kill() it first")
        process.start()
        assert self.ready is not None
        seconds = process.wait_ready(self.ready, timeout, f"{process.name} started again at {self.endpoint}")
        for bucket in self.buckets:
            self.create_bucket(bucket)  # a no-op on MinIO, which kept them; moto forgot them
        return seconds

    def restart(self, timeout: float = 30.0) -> float:
        """``kill()`` then ``start_again()``."""
        self.kill()
        return self.start_again(timeout)


def environment_credentials() -> dict[str, str]:
    """AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) when the environment sets
    them; otherwise nothing, and boto3 (and the CLI) use their default chain (profiles, SSO, ...)."""
    found = {k: os.environ[v] for k, v in _CREDENTIAL_VARIABLES.items() if os.environ.get(v)}
    if "aws_access_key_id" in found and "aws_secret_access_key" in found:
        return found
    return {}


def from_environment() -> S3Service | None:
    endpoint = os.environ.get(ENV_ENDPOINT)
    if not endpoint:
        return None
    service = S3Service(
        endpoint,
        os.environ.get(ENV_BUCKET, DEFAULT_BUCKET),
        "env",
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        credentials=environment_credentials(),
    )
    service.create_bucket(service.bucket)
    return service


def selected_servers() -> list[str]:
    """The local S3 servers the tests run against: ATOMIC_PUBLISH_TEST_S3_SERVER=minio|moto|both."""
    value = os.environ.get(ENV_SERVER, "both").strip().lower() or "both"
    if value == "both":
        return list(SERVERS)
    if value in SERVERS:
        return [value]
    raise ServiceError(f"{ENV_SERVER}={value!r}: expected one of minio, moto, both")


def servers_for_tests() -> list[str]:
    """What the tests' S3 cases run on: ["env"] when an endpoint is given, else the selected local
    servers (both moto and MinIO by default)."""
    return ["env"] if os.environ.get(ENV_ENDPOINT) else selected_servers()


FIXTURE_OF = {"env": "s3_env_service", "moto": "moto_service", "minio": "minio_service"}


def start_local_s3(workdir: Path, timeout: float = 30.0) -> S3Service:
    """moto's server."""
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
        server="moto",
        buckets=(DEFAULT_BUCKET,),
        ready=ready,
    )
    service.create_bucket(service.bucket)
    return service
