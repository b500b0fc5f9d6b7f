"""What the engine suites (tests/spark, tests/ray) share: the input every job reads, and the
services' credentials for the engine's worker processes."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.harness import DATE


@pytest.fixture(scope="session")
def refunds_parquet(tmp_path_factory: pytest.TempPathFactory, small_inputs) -> Path:  # type: ignore[no-untyped-def]
    """The rows a single-process publish of the small inputs publishes, as one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from atomic_publish.pipelines.refunds import load_merchants, settled_refunds

    refunds, merchants = small_inputs
    output = settled_refunds(str(refunds), load_merchants(str(merchants)), dt.date.fromisoformat(DATE))
    path = tmp_path_factory.mktemp("spark-input") / "refunds.parquet"
    pq.write_table(pa.Table.from_batches(list(output), schema=output.schema), path)
    return path


def _available(request: pytest.FixtureRequest, fixture: str):  # type: ignore[no-untyped-def]
    try:
        return request.getfixturevalue(fixture)
    except pytest.skip.Exception:
        return None


@pytest.fixture(scope="session")
def engine_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """What an engine's processes (Spark, Ray) need to reach the services: Postgres's password, MinIO's keys (moto
    takes any). Put in os.environ before a session starts."""
    env: dict[str, str] = {}
    pg = _available(request, "postgres_service")
    if pg is not None:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(pg.dsn).get("password")
        if password:
            env["PGPASSWORD"] = str(password)
    minio = _available(request, "minio_service")
    env.update(minio.env() if minio is not None else {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    return env


@contextlib.contextmanager
def engine_environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in os.environ while an engine (Spark, Ray) starts and runs: its processes inherit it."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
