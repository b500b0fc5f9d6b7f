"""Secrets planted everywhere a user could put one never come out: not on stdout or stderr of any
command (run with -v: debug logs, and the traceback of an unexpected error), and not in any file or
record written at the destination (manifests, pending manifests, leases, lock files, markers, S3
objects, the Postgres ledger and table comments, the Kafka ledger, the Iceberg catalog).

Places: the environment (PGPASSWORD, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, any variable whose
name looks secret), a secret-looking key in publish.toml, a secret inside a refused config value,
a conninfo, a catalog URI, an endpoint URL, broker entries, Kafka properties, and the same values
given as ATOMIC_PUBLISH_* environment overrides.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Result, cli_env, run_cli

DATASET = "refunds"
DAY_A, DAY_B = "2026-04-24", "2026-04-25"


def planted(label: str) -> str:
    return f"{label}-{secrets.token_hex(8)}"


# Environment secrets planted in every command (a sink that needs a real one replaces it).
ENV_SECRETS = {
    "PGPASSWORD": planted("pgpw"),
    "AWS_SECRET_ACCESS_KEY": planted("awssk"),
    "AWS_SESSION_TOKEN": planted("awstok"),
    "MY_SERVICE_API_TOKEN": planted("apitok"),
    "KAFKA_SASL_PASSWORD": planted("kafkapw"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leaks(results: list[tuple[str, Result]], blobs: dict[str, bytes], planted_values: list[str]) -> list[str]:
    found = []
    for secret in planted_values:
        for label, r in results:
            for stream, text in (("stdout", r.stdout), ("stderr", r.stderr)):
                if secret in text:
                    line = next(line for line in text.splitlines() if secret in line)
                    found.append(f"{label}: {stream} has {secret!r}: {line[:300]!r}")
        for where, blob in blobs.items():
            if secret.encode() in blob:
                found.append(f"destination {where} holds {secret!r}")
    return found


# -- a whole set of commands against one sink -----------------------------------------------------------


@dataclass
class Sink:
    name: str
    config: str  # the TOML text
    env: dict[str, str] = field(default_factory=dict)
    read_destination: Callable[[], dict[str, bytes]] = dict
    # A real credential the sink needs (also a secret: it must not come out either).
    real_secrets: list[str] = field(default_factory=list)
    # Planted variables this sink's server would act on (and refuse): left out of its environment.
    drop: tuple[str, ...] = ()


def _inputs(tmp: Path) -> str:
    path = tmp / "in.csv"
    path.write_text("id,v\n" + "".join(f"{i},value {i}\n" for i in range(1, 51)))
    return str(path)


def exercise(tmp: Path, sink: Sink) -> list[tuple[str, Result]]:
    """sinks, publish (published, then refused), diagnose, a killed attempt, diagnose, recover
    --apply, sweep --apply: every command with -v."""
    cfg = tmp / "publish.toml"
    cfg.write_text(sink.config)
    data = _inputs(tmp)
    env = cli_env(None, **{**ENV_SECRETS, **sink.env})
    for name in sink.drop:
        env.pop(name, None)
    common = ["--config", str(cfg), "--sink", sink.name]
    run = ["--dataset", DATASET]
    crash = {"PUBLISH_CRASH_AT": "after_stage"}
    steps: list[tuple[str, list[str], dict[str, str]]] = [
        ("sinks --json", ["sinks", "--config", str(cfg), "--json"], {}),
        ("publish A --json", ["publish", *common, *run, "--run-date", DAY_A, "--json", data], {}),
        ("publish A again", ["publish", *common, *run, "--run-date", DAY_A, data], {}),
        ("diagnose A", ["diagnose", *common, *run, "--run-date", DAY_A], {}),
        ("publish B (killed)", ["publish", *common, *run, "--run-date", DAY_B, data], crash),
        ("diagnose B --json", ["diagnose", *common, *run, "--run-date", DAY_B, "--json"], {}),
        ("recover B --apply", ["recover", *common, *run, "--run-date", DAY_B, "--apply"], {}),
        ("sweep --apply --json", ["sweep", *common, *run, "--older-than", "0s", "--apply", "--json"], {}),
    ]
    results = []
    for label, args, extra in steps:
        started = time.monotonic()
        results.append((label, run_cli("-v", *args, env={**env, **extra}, cwd=tmp, timeout=180)))
        print(f"{sink.name}: {label}: exit {results[-1][1].code} in {time.monotonic() - started:.1f}s")
    first_publish = results[1][1]
    assert first_publish.code == 0, f"the first publish failed, nothing was exercised: {first_publish.stderr}"
    return results


def check_sink(tmp: Path, sink: Sink) -> None:
    results = exercise(tmp, sink)
    blobs = sink.read_destination()
    run_id = f"{DATASET}/{DAY_A}".encode()
    assert any(run_id in blob for blob in blobs.values()), f"the destination read back does not hold {run_id!r}"
    found = leaks(results, blobs, [*ENV_SECRETS.values(), *sink.real_secrets])
    assert not found, "planted secrets came out:\n" + "\n".join(found)


def walk(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def file_sink(tmp: Path, request: pytest.FixtureRequest) -> Sink:
    root = tmp / "out"
    root.mkdir()
    return Sink("local", f'[sinks.local]\ntype = "file"\nroot = "{root}"\n', read_destination=lambda: walk(root))


def iceberg_sqlite(tmp: Path, request: pytest.FixtureRequest) -> Sink:
    wh = tmp / "warehouse"
    config = (
        '[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\n[sinks.lake.catalog]\ntype = "sql"\n'
        f'uri = "sqlite:///{tmp}/catalog.db"\nwarehouse = "{wh}"\n'
    )

    def read() -> dict[str, bytes]:
        return {**walk(wh), "catalog.db": (tmp / "catalog.db").read_bytes()}

    return Sink("lake", config, read_destination=read)


def _pg_parts(pg: Any, dbname: str | None = None) -> tuple[str, str, dict[str, str]]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(pg.dsn if dbname is None else pg.create_database(dbname))
    password = params.pop("password", "")
    return password, f"{params['host']}:{params['port']}", params


def iceberg_postgres_catalog(tmp: Path, request: pytest.FixtureRequest) -> Sink:
    """Iceberg on a SQL catalog in Postgres; the password only in PGPASSWORD (the documented way)."""
    import psycopg

    pg = request.getfixturevalue("postgres_service")
    dbname = "hostile_cat_" + secrets.token_hex(4)
    password, hostport, params = _pg_parts(pg, dbname)
    wh = tmp / "warehouse"
    config = (
        '[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\n[sinks.lake.catalog]\ntype = "sql"\n'
        f'uri = "postgresql+psycopg://{params["user"]}@{hostport}/{dbname}"\nwarehouse = "{wh}"\n'
    )

    def read() -> dict[str, bytes]:
        blobs = walk(wh)
        with psycopg.connect(pg.dsn_for(dbname)) as conn:
            for (table,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall():
                rows = conn.execute(f'SELECT t::text FROM "{table}" t').fetchall()
                blobs[f"catalog table {table}"] = "\n".join(r[0] for r in rows).encode()
        return blobs

    return Sink("lake", config, env={"PGPASSWORD": password}, read_destination=read, real_secrets=[password])


def postgres_sink(tmp: Path, request: pytest.FixtureRequest) -> Sink:
    import psycopg
    from psycopg.conninfo import make_conninfo

    pg = request.getfixturevalue("postgres_service")
    password, _, params = _pg_parts(pg)
    schema = "hostile_sec_" + secrets.token_hex(4)
    config = (
        f'[sinks.pg]\ntype = "postgres"\nconninfo = "{make_conninfo(**params)}"\nschema = "{schema}"\n'
        'key_columns = ["id"]\n'
    )

    def read() -> dict[str, bytes]:
        blobs = {}
        with psycopg.connect(pg.dsn) as conn:
            rows = conn.execute(f'SELECT t::text FROM "{schema}".atomic_publish_ledger t').fetchall()
            blobs["ledger"] = "\n".join(r[0] for r in rows).encode()
            comments = conn.execute(
                "SELECT coalesce(obj_description(c.oid), '') FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
                (schema,),
            ).fetchall()
            blobs["comments"] = "\n".join(r[0] for r in comments).encode()
        return blobs

    return Sink("pg", config, env={"PGPASSWORD": password}, read_destination=read, real_secrets=[password])


def kafka_sink(tmp: Path, request: pytest.FixtureRequest) -> Sink:
    kafka = request.getfixturevalue("kafka_service")
    tag = secrets.token_hex(5)
    topic, ledger = f"sec-{tag}", f"sec-ledger-{tag}"
    config = (
        f'[sinks.stream]\ntype = "kafka"\nbootstrap_servers = "{kafka.bootstrap}"\ntopic = "{topic}"\n'
        f'ledger_topic = "{ledger}"\nkey_columns = ["id"]\n'
    )

    def read() -> dict[str, bytes]:
        return {t: read_topic(kafka.bootstrap, t) for t in (topic, ledger)}

    return Sink("stream", config, read_destination=read)


def read_topic(bootstrap: str, topic: str) -> bytes:
    """Every record (key, value, headers) of ``topic``, read_uncommitted: also aborted ones."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "hostile-" + secrets.token_hex(4),
            "isolation.level": "read_uncommitted",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=20).topics[topic]
        out = bytearray()
        assignment = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)
            if high > low:
                assignment.append(TopicPartition(topic, p, low))
        if assignment:
            consumer.assign(assignment)
            # Transaction markers count in the watermarks but are never delivered: read until quiet.
            while batch := consumer.consume(1000, timeout=2):
                for msg in batch:
                    if msg.error():
                        continue
                    out += (msg.key() or b"") + b"\n" + (msg.value() or b"") + b"\n"
                    for name, value in msg.headers() or []:
                        out += name.encode() + b"=" + (value or b"") + b"\n"
        return bytes(out)
    finally:
        consumer.close()


