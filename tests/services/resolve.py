"""One function per service: the environment's address, else Docker, else a local process."""

from __future__ import annotations

import os
from pathlib import Path

from . import docker
from .kafka import ENV_BOOTSTRAP, KafkaService, start_local_kafka
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


def s3(workdir: Path) -> S3Service:
    service = s3_from_environment()
    if service is not None:
        return service
    if docker.docker_available():
        return docker.s3()
    return start_local_s3(workdir / "s3")
