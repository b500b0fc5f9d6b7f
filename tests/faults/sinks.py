"""The sinks as the fault suite drives them: a config that reaches the server through a TCP fault
proxy (``via``) or directly, short bounds so a fault ends a call in seconds, the matcher that picks
the commit request out of the client's byte stream, and an independent reader (tests/contract/readers).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.contract import readers
from tests.helpers import cli_env, run_cli
from tests.services import s3

from .proxy import Contains, FaultProxy, KafkaApiKey, Regex

DATASET = "refunds_settled"
DATE = "2026-04-24"
RUN_ID = f"{DATASET}/{DATE}"
# Short bounds: every fault must end a call within seconds, not the defaults' minutes.
BOUNDS = "timeout_seconds = 3\ncommit_timeout_seconds = 6\ndiagnose_timeout_seconds = 20\n"
# What a call may take at most under a fault: the commit bound, a request bound, start-up, slack.
CALL_BOUND_SECONDS = 6 + 3 + 25


@dataclass
class FaultySink:
    """One sink wired for fault tests. ``config(base, via)`` writes a publish.toml whose client
    reaches the server at ``via`` ("host:port" of a proxy) or directly (None)."""

    name: str
    upstream: tuple[str, int]
    commit_request: Callable[[], Any]
    write_config: Callable[[Path, str | None], Path]
    read: Callable[[Path], bytes | None]
    # The same sink with a fresh, empty destination (for a reference run).
    fresh: Callable[[], FaultySink]
    env: dict[str, str] = field(default_factory=dict)
    # A proxy the service owns (Kafka: its brokers advertise the proxy's address), else one per test.
    shared_proxy: FaultProxy | None = None
    # The matcher of a request that stages data (None: staging does not cross the network).
    staging_request: Callable[[], Any] | None = None

    @contextlib.contextmanager
    def faulty(self, name: str) -> Iterator[FaultProxy]:
        """A fault proxy between this sink's client and its server, for one test."""
        if self.shared_proxy is None:
            with FaultProxy(*self.upstream, name=name) as proxy:
                yield proxy
            return
        self.shared_proxy.clear()
        try:
            yield self.shared_proxy
        finally:
            self.shared_proxy.clear()
            self.shared_proxy.release()
            self.shared_proxy.reset_all()

    def config(self, base: Path, via: str | None = None) -> Path:
        base.mkdir(parents=True, exist_ok=True)
        return self.write_config(base, via)

    def cli(self, cfg: Path, *args: str, timeout: float = 120, **extra: str) -> Any:
        return run_cli(*args, env=cli_env(cfg, **self.env, **extra), timeout=timeout)

    def publish(self, cfg: Path, inputs: Path, **extra: str) -> tuple[Any, float]:
        started = time.monotonic()
        result = self.cli(cfg, "publish", "--dataset", DATASET, "--run-date", DATE, str(inputs), **extra)
        return result, time.monotonic() - started

    def diagnose(self, cfg: Path) -> dict[str, Any]:
        result = self.cli(cfg, "diagnose", "--dataset", DATASET, "--run-date", DATE, "--json")
        doc: dict[str, Any] = result.json()
        assert result.code == doc["exit_code"], result.stderr
        return doc

    def follow_the_advice(self, cfg: Path, inputs: Path, *, wait_running: float = 30.0) -> list[str]:
        """Do what diagnose says until DONE: recover --apply, re-run, or wait while RUNNING. Returns
        the states seen. Fails on UNKNOWN (a human's job) or if DONE is not reached in 8 steps."""
        seen = []
        deadline = time.monotonic() + wait_running
        for _ in range(8):
            state = self.diagnose(cfg)["state"]
            seen.append(state)
            if state == "DONE":
                return seen
            assert state != "UNKNOWN", seen
            if state in ("ORPHANED", "PUBLISHED_WITH_ORPHANS"):
                done = self.cli(cfg, "recover", "--dataset", DATASET, "--run-date", DATE, "--apply")
                assert done.code in (0, 10, 13), done.stderr
            elif state == "NOTHING_IN_FLIGHT":
                rerun, _ = self.publish(cfg, inputs)
                assert rerun.code in (0, 3), rerun.stderr
            elif state == "RUNNING":
                assert time.monotonic() < deadline, f"still RUNNING after {wait_running}s: {seen}"
                time.sleep(1)
        raise AssertionError(f"did not reach DONE: {seen}")


def parquet_input(csv_path: Path) -> Path:
    from tests.contract.harness import as_parquet

    return as_parquet(csv_path)


# -- s3 ----------------------------------------------------------------------------------------------