SINKS: dict[str, tuple[Callable[[Path, pytest.FixtureRequest], Sink], bool]] = {
    "file": (file_sink, False),
    "iceberg-sqlite": (iceberg_sqlite, False),
    "iceberg-postgres-catalog": (iceberg_postgres_catalog, True),
    "postgres": (postgres_sink, True),
    "kafka": (kafka_sink, True),
}


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=[pytest.mark.integration] if svc else [], id=k) for k, (_, svc) in SINKS.items()]
)
def test_no_secret_in_output_or_destination(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    check_sink(tmp_path, SINKS[kind][0](tmp_path, request))


@pytest.mark.integration
def test_no_secret_in_output_or_destination_s3(tmp_path: Path, s3_service: Any) -> None:
    """S3 (moto and MinIO): the real credentials (MinIO's are random per start) plus the planted
    ones; every object under the prefix is read back (data, manifests, leases, fences)."""
    s3 = s3_service
    prefix = "hostile-secrets/" + secrets.token_hex(5)
    config = (
        f'[sinks.bucket]\ntype = "s3"\nbucket = "{s3.bucket}"\nprefix = "{prefix}"\nendpoint_url = "{s3.endpoint}"\n'
        f'region = "{s3.region}"\naddressing_style = "path"\npart_size_mb = 5\n'
    )
    env = dict(s3.env())
    drop: tuple[str, ...] = ()
    if s3.server == "moto":  # moto takes any credentials: the planted ones are used as they are
        env.pop("AWS_SECRET_ACCESS_KEY", None)
        env.pop("AWS_SESSION_TOKEN", None)
        real: list[str] = []
    else:  # MinIO's random root credentials; a made-up session token would be refused
        real = [v for k, v in env.items() if k != "AWS_ACCESS_KEY_ID"]
        drop = ("AWS_SESSION_TOKEN",)

    def read() -> dict[str, bytes]:
        client = s3.client()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]
        return {k: client.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in keys}

    check_sink(tmp_path, Sink("bucket", config, env=env, read_destination=read, real_secrets=real, drop=drop))


