from __future__ import annotations

import time
from pathlib import Path

import pytest

# The engine suites' shared fixtures (tests/spark, tests/ray): the input every job reads, credentials;
# and the shipped contract suite's plugin (atomic_publish.testing), whose inputs are the ones below.
pytest_plugins = ["atomic_publish.testing", "tests.engines"]


@pytest.fixture(scope="session")
def small_inputs(contract_inputs: tuple[Path, Path]) -> tuple[Path, Path]:
    """A deterministic refunds/merchants pair, small enough for fast tests (about 1 MB): the shipped
    contract suite's (atomic_publish.testing), generated once for every suite."""
    return contract_inputs


@pytest.fixture(scope="session")
def medium_inputs(contract_medium_inputs: tuple[Path, Path]) -> tuple[Path, Path]:
    """Large enough (about 20 MB) that a publish takes long enough to be observed mid-way."""
    return contract_medium_inputs


# -- services (see tests/services/__init__.py for how each is chosen) ------------------------------


_started: list[tuple[str, str, float | None, str]] = []


def _record(name: str, service, address: str):  # type: ignore[no-untyped-def]
    _started.append((name, service.origin, service.startup_seconds, address))
    return service


def pytest_configure(config: pytest.Config) -> None:
    # The fault suite's outcomes of this session go to one file (docs/faults.md is made from it).
    if not hasattr(config, "workerinput"):
        from tests.faults import outcomes

        outcomes.start_session()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist each worker starts its own servers; the controller prints them all.
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["atomic_publish_services"] = list(_started)
    _remove_dead_holder_dirs()


_SESSION_STARTED = time.time()


def _remove_dead_holder_dirs() -> None:
    """The engine suites kill holders together with their drivers (a host lost), which leaves each
    holder's private ``ap-held-*`` directory in /tmp (the product cannot remove it: nobody is left).
    Removed here: made during this session, untouched for a minute, and nobody listening at its
    socket (a live holder of another worker listens within a second of making it)."""
    import shutil
    import socket
    import tempfile

    for workdir in Path(tempfile.gettempdir()).glob("ap-held-*"):
        try:
            mtime = workdir.stat().st_mtime
        except OSError:
            continue
        if not _SESSION_STARTED <= mtime <= time.time() - 60:
            continue
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(1)
            try:
                probe.connect(str(workdir / "s"))
            except (ConnectionRefusedError, FileNotFoundError):
                shutil.rmtree(workdir, ignore_errors=True)
            except OSError:
                pass


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    _started.extend(tuple(s) for s in getattr(node, "workeroutput", {}).get("atomic_publish_services", []))


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _started:
        terminalreporter.section("services")
        for name, origin, seconds, address in _started:
            took = f"ready in {seconds:.1f}s" if seconds is not None else "given"
            terminalreporter.write_line(f"{name:12} {origin:7} {took:16} {address}")


