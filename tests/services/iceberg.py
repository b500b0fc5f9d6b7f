"""Iceberg catalogs for the tests: pyiceberg's SQL catalog on SQLite (the embedded default) and on
the Postgres service, with the warehouse on local disk or on the S3 service; a REST catalog when
its address is given (compose/ starts one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .postgres import PostgresService
from .s3 import S3Service

ENV_REST_URI = "ATOMIC_PUBLISH_TEST_ICEBERG_REST_URI"


def s3_properties(s3: S3Service) -> dict[str, str]:
    props = {"s3.endpoint": s3.endpoint, "s3.region": s3.region}
    if s3.credentials:
        props["s3.access-key-id"] = s3.credentials["aws_access_key_id"]
        props["s3.secret-access-key"] = s3.credentials["aws_secret_access_key"]
    return props


def sql_catalog(name: str, uri: str, warehouse: str, extra: dict[str, str] | None = None) -> Any:
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(name, **{"uri": uri, "warehouse": warehouse, **(extra or {})})


def sqlite_catalog(workdir: Path, warehouse: str | None = None, extra: dict[str, str] | None = None) -> Any:
    workdir.mkdir(parents=True, exist_ok=True)
    warehouse = warehouse or (workdir / "warehouse").as_uri()
    return sql_catalog("sqlite", f"sqlite:///{workdir / 'catalog.db'}", warehouse, extra)


def postgres_catalog(pg: PostgresService, dbname: str, warehouse: str, extra: dict[str, str] | None = None) -> Any:
    dsn = pg.create_database(dbname)
    # SQLAlchemy URL with the psycopg 3 driver; the harness's DSN is already a postgresql:// URL.
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(dsn)
    uri = f"postgresql+psycopg://{p['user']}:{p.get('password', '')}@{p['host']}:{p['port']}/{p['dbname']}"
    return sql_catalog("postgres", uri, warehouse, extra)


def rest_catalog() -> Any | None:
    uri = os.environ.get(ENV_REST_URI)
    if not uri:
        return None
    from pyiceberg.catalog.rest import RestCatalog

    props = {"uri": uri}
    if os.environ.get("ATOMIC_PUBLISH_TEST_S3_ENDPOINT"):
        props["s3.endpoint"] = os.environ["ATOMIC_PUBLISH_TEST_S3_ENDPOINT"]
    return RestCatalog("rest", **props)