# -- secrets inside refused configurations, and in environment overrides ----------------------------------


_NAMES = "file conninfo ssl uri query endpoint s3key sasl pem oauth jaas broker catalog cats3 bucket topic"
S = {name: planted(name) for name in _NAMES.split(" ")}

REFUSED_CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "file-password-key": ('[sinks.x]\ntype = "file"\nroot = "out"\npassword = "' + S["file"] + '"\n', {}),
    "conninfo-password": (
        f'[sinks.x]\ntype = "postgres"\nconninfo = "host=127.0.0.1 password={S["conninfo"]}"\nkey_columns = ["id"]\n',
        {},
    ),
    "conninfo-sslpassword-quoted": (
        f'[sinks.x]\ntype = "postgres"\nconninfo = "host=127.0.0.1 sslpassword=\'{S["ssl"]} x\'"\n'
        'key_columns = ["id"]\n',
        {},
    ),
    "conninfo-unparsable-uri": (
        f'[sinks.x]\ntype = "postgres"\nconninfo = "postgresql://u:{S["uri"]}@[::1/db"\nkey_columns = ["id"]\n',
        {},
    ),
    "conninfo-uri-query-password": (
        f'[sinks.x]\ntype = "postgres"\nconninfo = "postgresql://u@127.0.0.1/db?password={S["query"]}"\n'
        'key_columns = ["id"]\n',
        {},
    ),
    "s3-endpoint-userinfo": (
        f'[sinks.x]\ntype = "s3"\nbucket = "bkt"\nprefix = "p"\nendpoint_url = "http://AKIA:{S["endpoint"]}@127.0.0.1:9"\n',
        {},
    ),
    "s3-secret-key-in-file": (
        f'[sinks.x]\ntype = "s3"\nbucket = "bkt"\nprefix = "p"\naws_secret_access_key = "{S["s3key"]}"\n',
        {},
    ),
    "kafka-sasl-password": (
        '[sinks.x]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n[sinks.x.properties]\n'
        f'"sasl.password" = "{S["sasl"]}"\n',
        {},
    ),
    "kafka-ssl-key-pem": (
        '[sinks.x]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n[sinks.x.properties]\n'
        f'"ssl.key.pem" = "-----BEGIN PRIVATE KEY-----\\n{S["pem"]}\\n-----END PRIVATE KEY-----"\n',
        {},
    ),
    "kafka-oauthbearer-config": (
        '[sinks.x]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n[sinks.x.properties]\n'
        f'"sasl.oauthbearer.config" = "principal=svc clientSecret={S["oauth"]}"\n',
        {},
    ),
    "kafka-jaas-config": (
        '[sinks.x]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n[sinks.x.properties]\n'
        f"\"sasl.jaas.config\" = \"PlainLoginModule required username='u' password='{S['jaas']}';\"\n",
        {},
    ),
    "kafka-bootstrap-userinfo": (
        f'[sinks.x]\ntype = "kafka"\nbootstrap_servers = "svc:{S["broker"]}@127.0.0.1:9092,127.0.0.1:9093"\n',
        {},
    ),
    "iceberg-catalog-uri-password": (
        '[sinks.x]\ntype = "iceberg"\n[sinks.x.catalog]\ntype = "sql"\n'
        f'uri = "postgresql+psycopg://ap:{S["catalog"]}@127.0.0.1:5432/cat"\nwarehouse = "wh"\n',
        {},
    ),
    "iceberg-catalog-s3-secret": (
        '[sinks.x]\ntype = "iceberg"\n[sinks.x.catalog]\ntype = "sql"\nuri = "sqlite:///cat.db"\nwarehouse = "wh"\n'
        f'"s3.secret-access-key" = "{S["cats3"]}"\n',
        {},
    ),
    # a secret (known from the environment) inside a refused name value
    "bucket-holding-a-secret": (
        f'[sinks.x]\ntype = "s3"\nbucket = "{S["bucket"]}-UPPER\\n"\nprefix = "p"\n',
        {"AWS_SECRET_ACCESS_KEY": S["bucket"]},
    ),
    "topic-holding-a-secret": (
        f'[sinks.x]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\ntopic = "{S["topic"]}/..\\u2028"\n',
        {"KAFKA_SASL_PASSWORD": S["topic"]},
    ),
}

