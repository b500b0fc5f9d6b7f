"""Docker through testcontainers, used when a Docker engine answers (never on this project's CI
machines, which have no engine: there the harness starts local processes instead)."""

from __future__ import annotations

import os
from typing import Any

from .kafka import KafkaService
from .postgres import PostgresService
from .s3 import DEFAULT_BUCKET, S3Service

ENV_USE_DOCKER = "ATOMIC_PUBLISH_TEST_DOCKER"  # "0" forces local processes even where Docker answers


def docker_available() -> bool:
    if os.environ.get(ENV_USE_DOCKER, "1") == "0":
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:  # no client library, no socket, no engine: all mean "no Docker"
        return False


class _Stoppable:
    def __init__(self, container: Any) -> None:
        self.container = container

    def stop(self) -> None:
        self.container.stop()


def postgres() -> PostgresService:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16", driver=None).with_command(
        "postgres -c fsync=off -c max_prepared_transactions=10"
    )
    container.start()
    service = PostgresService(container.get_connection_url(), "docker")
    service.stop = _Stoppable(container).stop  # type: ignore[method-assign]
    return service


def kafka() -> KafkaService:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft()
    container.start()
    service = KafkaService(container.get_bootstrap_server(), "docker")
    service.stop = _Stoppable(container).stop  # type: ignore[method-assign]
    return service


def s3() -> S3Service:
    from testcontainers.minio import MinioContainer

    container = MinioContainer()
    container.start()
    config = container.get_config()
    service = S3Service(
        f"http://{config['endpoint']}",
        DEFAULT_BUCKET,
        "docker",
        credentials={"aws_access_key_id": config["access_key"], "aws_secret_access_key": config["secret_key"]},
    )
    service.create_bucket(service.bucket)
    service.stop = _Stoppable(container).stop  # type: ignore[method-assign]
    return service
