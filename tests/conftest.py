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


# -- services (see tests/services/__init__.py for how each is chosen) ------------------------------


_started: list[tuple[str, str, float | None, str]] = []


def _record(name: str, service, address: str):  # type: ignore[no-untyped-def]
    _started.append((name, service.origin, service.startup_seconds, address))
    return service


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _started:
        terminalreporter.section("services")
        for name, origin, seconds, address in _started:
            took = f"ready in {seconds:.1f}s" if seconds is not None else "given"
            terminalreporter.write_line(f"{name:10} {origin:7} {took:16} {address}")


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def postgres_service(request: pytest.FixtureRequest, services_dir: Path):  # type: ignore[no-untyped-def]
    from tests.services import resolve

    service = resolve.postgres(services_dir)
    request.addfinalizer(service.stop)
    return _record("postgres", service, service.dsn.split("@")[-1])  # never the password


@pytest.fixture(scope="session")
def kafka_service(request: pytest.FixtureRequest, services_dir: Path):  # type: ignore[no-untyped-def]
    from tests.services import resolve

    service = resolve.kafka(services_dir)
    request.addfinalizer(service.stop)
    return _record("kafka", service, service.bootstrap)


@pytest.fixture(scope="session")
def s3_service(request: pytest.FixtureRequest, services_dir: Path):  # type: ignore[no-untyped-def]
    from tests.services import resolve

    service = resolve.s3(services_dir)
    request.addfinalizer(service.stop)
    return _record("s3", service, service.endpoint)