# Values given as ATOMIC_PUBLISH_* overrides (never read from the file): refused, or the destination
# is unreachable; either way the secret in them is never printed.
OVERRIDE_SECRETS = {name: planted(name) for name in ("conninfo", "endpoint", "broker", "catalog", "query")}


def _overrides() -> dict[str, tuple[str, dict[str, str]]]:
    dead = free_port()
    fast = "timeout_seconds = 3\ndiagnose_timeout_seconds = 5\n"
    o = OVERRIDE_SECRETS
    return {
        "env-conninfo-password": (
            '[sinks.x]\ntype = "postgres"\nkey_columns = ["id"]\n' + fast,
            {"ATOMIC_PUBLISH_SINKS__X__CONNINFO": f"host=127.0.0.1 port={dead} user=u password={o['conninfo']}"},
        ),
        "env-conninfo-uri-query": (
            '[sinks.x]\ntype = "postgres"\nkey_columns = ["id"]\n' + fast,
            {"ATOMIC_PUBLISH_SINKS__X__CONNINFO": f"postgresql://u@127.0.0.1:{dead}/db?sslpassword={o['query']}"},
        ),
        "env-s3-endpoint-userinfo": (
            '[sinks.x]\ntype = "s3"\nbucket = "bkt"\nprefix = "p"\naddressing_style = "path"\n' + fast,
            {
                "ATOMIC_PUBLISH_SINKS__X__ENDPOINT_URL": f"http://AKIA:{o['endpoint']}@127.0.0.1:{dead}",
                "AWS_ACCESS_KEY_ID": "AKIAHOSTILE",
            },
        ),
        "env-kafka-bootstrap-userinfo": (
            '[sinks.x]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n' + fast,
            {"ATOMIC_PUBLISH_SINKS__X__BOOTSTRAP_SERVERS": f"svc:{o['broker']}@127.0.0.1:{dead}"},
        ),
        "env-iceberg-catalog-uri-password": (
            '[sinks.x]\ntype = "iceberg"\n' + fast + '[sinks.x.catalog]\ntype = "sql"\nuri = "sqlite:///cat.db"\n'
            'warehouse = "wh"\n',
            {"ATOMIC_PUBLISH_SINKS__X__CATALOG__URI": f"postgresql+psycopg://ap:{o['catalog']}@127.0.0.1:{dead}/cat"},
        ),
    }