def s3_sink(service: Any) -> FaultySink:
    host, port = service.endpoint.removeprefix("http://").split(":")
    prefix = "faults/" + uuid.uuid4().hex[:10]
    client = service.client()

    def write_config(base: Path, via: str | None) -> Path:
        endpoint = f"http://{via}" if via else service.endpoint
        cfg = base / ("proxied.toml" if via else "direct.toml")
        cfg.write_text(
            '[defaults]\nsink = "bucket"\n[sinks.bucket]\ntype = "s3"\n'
            f'bucket = "{service.bucket}"\nprefix = "{prefix}"\nendpoint_url = "{endpoint}"\n'
            f'region = "{service.region}"\naddressing_style = "path"\npart_size_mb = 5\nformat = "parquet"\n{BOUNDS}'
        )
        return cfg

    return FaultySink(
        name=f"s3-{service.server}",
        upstream=(host, int(port)),
        commit_request=lambda: Regex(rb"PUT /[^ ]*_MANIFEST\.json"),
        staging_request=lambda: Regex(rb"(?:PUT|POST) /[^ ]*/_attempts/"),  # the data's (multipart) upload
        write_config=write_config,
        read=lambda cfg: readers.s3_gated(client, service.bucket, prefix, DATASET, DATE),
        fresh=lambda: s3_sink(service),
        env=service.env(),
    )


# -- postgres ----------------------------------------------------------------------------------------


def postgres_sink(service: Any) -> FaultySink:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(service.dsn)
    schema = "f_" + uuid.uuid4().hex[:10]

    def write_config(base: Path, via: str | None) -> Path:
        host, port = via.split(":") if via else (params["host"], params["port"])
        cfg = base / ("proxied.toml" if via else "direct.toml")
        cfg.write_text(
            '[defaults]\nsink = "pg"\n[sinks.pg]\ntype = "postgres"\n'
            f'conninfo = "host={host} port={port} user={params["user"]} dbname={params["dbname"]} sslmode=disable"\n'
            f'schema = "{schema}"\nkey_columns = ["refund_id"]\n{BOUNDS}'
        )
        return cfg

    def read(cfg: Path) -> bytes | None:
        if readers.postgres_ledger(service.dsn, schema, RUN_ID) is None:
            return None
        rows = readers.postgres_rows(service.dsn, schema, DATASET, "refund_id")
        return repr(rows).encode() if rows is not None else None

    return FaultySink(
        name="postgres",
        upstream=(params["host"], int(params["port"])),
        commit_request=lambda: Contains(b"COMMIT /* atomic-publish"),
        staging_request=lambda: Contains(b"COPY "),  # the bulk load into the staging table
        write_config=write_config,
        read=read,
        fresh=lambda: postgres_sink(service),
        env={"PGPASSWORD": params["password"]},
    )


# -- kafka -------------------------------------------------------------------------------------------


def kafka_sink(service: Any) -> FaultySink:
    tag = uuid.uuid4().hex[:10]
    topic, ledger = f"refunds-{tag}", f"ledger-{tag}"

    def write_config(base: Path, via: str | None) -> Path:
        cfg = base / ("proxied.toml" if via else "direct.toml")
        cfg.write_text(
            '[defaults]\nsink = "stream"\n[sinks.stream]\ntype = "kafka"\n'
            f'bootstrap_servers = "{via or service.bootstrap}"\ntopic = "{topic}"\nledger_topic = "{ledger}"\n'
            f'key_columns = ["refund_id"]\n{BOUNDS}'
        )
        return cfg

    def read(cfg: Path) -> bytes | None:
        if readers.kafka_ledger(service.bootstrap, ledger, RUN_ID) is None:
            return None
        return b"\n".join(sorted(readers.kafka_run_records(service.bootstrap, topic, RUN_ID)))

    host, port = service.bootstrap.split(":")
    return FaultySink(
        name="kafka",
        upstream=(host, int(port)),
        shared_proxy=service.proxy,
        commit_request=lambda: KafkaApiKey(26),  # EndTxn: commit_transaction's request to the coordinator
        staging_request=lambda: KafkaApiKey(0),  # Produce: records into the open transaction
        write_config=write_config,
        read=read,
        fresh=lambda: kafka_sink(service),
    )


# -- iceberg on a Postgres-backed SQL catalog ----------------------------------------------------------


def iceberg_sink(service: Any, warehouse: Path) -> FaultySink:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(service.dsn)
    db = "ice_" + uuid.uuid4().hex[:8]
    service.create_database(db)

    def uri(via: str | None) -> str:
        host, port = via.split(":") if via else (params["host"], params["port"])
        return f"postgresql+psycopg://{params['user']}@{host}:{port}/{db}?sslmode=disable"

    def write_config(base: Path, via: str | None) -> Path:
        cfg = base / ("proxied.toml" if via else "direct.toml")
        cfg.write_text(
            '[defaults]\nsink = "lake"\n[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\n'
            f'{BOUNDS}[sinks.lake.catalog]\ntype = "sql"\nuri = "{uri(via)}"\nwarehouse = "{warehouse.as_uri()}"\n'
        )
        return cfg

    def read(cfg: Path) -> bytes | None:
        from pyiceberg.catalog.sql import SqlCatalog

        direct = f"postgresql+psycopg://{params['user']}:{params['password']}@{params['host']}:{params['port']}/{db}"
        return _iceberg_read(SqlCatalog("default", uri=direct, warehouse=warehouse.as_uri()))  # the sink's name

    return FaultySink(
        name="iceberg-pg",
        upstream=(params["host"], int(params["port"])),
        commit_request=lambda: Contains(b"UPDATE iceberg_tables"),
        write_config=write_config,
        read=read,
        fresh=lambda: iceberg_sink(service, warehouse.with_name(warehouse.name + "-" + uuid.uuid4().hex[:6])),
        env={"PGPASSWORD": params["password"]},
    )


