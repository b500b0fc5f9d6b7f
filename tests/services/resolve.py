"""One function per service: the environment's address, else Docker, else a local process."""

from __future__ import annotations

import os
from pathlib import Path

from . import docker
from .iceberg_rest import IcebergRestService, start_local_iceberg_rest
from .iceberg_rest import from_environment as iceberg_rest_from_environment
from .kafka import ENV_BOOTSTRAP, KafkaService, start_local_kafka
from .minio import WAREHOUSE_BUCKET, start_local_minio
from .postgres import ENV_DSN, PostgresService, start_local_postgres
from .s3 import S3Service, start_local_s3
from .s3 import from_environment as s3_from_environment


def postgres(workdir: Path) -> PostgresService:
    if os.environ.get(ENV_DSN):
        return PostgresService(os.environ[ENV_DSN], "env")
    if docker.docker_available():
        return docker.postgres()
    return start_local_postgres()


def kafka(workdir: Path) -> KafkaService:
    if os.environ.get(ENV_BOOTSTRAP):
        return KafkaService(os.environ[ENV_BOOTSTRAP], "env")
    if docker.docker_available():
        return docker.kafka()
    return start_local_kafka(workdir / "kafka")


def minio(workdir: Path) -> S3Service:
    """Always MinIO (never the environment's endpoint, which may be anything): Docker's when an
    engine answers, else a local process."""
    if docker.docker_available():
        service = docker.s3()
        service.server = "minio"
        service.buckets = (service.bucket, WAREHOUSE_BUCKET)
        service.create_bucket(WAREHOUSE_BUCKET)
        return service
    return start_local_minio(workdir / "minio")


def s3(workdir: Path, server: str = "moto") -> S3Service:
    """The environment's endpoint if one is given; else the requested local server: ``minio``
    (Docker's MinIO when an engine answers, else a local process) or ``moto`` (a local process)."""
    service = s3_from_environment()
    if service is not None:
        return service
    if server == "minio":
        return minio(workdir)
    if server == "moto":
        return start_local_s3(workdir / "moto")
    raise ValueError(f"unknown S3 server {server!r}: expected 'minio' or 'moto'")


def iceberg_rest(workdir: Path, warehouse: str | None = None, s3: S3Service | None = None) -> IcebergRestService:
    """The environment's REST catalog (ATOMIC_PUBLISH_TEST_ICEBERG_REST_URI) if given, else Apache
    Iceberg's RESTCatalogServer as a local process, its warehouse on local disk unless ``s3`` is given."""
    service = iceberg_rest_from_environment()
    if service is not None:
        return service
    return start_local_iceberg_rest(workdir, warehouse, s3)