def _commands(cfg: Path) -> list[tuple[str, list[str]]]:
    common = ["--config", str(cfg), "--sink", "x"]
    return [
        ("publish", ["publish", *common, "--dataset", DATASET, "--run-date", DAY_A]),
        ("publish --json", ["publish", *common, "--dataset", DATASET, "--run-date", DAY_A, "--json"]),
        ("diagnose", ["diagnose", *common, "--dataset", DATASET, "--run-date", DAY_A]),
        ("diagnose --json", ["diagnose", *common, "--dataset", DATASET, "--run-date", DAY_A, "--json"]),
        ("recover --apply", ["recover", *common, "--dataset", DATASET, "--run-date", DAY_A, "--apply"]),
        ("sweep --apply", ["sweep", *common, "--dataset", DATASET, "--older-than", "0s", "--apply"]),
        ("sinks", ["sinks", "--config", str(cfg)]),
    ]


def _run_all(tmp: Path, configs: dict[str, tuple[str, dict[str, str]]], every: bool) -> list[tuple[str, Result]]:
    """Each configuration through ``publish -v`` and one more command in turn (``every``: publish,
    diagnose, recover --apply and sweep --apply), in parallel: loading the configuration is the
    first step of every command."""
    jobs = []
    for i, (name, (text, extra_env)) in enumerate(configs.items()):
        d = tmp / name
        d.mkdir()
        cfg = d / "publish.toml"
        cfg.write_text(text)
        data = _inputs(d)
        env = cli_env(None, **{**ENV_SECRETS, **extra_env})
        commands = _commands(cfg)
        if every:
            chosen = [c for c in commands if c[0] in ("publish", "diagnose", "recover --apply", "sweep --apply")]
        else:
            chosen = [commands[0], commands[1 + i % (len(commands) - 1)]]
        for label, args in chosen:
            if label.startswith("publish"):
                args = [*args, data]
            jobs.append((f"{name}: {label}", args, env, d))
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            (label, pool.submit(run_cli, "-v", *args, env=env, cwd=d, timeout=120)) for label, args, env, d in jobs
        ]
        return [(label, f.result()) for label, f in futures]