def _iceberg_read(catalog: Any) -> bytes | None:
    """The run as published in ``reports.<DATASET>`` of ``catalog`` (a digest of its rows sorted by
    key), or None; the catalog's connections are closed."""
    try:
        rows = readers.iceberg_gated(catalog, ("reports", DATASET), RUN_ID)
    finally:
        catalog.engine.dispose()
    if rows is None:
        return None
    return hashlib.sha256(repr(rows.sort_by("refund_id").to_pylist()).encode()).hexdigest().encode()


# -- iceberg on a Postgres-backed SQL catalog with its warehouse on MinIO ---------------------------------


def iceberg_minio_sink(postgres: Any, minio: Any) -> FaultySink:
    """The Iceberg sink whose data files go to a MinIO warehouse: the proxy sits between the sink's
    FileIO and MinIO (the catalog is reached directly), so the faults meet the staging requests (the
    data files' uploads). Its commit goes to Postgres: the commit faults are iceberg_sink's."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(postgres.dsn)
    db = "icem_" + uuid.uuid4().hex[:8]
    postgres.create_database(db)
    warehouse = f"s3://{minio.bucket}/wh-{db}"
    host, port = minio.endpoint.removeprefix("http://").split(":")
    catalog_uri = f"postgresql+psycopg://{params['user']}@{params['host']}:{params['port']}/{db}?sslmode=disable"

    def write_config(base: Path, via: str | None) -> Path:
        cfg = base / ("proxied.toml" if via else "direct.toml")
        endpoint = f"http://{via}" if via else minio.endpoint
        cfg.write_text(
            '[defaults]\nsink = "lake"\n[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\n'
            f'{BOUNDS}[sinks.lake.catalog]\ntype = "sql"\nuri = "{catalog_uri}"\nwarehouse = "{warehouse}"\n'
            f'"s3.endpoint" = "{endpoint}"\n"s3.region" = "{minio.region}"\n'
        )
        return cfg

    def read(cfg: Path) -> bytes | None:
        from pyiceberg.catalog.sql import SqlCatalog

        direct = f"postgresql+psycopg://{params['user']}:{params['password']}@{params['host']}:{params['port']}/{db}"
        creds = minio.credentials
        catalog = SqlCatalog(
            "default",
            uri=direct,
            warehouse=warehouse,
            **{
                "s3.endpoint": minio.endpoint,
                "s3.region": minio.region,
                "s3.access-key-id": creds.get("aws_access_key_id", ""),
                "s3.secret-access-key": creds.get("aws_secret_access_key", ""),
            },
        )
        return _iceberg_read(catalog)

    return FaultySink(
        name="iceberg-pg-minio",
        upstream=(host, int(port)),
        commit_request=lambda: Contains(b"UPDATE iceberg_tables"),  # never crosses this proxy
        staging_request=lambda: Regex(rb"(?:PUT|POST) /[^ ]*/data/atomic-publish/[^ ]*\.parquet"),
        write_config=write_config,
        read=read,
        fresh=lambda: iceberg_minio_sink(postgres, minio),
        env={"PGPASSWORD": params["password"], **minio.env()},
    )


# The sinks of the fault suites, each behind its real server: "s3-<server>" (moto, MinIO), postgres,
# kafka (behind the fault proxy's broker), iceberg-pg (SQL catalog on Postgres, local warehouse) and
# iceberg-pg-minio (its warehouse on MinIO).
SINKS = [*(f"s3-{server}" for server in s3.servers_for_tests()), "postgres", "kafka", "iceberg-pg"]


def faulty_sink(request: Any, tmp_path: Path) -> FaultySink:
    """The FaultySink of a fixture's ``request.param`` (one of SINKS, or iceberg-pg-minio)."""
    if request.param == "iceberg-pg-minio":
        return iceberg_minio_sink(request.getfixturevalue("postgres_service"), request.getfixturevalue("minio_service"))
    if request.param.startswith("s3-"):
        return s3_sink(request.getfixturevalue(s3.FIXTURE_OF[request.param.removeprefix("s3-")]))
    if request.param == "postgres":
        return postgres_sink(request.getfixturevalue("postgres_service"))
    if request.param == "kafka":
        return kafka_sink(request.getfixturevalue("fault_kafka"))
    return iceberg_sink(request.getfixturevalue("postgres_service"), tmp_path / "warehouse")
