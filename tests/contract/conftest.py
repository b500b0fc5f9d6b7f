"""Fixtures shared by the contract suite's modules."""

from __future__ import annotations

import pytest

from atomic_publish import Run
from tests.helpers import cli_env, refunds_run_args, run_cli

from .harness import DATASET, DATE, SinkHarness, loaded


def _job_args(harness, inputs, *extra):  # type: ignore[no-untyped-def]
    return (harness.command or refunds_run_args)(inputs, *extra)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, small_inputs):
    """The published bytes of a clean run of each sink, computed once: what every recovered run
    must equal byte for byte."""
    cache: dict[str, bytes] = {}

    def clean_run_bytes(harness: SinkHarness) -> bytes:
        if harness.name not in cache:
            cfg = harness.make_config(tmp_path_factory.mktemp(f"reference-{harness.name}"))
            result = run_cli(*_job_args(harness, small_inputs), env=cli_env(cfg, **harness.extra_env))
            assert result.code == 0, result.stderr
            cache[harness.name] = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))
        return cache[harness.name]

    return clean_run_bytes
