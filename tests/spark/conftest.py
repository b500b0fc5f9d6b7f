"""Fixtures of the Spark suite: one SparkSession for the module (a JVM start costs ~10 s), the
services' credentials in its environment before it starts (its Python workers inherit them), and
the refunds pipeline's output as the Parquet file every job reads."""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("pyspark", reason="the Spark suite needs pyspark (pip install 'atomic-publish[spark]')")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("the Spark suite needs Java 17+ (java on PATH or JAVA_HOME)", allow_module_level=True)

from tests.contract.conftest import reference  # noqa: F401  (the clean single-process publish)
from tests.contract.harness import HARNESSES, SinkHarness
from tests.engines import engine_environment


@pytest.fixture(scope="module")
def spark(engine_env):  # type: ignore[no-untyped-def]
    from .faults import FaultyDataSource
    from .session import new_session

    with engine_environment(engine_env):
        session = new_session()
        session.dataSource.register(FaultyDataSource)
        yield session
        session.stop()


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> SinkHarness:
    needs, factory = HARNESSES[request.param]
    return factory(*(request.getfixturevalue(name) for name in needs))
