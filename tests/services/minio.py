"""MinIO for the tests: the real object store, one local process on 127.0.0.1.

The binary is built from MinIO's Go module by ``scripts/fetch-minio`` (cached; the first build takes
minutes, later calls only check). Each start gets fresh random root credentials (never the
well-known defaults), a data directory in the session's work directory, the S3 API and the console
on free 127.0.0.1 ports, and the buckets ``atomic-publish`` and ``warehouse`` (for Iceberg).

The returned ``S3Service`` carries the credentials; a test hands them to the CLI as
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``service.env()``). For fault tests,
``service.kill()`` / ``service.start_again()`` / ``service.restart()`` SIGKILL the server and start
it again on the same port and data directory: every object and open multipart upload survives.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

from ._process import ServiceError, ServiceProcess, free_port
from .s3 import DEFAULT_BUCKET, S3Service

REPO = Path(__file__).resolve().parents[2]
WAREHOUSE_BUCKET = "warehouse"


def minio_binary() -> Path:
    """The MinIO server binary, built on first use and cached (scripts/fetch-minio)."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "fetch-minio")], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ServiceError(f"could not get the MinIO server:\n{proc.stderr.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


def start_local_minio(workdir: Path, timeout: float = 30.0) -> S3Service:
    started = time.monotonic()
    binary = minio_binary()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    console_port = free_port()
    while console_port == port:
        console_port = free_port()
    user = "ap-" + secrets.token_hex(8)
    password = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "MINIO_ROOT_USER": user,
        "MINIO_ROOT_PASSWORD": password,
        "MINIO_UPDATE": "off",  # never look for a newer release
        "MINIO_BROWSER_REDIRECT": "off",
    }
    process = ServiceProcess(
        "minio",
        [
            str(binary),
            "server",
            str(data),
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{console_port}",
            "--certs-dir",
            str(workdir / "certs"),  # not ~/.minio/certs
            "--quiet",
            "--anonymous",  # no credentials or endpoints in its log
        ],
        workdir / "minio.log",
        env=env,
    )
    process.start()
    endpoint = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(endpoint + "/minio/health/live", timeout=1) as response:
            return response.status == 200

    process.wait_ready(ready, timeout, f"MinIO at {endpoint}, data {data}")
    service = S3Service(
        endpoint,
        DEFAULT_BUCKET,
        "local",
        credentials={"aws_access_key_id": user, "aws_secret_access_key": password},
        process=process,
        server="minio",
        buckets=(DEFAULT_BUCKET, WAREHOUSE_BUCKET),
        ready=ready,
    )
    for bucket in service.buckets:
        service.create_bucket(bucket)
    service.startup_seconds = time.monotonic() - started
    return service
