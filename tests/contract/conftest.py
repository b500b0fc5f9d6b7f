"""Fixtures shared by the contract suite's modules and the fault suite."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def reference(contract_reference: Any) -> Any:
    """The published bytes of a clean run of each sink (atomic_publish.testing's, under this suite's name)."""
    return contract_reference
