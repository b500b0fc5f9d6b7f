"""The contract suite every sink passes, shipped as a pytest plugin so a third-party sink runs the
very same tests as the built-in five (``examples/sqlite_sink`` is one)::

    # conftest.py of your sink's tests
    pytest_plugins = ["atomic_publish.testing"]

    # test_contract.py
    import pytest
    from atomic_publish.sdk import State
    from atomic_publish.testing import ContractSuite, PartsSuite, SinkHarness

    class TestMySink(ContractSuite, PartsSuite):   # or OnePieceSuite, for a sink that takes one piece
        crash_points = ("after_extract", "after_lock", "mid_stage", "after_stage", "after_commit")

        @pytest.fixture
        def harness(self):
            return SinkHarness(name="mysink", make_config=..., expected_after_crash={...},
                               published_bytes=..., gated_read=...)

Every test starts the real CLI (``python -m atomic_publish``) in a subprocess against the sink's
real destination: the job is the refunds pipeline over generated inputs, killed at each crash point
(``PUBLISH_CRASH_AT``; the sink calls ``atomic_publish.sdk.crash_point`` at ``mid_stage``,
``after_stage`` and ``after_commit``). The processes find the sink by its ``type`` in the
configuration: an installed entry point, or an import path (``type = "my_sink:SINK"`` with the
module on ``extra_env``'s PYTHONPATH).

This module is the plugin: its fixtures (``contract_inputs``, ``contract_medium_inputs``,
``contract_reference``) and its ``crash_point`` parametrization.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# The suite's assertions say what they compared (pytest rewrites the modules it is told about first).
pytest.register_assert_rewrite("atomic_publish.testing._suite", "atomic_publish.testing._harness")

from ._harness import DATASET, DATE, CliResult, SinkHarness, cli_env, loaded, refunds_job, run_cli, start_cli  # noqa: E402
from ._suite import ContractSuite, OnePieceSuite, PartsSuite  # noqa: E402

__all__ = [
    "DATASET",
    "DATE",
    "CliResult",
    "ContractSuite",
    "OnePieceSuite",
    "PartsSuite",
    "SinkHarness",
    "cli_env",
    "contract_inputs",
    "contract_medium_inputs",
    "contract_reference",
    "loaded",
    "pytest_configure",
    "pytest_generate_tests",
    "refunds_job",
    "run_cli",
    "start_cli",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "contract: the shared crash/race/idempotence suite run against every sink")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A ContractSuite's crash test runs once per crash point its class names."""
    if "crash_point" in metafunc.fixturenames and metafunc.cls is not None and issubclass(metafunc.cls, ContractSuite):
        points = list(metafunc.cls.crash_points)
        if not points:
            raise pytest.UsageError(f"{metafunc.cls.__name__} names no crash_points: the crash test would not run")
        metafunc.parametrize("crash_point", points)


@pytest.fixture(scope="session")
def contract_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The refunds pipeline's inputs for most cases: deterministic, about 1 MB (10,000 refunds)."""
    from ..pipelines import generate_inputs

    return generate_inputs(tmp_path_factory.mktemp("contract-inputs"), rows=10_000, merchants=500)


@pytest.fixture(scope="session")
def contract_medium_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Large enough (about 20 MB) that a publish takes long enough to be observed mid-way."""
    from ..pipelines import generate_inputs

    return generate_inputs(tmp_path_factory.mktemp("contract-inputs-medium"), rows=200_000, merchants=2_000)


@pytest.fixture(scope="session")
def contract_reference(tmp_path_factory: pytest.TempPathFactory, contract_inputs: Any) -> Any:
    """The published bytes of a clean run of each harness (by name), computed once: what every
    recovered run must equal byte for byte."""
    cache: dict[str, bytes] = {}

    def clean_run_bytes(harness: SinkHarness) -> bytes:
        if harness.name not in cache:
            from .. import Run

            cfg = harness.make_config(tmp_path_factory.mktemp(f"reference-{harness.name}"))
            result = run_cli(*harness.job(contract_inputs), env=harness.env(cfg))
            assert result.code == 0, result.stderr
            cache[harness.name] = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))
        return cache[harness.name]

    return clean_run_bytes