def test_secret_in_a_refused_config_is_never_printed(tmp_path: Path) -> None:
    results = _run_all(tmp_path, REFUSED_CONFIGS, every=False)
    found = leaks(results, {}, [*S.values(), *ENV_SECRETS.values()])
    assert not found, "planted secrets came out:\n" + "\n".join(found)
    # `sinks` only lists the configured sinks (it validates no sink's table): its exit code is not checked.
    wrong = [f"{label}: exit {r.code}" for label, r in results if r.code != 2 and not label.endswith(": sinks")]
    assert not wrong, "a refused configuration did not exit 2:\n" + "\n".join(wrong)


def test_secret_in_an_environment_override_is_never_printed(tmp_path: Path) -> None:
    results = _run_all(tmp_path, _overrides(), every=True)
    found = leaks(results, {}, [*OVERRIDE_SECRETS.values(), *ENV_SECRETS.values()])
    assert not found, "planted secrets came out:\n" + "\n".join(found)
    tracebacks = [label for label, r in results if "Traceback" in r.stderr and "unexpected" in r.stderr]
    assert not tracebacks, f"unexpected errors: {tracebacks}"


def test_secret_in_a_refused_command_line_argument_is_never_printed(tmp_path: Path) -> None:
    """A secret the environment holds, pasted into --dataset, --run-date or --older-than: refused
    (exit 2) without echoing it, like every other refused value."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.local]\ntype = "file"\nroot = "{tmp_path / "out"}"\n')
    data = _inputs(tmp_path)
    token = ENV_SECRETS["MY_SERVICE_API_TOKEN"]
    common = ["--config", str(cfg), "--sink", "local"]
    jobs = {
        "publish --dataset": ["publish", *common, "--dataset", token + "\n", "--run-date", DAY_A, data],
        "diagnose --dataset --json": ["diagnose", *common, "--dataset", "x/" + token, "--run-date", DAY_A, "--json"],
        "publish --run-date": ["publish", *common, "--dataset", DATASET, "--run-date", token, data],
        "sweep --older-than": ["sweep", *common, "--dataset", DATASET, "--older-than", token],
    }
    env = cli_env(None, **ENV_SECRETS)
    results = [(label, run_cli("-v", *args, env=env, cwd=tmp_path)) for label, args in jobs.items()]
    found = leaks(results, {}, list(ENV_SECRETS.values()))
    assert not found, "planted secrets came out:\n" + "\n".join(found)
    wrong = [f"{label}: exit {r.code}" for label, r in results if r.code != 2]
    assert not wrong, "a refused argument did not exit 2:\n" + "\n".join(wrong)
