"""Iceberg catalogs for the tests: pyiceberg's SQL catalog on SQLite (the embedded default) and on
the Postgres service, with the warehouse on local disk or on the S3 service; and a REST catalog:
the one ATOMIC_PUBLISH_TEST_ICEBERG_REST_URI names (compose/ starts one), else Apache Iceberg's
RESTCatalogServer that the ``iceberg_rest_service`` fixture starts (tests/services/iceberg_rest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .iceberg_rest import ENV_REST_URI, IcebergRestService
from .iceberg_rest import from_environment as rest_from_environment
from .postgres import PostgresService
from .s3 import S3Service

__all__ = ["ENV_REST_URI", "postgres_catalog", "rest_catalog", "s3_properties", "sql_catalog", "sqlite_catalog"]


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


def rest_catalog(service: IcebergRestService | None = None) -> Any | None:
    """A pyiceberg RestCatalog: on the REST catalog the environment names, which wins; else on
    ``service`` (the ``iceberg_rest_service`` fixture's server); None when there is neither."""
    chosen = rest_from_environment() or service
    return chosen.catalog() if chosen is not None else None
