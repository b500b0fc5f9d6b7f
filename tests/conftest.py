from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.generate import generate_inputs


@pytest.fixture(scope="session")
def small_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A deterministic refunds/merchants pair, small enough for fast tests (about 1 MB)."""
    return generate_inputs(tmp_path_factory.mktemp("inputs"), rows=10_000, merchants=500)


@pytest.fixture(scope="session")
def medium_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Large enough (about 20 MB) that a publish takes long enough to be observed mid-way."""
    return generate_inputs(tmp_path_factory.mktemp("inputs_medium"), rows=200_000, merchants=2_000)