def _s3_servers() -> list[str]:
    """What ``s3_service`` is parametrized over: ["env"] when an endpoint is given, else the local
    servers ATOMIC_PUBLISH_TEST_S3_SERVER selects (moto, minio, or both: the default)."""
    from tests.services import s3

    return s3.servers_for_tests()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that asks for s3_service (directly or through its fixtures) runs once per server,
    # with ids [moto] and [minio] (or [env]).
    if "s3_service" in metafunc.fixturenames:
        servers = _s3_servers()
        metafunc.parametrize("s3_service", servers, indirect=True, ids=servers, scope="session")


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
def s3_service(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The S3 endpoint of the current parameter: moto's server, MinIO, or the environment's. A
    test that reaches it through request.getfixturevalue (no parameter) gets the first selected."""
    server = getattr(request, "param", None) or _s3_servers()[0]
    from tests.services import s3

    return request.getfixturevalue(s3.FIXTURE_OF[server])


@pytest.fixture(scope="session")
def s3_env_service(request: pytest.FixtureRequest, services_dir: Path):  # type: ignore[no-untyped-def]
    """The S3 endpoint ATOMIC_PUBLISH_TEST_S3_ENDPOINT names (credentials from the environment)."""
    from tests.services import s3

    service = s3.from_environment()
    if service is None:
        pytest.skip(f"no S3 endpoint: set {s3.ENV_ENDPOINT}")
    return _record("s3 (env)", service, service.endpoint)


@pytest.fixture(scope="session")
def moto_service(request: pytest.FixtureRequest, services_dir: Path):  # type: ignore[no-untyped-def]
    """Always moto's server, a local process (whatever the environment names)."""
    from tests.services.s3 import start_local_s3

    service = start_local_s3(services_dir / "moto")
    request.addfinalizer(service.stop)
    return _record("s3 (moto)", service, service.endpoint)


@pytest.fixture(scope="session")
def minio_service(request: pytest.FixtureRequest, services_dir: Path):  # type: ignore[no-untyped-def]
    """Always MinIO (Docker's when an engine answers, else a local process), with the buckets
    ``atomic-publish`` and ``warehouse``; shared with s3_service[minio]. A local one can be
    ``kill()``ed and ``start_again()``ed (same port, same data): a test that does so must leave it
    running, or start its own with tests.services.minio.start_local_minio(tmp_path)."""
    from tests.services import resolve

    service = resolve.minio(services_dir)
    request.addfinalizer(service.stop)
    return _record("s3 (minio)", service, service.endpoint)


@pytest.fixture(scope="session")
def iceberg_rest_service(request: pytest.FixtureRequest, services_dir: Path):  # type: ignore[no-untyped-def]
    """An Iceberg REST catalog: ATOMIC_PUBLISH_TEST_ICEBERG_REST_URI's if set, else Apache Iceberg's
    RESTCatalogServer (JDBC catalog on SQLite) with its warehouse on local disk."""
    from tests.services import resolve

    service = resolve.iceberg_rest(services_dir / "iceberg-rest")
    request.addfinalizer(service.stop)
    return _record("iceberg-rest", service, f"{service.uri} (warehouse {service.warehouse or '?'})")


@pytest.fixture(scope="session")
def iceberg_rest_minio_service(request: pytest.FixtureRequest, services_dir: Path):  # type: ignore[no-untyped-def]
    """Apache Iceberg's RESTCatalogServer with its warehouse on MinIO (s3://warehouse/, S3FileIO),
    or ATOMIC_PUBLISH_TEST_ICEBERG_REST_URI's catalog if set."""
    from tests.services import iceberg_rest

    service = iceberg_rest.from_environment()
    if service is None:
        minio = request.getfixturevalue("minio_service")
        service = iceberg_rest.start_local_iceberg_rest(services_dir / "iceberg-rest-minio", None, minio)
        request.addfinalizer(service.stop)
    return _record("iceberg-rest", service, f"{service.uri} (warehouse {service.warehouse or '?'})")


# -- fault tests: servers of their own, which a test may kill() and start_again() --------------------


@pytest.fixture(scope="module")
def fault_postgres(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A Postgres server of this module's own (a local process, never the session's, Docker's or the
    environment's), committing synchronously so that a ``kill()`` loses no acknowledged commit.
    ``kill()`` / ``start_again()`` / ``restart()``; ``proxied()`` for a FaultProxy in front of it."""
    from tests.services.postgres import start_local_postgres

    service = start_local_postgres(crash_safe=True)
    request.addfinalizer(service.stop)
    return _record("fault-pg", service, service.dsn.split("@")[-1])


@pytest.fixture(scope="module")
def fault_kafka(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A Kafka broker of this module's own (local processes: broker, and KRaft controller apart) with
    a FaultProxy in front of a second listener: ``proxied_bootstrap`` reaches the broker only through
    ``proxy``; ``bootstrap`` directly. ``kill()`` (the broker only) / ``start_again()`` /
    ``restart()`` keep the ports, the storage, the controller and the proxy."""
    from tests.services.kafka import start_local_kafka

    service = start_local_kafka(tmp_path_factory.mktemp("fault-kafka"), proxied=True, separate_controller=True)
    request.addfinalizer(service.stop)
    return _record("fault-kafka", service, f"{service.bootstrap} (proxy {service.proxied_bootstrap})")


@pytest.fixture(scope="module")
def fault_minio(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A MinIO server of this module's own (a local process, never Docker's), with the buckets
    ``atomic-publish`` and ``warehouse``. ``kill()`` / ``start_again()`` / ``restart()`` keep its port
    and data directory: every object and open multipart upload survives."""
    from tests.services.minio import start_local_minio

    service = start_local_minio(tmp_path_factory.mktemp("fault-minio"))
    request.addfinalizer(service.stop)
    return _record("fault-minio", service, service.endpoint)
