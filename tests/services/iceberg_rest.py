"""Apache Iceberg's REST catalog for the tests: the project's own RESTCatalogServer (the REST
Compatibility Kit's server, from iceberg-open-api's test-fixtures jar), one local JVM.

Jars come from Maven Central (scripts/fetch-iceberg-rest, cached). The server keeps its catalog in
a JdbcCatalog on a SQLite file in the work directory; the warehouse is a directory in the work
directory (``file://``, HadoopFileIO) by default, or a bucket on an S3 service (``s3://warehouse/``,
S3FileIO, path-style, the endpoint given; credentials reach the JVM by ``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY`` in its environment, never as catalog properties, which it logs).

RESTCatalogServer itself listens on every interface; the launcher that fetch-iceberg-rest compiles
(``org.apache.iceberg.rest.LoopbackRESTCatalogServer``) runs the same server on 127.0.0.1 only.
Configuration is RESTCatalogServer's own: ``CATALOG_*`` environment variables become catalog
properties (``CATALOG_URI`` -> ``uri``, ``CATALOG_IO__IMPL`` -> ``io-impl``, ``CATALOG_REST_PORT`` ->
``rest.port``, ...; see RCKUtils.environmentCatalogConfig).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._process import ServiceError, ServiceProcess, free_port
from .kafka import java_binary
from .s3 import S3Service

REPO = Path(__file__).resolve().parents[2]
ENV_REST_URI = "ATOMIC_PUBLISH_TEST_ICEBERG_REST_URI"
MAIN_CLASS = "org.apache.iceberg.rest.LoopbackRESTCatalogServer"
# As for Kafka: the serial GC and the C1-only JIT make a short-lived JVM start faster on two cores.
DEFAULT_JVM_OPTS = "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"


@dataclass
class IcebergRestService:
    uri: str
    origin: str  # "env" or "local"
    warehouse: str | None = None
    s3: S3Service | None = None  # where the warehouse is, when it is on S3
    process: ServiceProcess | None = None
    startup_seconds: float | None = None
    # Client-side catalog properties (pyiceberg), e.g. the S3 endpoint for the data files.
    properties: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def catalog(self, name: str = "rest", **extra: str) -> Any:
        """A pyiceberg RestCatalog on this server."""
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(name, **{"uri": self.uri, **self.properties, **extra})


def from_environment() -> IcebergRestService | None:
    """The REST catalog ATOMIC_PUBLISH_TEST_ICEBERG_REST_URI names (compose/ starts one), with the
    S3 endpoint of ATOMIC_PUBLISH_TEST_S3_ENDPOINT for its data files when that is set."""
    uri = os.environ.get(ENV_REST_URI)
    if not uri:
        return None
    properties = {}
    if os.environ.get("ATOMIC_PUBLISH_TEST_S3_ENDPOINT"):
        properties["s3.endpoint"] = os.environ["ATOMIC_PUBLISH_TEST_S3_ENDPOINT"]
    return IcebergRestService(uri, "env", properties=properties)


def iceberg_rest_jars() -> Path:
    """The jar directory, fetched from Maven Central on first use and cached."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "fetch-iceberg-rest")], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ServiceError(f"could not get the Iceberg REST catalog's jars:\n{proc.stderr.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


def s3_client_properties(s3: S3Service) -> dict[str, str]:
    """pyiceberg's FileIO properties to read and write the warehouse's data files on ``s3``."""
    props = {"s3.endpoint": s3.endpoint, "s3.region": s3.region}  # pyarrow addresses paths by default
    if s3.credentials.get("aws_access_key_id"):
        props["s3.access-key-id"] = s3.credentials["aws_access_key_id"]
        props["s3.secret-access-key"] = s3.credentials["aws_secret_access_key"]
    if s3.credentials.get("aws_session_token"):
        props["s3.session-token"] = s3.credentials["aws_session_token"]
    return props


def start_local_iceberg_rest(
    workdir: Path, warehouse: str | None = None, s3: S3Service | None = None, timeout: float = 60.0
) -> IcebergRestService:
    """Start RESTCatalogServer on a free 127.0.0.1 port. ``warehouse``: a location for the tables'
    files; default ``file://<workdir>/warehouse``, or ``s3://warehouse/`` when ``s3`` is given."""
    started = time.monotonic()
    java = java_binary()
    jars = iceberg_rest_jars()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOG_")}
    env.update(
        {
            "CATALOG_CATALOG__IMPL": "org.apache.iceberg.jdbc.JdbcCatalog",
            "CATALOG_URI": f"jdbc:sqlite:{workdir / 'catalog.db'}",
            "CATALOG_JDBC_SCHEMA__VERSION": "V1",
            "CATALOG_REST_HOST": "127.0.0.1",
            "CATALOG_REST_PORT": str(port),
        }
    )
    client_properties: dict[str, str] = {}
    if s3 is None:
        if warehouse is None:
            (workdir / "warehouse").mkdir(exist_ok=True)
            warehouse = (workdir / "warehouse").as_uri()
    else:
        warehouse = warehouse or "s3://warehouse/"
        env.update(
            {
                "CATALOG_IO__IMPL": "org.apache.iceberg.aws.s3.S3FileIO",
                "CATALOG_S3_ENDPOINT": s3.endpoint,
                "CATALOG_S3_PATH__STYLE__ACCESS": "true",
                "AWS_REGION": s3.region,
            }
        )
        env.update(s3.env())  # the AWS SDK's default chain reads them; the server never logs them
        client_properties = s3_client_properties(s3)
    env["CATALOG_WAREHOUSE"] = warehouse
    opts = os.environ.get("ICEBERG_REST_JVM_OPTS", DEFAULT_JVM_OPTS).split()
    process = ServiceProcess(
        "iceberg-rest",
        [java, *opts, "-Djava.awt.headless=true", "-cp", f"{jars}/*", MAIN_CLASS],
        workdir / "iceberg-rest.log",
        env=env,
        cwd=workdir,
    )
    process.start()
    uri = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(uri + "/v1/config", timeout=1) as response:
            return response.status == 200 and "defaults" in json.load(response)

    process.wait_ready(ready, timeout, f"REST catalog at {uri}, log {workdir / 'iceberg-rest.log'}")
    return IcebergRestService(
        uri,
        "local",
        warehouse=warehouse,
        s3=s3,
        process=process,
        startup_seconds=time.monotonic() - started,
        properties=client_properties,
    )
