"""Fixtures of the Ray suite: one local Ray for the module (ray.init costs seconds), the services'
credentials in its environment before it starts (its workers inherit them), and the refunds
pipeline's output as the Parquet file every write reads."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="the Ray suite needs ray[data] (pip install 'atomic-publish[ray]')")

from tests.contract.conftest import reference  # noqa: F401  (the clean single-process publish)
from tests.contract.harness import HARNESSES, SinkHarness
from tests.engines import engine_environment


@pytest.fixture(scope="module")
def ray_local(engine_env):  # type: ignore[no-untyped-def]
    import ray

    # Ray runs its workers at nice 15 by default. Beside the other pytest workers on two cores they
    # then get a few percent of a CPU: one test took 192 s under three busy loops, 32 s at nice 0
    # (11 s on an idle machine), and the Ray module 550 s of a CI run. The raylet reads this variable.
    with engine_environment({**engine_env, "RAY_worker_niceness": "0"}):
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024 * 1024,
            log_to_driver=False,
            runtime_env={"env_vars": dict(engine_env)},
        )
        yield ray
        ray.shutdown()


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> SinkHarness:
    needs, factory = HARNESSES[request.param]
    return factory(*(request.getfixturevalue(name) for name in needs))
