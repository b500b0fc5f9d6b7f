"""The contract suite against every built-in sink: the very tests a third-party sink runs
(``atomic_publish.testing``, shipped with the package), each sink against its real destination.

For each crash point: run the pipeline in a subprocess that SIGKILLs itself there, diagnose (the
state must be the one the point leaves), recover, re-run, and compare the output with a clean run's
byte for byte, with no orphan left. Plus: a reader polling throughout never sees a partial publish;
two attempts racing publish exactly once; a re-run after DONE is refused and changes nothing; runs
staged in parts by separate processes (the sinks that take parts), or refused clearly (Kafka).
"""

from __future__ import annotations

from typing import Any

import pytest

from atomic_publish.testing import ContractSuite, OnePieceSuite, PartsSuite, SinkHarness

from .harness import CRASH_POINTS, HARNESSES

# Runs staged in parts by several workers: the sinks whose definition takes parts, on one server
# each (their variants share the code), and Kafka's refusal.
MULTI = {"file", "postgres", "iceberg", "s3"}
ONE_PIECE = {"kafka"}


def _suite(name: str) -> type:
    needs, factory = HARNESSES[name]

    @pytest.fixture
    def harness(self: Any, request: pytest.FixtureRequest) -> SinkHarness:
        """The sink under test, with the real services it needs from the harness."""
        return factory(*(request.getfixturevalue(service) for service in needs))

    bases = (ContractSuite, *([PartsSuite] if name in MULTI else []), *([OnePieceSuite] if name in ONE_PIECE else []))
    marks = [pytest.mark.contract, *([pytest.mark.integration] if needs else [])]
    return type(
        f"TestContract_{name.replace('-', '_')}",
        bases,
        {"harness": harness, "crash_points": CRASH_POINTS[name], "pytestmark": marks, "__module__": __name__},
    )


for _name in HARNESSES:
    _cls = _suite(_name)
    globals()[_cls.__name__] = _cls
