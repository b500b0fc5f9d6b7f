"""Fixtures of the Spark suite: one SparkSession for the module (a JVM start costs ~10 s), the
services' credentials in its environment before it starts (its Python workers inherit them), and
the refunds pipeline's output as the Parquet file every job reads."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pyspark", reason="the Spark suite needs pyspark (pip install 'atomic-publish[spark]')")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("the Spark suite needs Java 17+ (java on PATH or JAVA_HOME)", allow_module_level=True)

from tests.contract.conftest import reference  # noqa: F401  (the clean single-process publish)
from tests.contract.harness import DATE, HARNESSES, SinkHarness


@pytest.fixture(scope="session")
def refunds_parquet(tmp_path_factory: pytest.TempPathFactory, small_inputs) -> Path:  # type: ignore[no-untyped-def]
    """The rows a single-process publish of the small inputs publishes, as one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.refunds import load_merchants, settled_refunds

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
def spark_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """What Spark's processes need to reach the services: Postgres's password, MinIO's keys (moto
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


@pytest.fixture(scope="module")
def spark(spark_env):  # type: ignore[no-untyped-def]
    saved = {k: os.environ.get(k) for k in spark_env}
    os.environ.update(spark_env)
    from .faults import FaultyDataSource
    from .session import new_session

    session = new_session()
    session.dataSource.register(FaultyDataSource)
    yield session
    session.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> SinkHarness:
    needs, factory = HARNESSES[request.param]
    return factory(*(request.getfixturevalue(name) for name in needs))
