"""Fault tests: what SIGKILL alone cannot show. Signals at every step, a TCP fault proxy between the
sink and its server (lost answers, resets, dropped and stalled requests), servers killed and
started again, full and read-only disks. Every case checks the destination with a reader that does
not use the project's code (tests/faults/readers.py)."""

from __future__ import annotations

import pytest

from tests.contract.conftest import reference  # noqa: F401  (the bytes of a clean publish per sink)
from tests.contract.harness import HARNESSES, SinkHarness


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> SinkHarness:
    """The sink under test (parametrized indirectly by name), with the real services it needs."""
    needs, factory = HARNESSES[request.param]
    return factory(*(request.getfixturevalue(name) for name in needs))
