"""The harness of each built-in sink for the contract suite (``atomic_publish.testing``, shipped with
the package): a sink joins the project by adding a harness here and passing every test of
``ContractSuite`` (and ``PartsSuite`` when it takes parts) against its real destination."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

from atomic_publish import LoadedConfig, Run
from atomic_publish.publishers.taxonomy import State
from atomic_publish.testing import DATASET, DATE, SinkHarness, loaded  # noqa: F401  (loaded: for the suites that import it here)

from . import readers


def rows_sorted(data: bytes) -> bytes:
    """One CSV file's content with its rows sorted: the file sink's run staged in parts is one file
    whose rows come in part order."""
    header, *rows = data.splitlines()
    return b"\n".join([header, *sorted(rows)])


def objects_rows_sorted(data: bytes) -> bytes:
    """CSV objects one after the other (S3: one per part, each with its header): one header, the
    rows sorted."""
    lines = data.splitlines()
    return b"\n".join([lines[0], *sorted(line for line in lines if line != lines[0])])


# -- file ---------------------------------------------------------------------------------------


def _file_config(base: Path) -> Path:
    (base / "out").mkdir(parents=True, exist_ok=True)  # a configured destination exists, empty
    cfg = base / "publish.toml"
    cfg.write_text(f'[defaults]\nsink = "out"\n\n[sinks.out]\ntype = "file"\nroot = "{base / "out"}"\n')
    return cfg


def _file_paths(config: LoadedConfig, run: Run) -> tuple[Path, Path]:
    definition, options = config.sink()
    publisher = definition.make_publisher(options)
    return publisher.layout.final(run), publisher.layout.marker(run)


def _file_published(config: LoadedConfig, run: Run) -> bytes:
    final, _ = _file_paths(config, run)
    return final.read_bytes()


def _file_gated(config: LoadedConfig, run: Run) -> bytes | None:
    options = config.sink()[1]
    return readers.file_gated(Path(options.root), run.dataset, run.run_date.isoformat(), options.format)


def _file_ungated(config: LoadedConfig, run: Run) -> bytes | None:
    final, _ = _file_paths(config, run)
    try:
        return final.read_bytes()
    except FileNotFoundError:
        return None


FILE = SinkHarness(
    name="file",
    make_config=_file_config,
    expected_after_crash={
        "after_extract": State.NOTHING_IN_FLIGHT,
        "mid_transform": State.NOTHING_IN_FLIGHT,
        "after_lock": State.NOTHING_IN_FLIGHT,
        "mid_stage": State.ORPHANED,
        "after_stage": State.ORPHANED,
        "after_data_rename": State.ORPHANED,
        "after_commit": State.PUBLISHED_WITH_ORPHANS,
        "after_cleanup": State.DONE,
    },
    published_bytes=_file_published,
    gated_read=_file_gated,
    ungated_read=_file_ungated,
    canonical=rows_sorted,
)

# -- postgres -----------------------------------------------------------------------------------


def postgres_harness(pg) -> SinkHarness:  # type: ignore[no-untyped-def]
    """The Postgres sink against the harness's real server; each test gets its own schema. The
    password reaches the CLI only through PGPASSWORD, never the config file."""
    import hashlib

    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(pg.dsn)
    password = params.pop("password", None)
    conninfo = make_conninfo(**params)

    def schema_for(base: Path) -> str:
        return "t_" + hashlib.sha1(str(base).encode()).hexdigest()[:12]

    def make_config(base: Path) -> Path:
        base.mkdir(parents=True, exist_ok=True)
        cfg = base / "publish.toml"
        cfg.write_text(
            '[defaults]\nsink = "pg"\n\n[sinks.pg]\ntype = "postgres"\n'
            f'conninfo = "{conninfo}"\nschema = "{schema_for(base)}"\n'
            'key_columns = ["refund_id"]\nreplace_partition_column = "_run_id"\n'
        )
        return cfg

    def _schema(config: LoadedConfig) -> str:
        return config.sink()[1].schema_name

    def dump(conn, schema: str) -> bytes | None:  # type: ignore[no-untyped-def]
        from psycopg import sql

        if conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{DATASET}"',)).fetchone()[0] is None:
            return None
        out = bytearray()
        query = sql.SQL("COPY (SELECT * FROM {} ORDER BY refund_id) TO STDOUT (FORMAT csv, HEADER)").format(
            sql.Identifier(schema, DATASET)
        )
        with conn.cursor().copy(query) as copy:
            for chunk in copy:
                out += chunk
        return bytes(out)

    def published_bytes(config: LoadedConfig, run: Run) -> bytes:
        with psycopg.connect(pg.dsn) as conn:
            data = dump(conn, _schema(config))
        assert data is not None
        return data

    def gated_read(config: LoadedConfig, run: Run) -> bytes | None:
        schema = _schema(config)
        with psycopg.connect(pg.dsn) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            ledger = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."atomic_publish_ledger"',)).fetchone()[0]
            if ledger is None:
                return None
            row = conn.execute(
                f'SELECT 1 FROM "{schema}".atomic_publish_ledger WHERE run_id = %s', (run.run_id,)
            ).fetchone()
            return dump(conn, schema) if row else None

    def ungated_read(config: LoadedConfig, run: Run) -> bytes | None:
        with psycopg.connect(pg.dsn) as conn:
            return dump(conn, _schema(config))

    return SinkHarness(
        name="postgres",
        make_config=make_config,
        expected_after_crash={
            "after_extract": State.NOTHING_IN_FLIGHT,
            "mid_transform": State.NOTHING_IN_FLIGHT,
            "after_lock": State.NOTHING_IN_FLIGHT,
            "mid_stage": State.ORPHANED,
            "after_stage": State.ORPHANED,
            "before_commit": State.ORPHANED,
            "after_commit": State.DONE,
            "after_cleanup": State.DONE,
        },
        published_bytes=published_bytes,
        gated_read=gated_read,
        ungated_read=ungated_read,
        extra_env={"PGPASSWORD": password} if password else {},
    )


# -- iceberg ------------------------------------------------------------------------------------


def iceberg_harness() -> SinkHarness:
    """The Iceberg sink on the embedded default: a SQLite catalog and a local warehouse."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def make_config(base: Path) -> Path:
        from pyiceberg.catalog.sql import SqlCatalog

        base.mkdir(parents=True, exist_ok=True)
        (base / "wh").mkdir(exist_ok=True)
        # A configured destination exists: the catalog database, empty (pyiceberg creates its tables).
        SqlCatalog("lake", uri=f"sqlite:///{base}/catalog.db", warehouse=(base / "wh").as_uri()).engine.dispose()
        cfg = base / "publish.toml"
        cfg.write_text(
            '[defaults]\nsink = "lake"\n\n[sinks.lake]\ntype = "iceberg"\nnamespace = "reports"\n'
            f'catalog = {{ type = "sql", uri = "sqlite:///{base}/catalog.db", '
            f'warehouse = "{(base / "wh").as_uri()}" }}\n'
        )
        return cfg

    def to_bytes(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table.sort_by("refund_id"), sink)
        return sink.getvalue().to_pybytes()

    def catalog(config: LoadedConfig):  # type: ignore[no-untyped-def]
        # pyiceberg itself, from the documented catalog properties: not the sink's own code.
        from pyiceberg.catalog.sql import SqlCatalog

        options = config.sink()[1]
        props = options.catalog
        return SqlCatalog(options.catalog_name, uri=props["uri"], warehouse=props["warehouse"])

    def load(config: LoadedConfig):  # type: ignore[no-untyped-def]
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return catalog(config).load_table(("reports", DATASET))
        except (NoSuchTableError, NoSuchNamespaceError):
            return None

    def published_bytes(config: LoadedConfig, run: Run) -> bytes:
        return to_bytes(load(config).scan().to_arrow())

    def gated_read(config: LoadedConfig, run: Run) -> bytes | None:
        rows = readers.iceberg_gated(catalog(config), ("reports", DATASET), run.run_id)
        return None if rows is None else to_bytes(rows)

    def ungated_read(config: LoadedConfig, run: Run) -> bytes | None:
        table = load(config)
        if table is None or table.current_snapshot() is None:
            return None
        rows = table.scan().to_arrow()
        return to_bytes(rows) if rows.num_rows else None

    return SinkHarness(
        name="iceberg",
        make_config=make_config,
        expected_after_crash={
            "after_extract": State.NOTHING_IN_FLIGHT,
            "mid_transform": State.NOTHING_IN_FLIGHT,
            "after_lock": State.NOTHING_IN_FLIGHT,
            "mid_stage": State.ORPHANED,
            "after_stage": State.ORPHANED,
            "after_commit": State.DONE,
            "after_cleanup": State.DONE,
        },
        published_bytes=published_bytes,
        gated_read=gated_read,
        ungated_read=ungated_read,
    )


def iceberg_rest_harness(rest) -> SinkHarness:  # type: ignore[no-untyped-def]
    """The Iceberg sink through Apache Iceberg's REST catalog server (local or MinIO warehouse): a
    namespace per test; the run leases in a local work location."""
    import hashlib

    import pyarrow.csv as pacsv

    base_harness = iceberg_harness()

    def namespace_for(base: Path) -> str:
        return "ns_" + hashlib.sha1(str(base).encode()).hexdigest()[:12]

    def make_config(base: Path) -> Path:
        base.mkdir(parents=True, exist_ok=True)
        lines = [
            '[defaults]\nsink = "lake"\n\n[sinks.lake]\ntype = "iceberg"',
            f'namespace = "{namespace_for(base)}"\nwork_location = "{(base / "work").as_uri()}"',
            f'[sinks.lake.catalog]\ntype = "rest"\nuri = "{rest.uri}"',
        ]
        lines += [f'"{k}" = "{v}"' for k, v in rest.properties.items() if "key" not in k and "secret" not in k]
        cfg = base / "publish.toml"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def table(config: LoadedConfig):  # type: ignore[no-untyped-def]
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return rest.catalog().load_table((config.sink()[1].namespace, DATASET))
        except (NoSuchTableError, NoSuchNamespaceError):
            return None

    def to_bytes(rows) -> bytes:  # type: ignore[no-untyped-def]
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        pacsv.write_csv(rows.sort_by("refund_id"), sink)
        return sink.getvalue().to_pybytes()

    def published_bytes(config: LoadedConfig, run: Run) -> bytes:
        return to_bytes(table(config).scan().to_arrow())

    def gated_read(config: LoadedConfig, run: Run) -> bytes | None:
        rows = readers.iceberg_gated(rest.catalog(), (config.sink()[1].namespace, DATASET), run.run_id)
        return None if rows is None else to_bytes(rows)

    def ungated_read(config: LoadedConfig, run: Run) -> bytes | None:
        current = table(config)
        if current is None or current.current_snapshot() is None:
            return None
        rows = current.scan().to_arrow()
        return to_bytes(rows) if rows.num_rows else None

    extra_env = rest.s3.env() if getattr(rest, "s3", None) is not None else {}
    expected = dict(base_harness.expected_after_crash)
    if extra_env:
        # On an object store a data file being written is not an object until it is closed (pyarrow
        # buffers it; a big one is a multipart upload, which only the bucket's lifecycle rule sees):
        # killed mid-stage, nothing of the attempt is at the destination (docs/sinks/iceberg.md).
        expected["mid_stage"] = State.NOTHING_IN_FLIGHT
    return SinkHarness(
        name="iceberg-rest" + ("-minio" if extra_env else ""),
        make_config=make_config,
        expected_after_crash=expected,
        published_bytes=published_bytes,
        gated_read=gated_read,
        ungated_read=ungated_read,
        extra_env=extra_env,
    )


# -- s3 -----------------------------------------------------------------------------------------


def s3_harness(s3) -> SinkHarness:  # type: ignore[no-untyped-def]
    """The S3 sink against the harness's S3 endpoint (moto's server here, MinIO by environment);
    each test gets its own prefix. Credentials reach the CLI only through the AWS variables."""
    import hashlib

    client = s3.client()
    creds = {
        "AWS_ACCESS_KEY_ID": s3.credentials.get("aws_access_key_id", os.environ.get("AWS_ACCESS_KEY_ID", "")),
        "AWS_SECRET_ACCESS_KEY": s3.credentials.get(
            "aws_secret_access_key", os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        ),
    }

    def prefix_for(base: Path) -> str:
        return "contract/" + hashlib.sha1(str(base).encode()).hexdigest()[:12]

    def make_config(base: Path) -> Path:
        base.mkdir(parents=True, exist_ok=True)
        cfg = base / "publish.toml"
        cfg.write_text(
            '[defaults]\nsink = "bucket"\n\n[sinks.bucket]\ntype = "s3"\n'
            f'bucket = "{s3.bucket}"\nprefix = "{prefix_for(base)}"\nendpoint_url = "{s3.endpoint}"\n'
            f'region = "{s3.region}"\naddressing_style = "path"\npart_size_mb = 5\n'
        )
        return cfg

    def manifest_key(config: LoadedConfig, run: Run) -> str:
        return config.sink()[1].prefix + f"/{DATASET}/{run.run_date.isoformat()}/_MANIFEST.json"

    def gated_read(config: LoadedConfig, run: Run) -> bytes | None:
        prefix = config.sink()[1].prefix
        return readers.s3_gated(client, s3.bucket, prefix, DATASET, run.run_date.isoformat())

    def published_bytes(config: LoadedConfig, run: Run) -> bytes:
        data = gated_read(config, run)
        assert data is not None
        return data

    def ungated_read(config: LoadedConfig, run: Run) -> bytes | None:
        # A reader that lists the published location and reads whatever is there but the manifest.
        prefix = manifest_key(config, run).rsplit("/", 1)[0] + "/"
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]
        data = [
            client.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in keys if not k.endswith("_MANIFEST.json")
        ]
        return b"".join(data) if data else None

    return SinkHarness(
        name="s3",
        make_config=make_config,
        expected_after_crash={
            "after_extract": State.NOTHING_IN_FLIGHT,
            "mid_transform": State.NOTHING_IN_FLIGHT,
            "after_lock": State.NOTHING_IN_FLIGHT,
            "mid_stage": State.ORPHANED,
            "after_stage": State.ORPHANED,
            "after_commit": State.DONE,
            "after_cleanup": State.DONE,
        },
        published_bytes=published_bytes,
        gated_read=gated_read,
        ungated_read=ungated_read,
        extra_env=creds,
        canonical=objects_rows_sorted,
    )


def s3_files_harness(s3) -> SinkHarness:  # type: ignore[no-untyped-def]
    """The S3 sink publishing a Parquet file as it is (``format = "parquet"``, `publish FILE`): the
    upload-the-bytes path of InputFiles, through the same crash points, readers and races."""
    import dataclasses

    base = s3_harness(s3)

    def make_config(path: Path) -> Path:
        cfg = base.make_config(path)
        cfg.write_text(cfg.read_text() + 'format = "parquet"\n')  # the [sinks.bucket] table is last
        return cfg

    def command(inputs: tuple[Path, Path], *extra: str) -> tuple[str, ...]:
        return ("publish", "--dataset", DATASET, "--run-date", DATE, str(as_parquet(inputs[0])), *extra)

    points = ("after_lock", "mid_stage", "after_stage", "after_commit", "after_cleanup")
    return dataclasses.replace(
        base,
        name="s3-files",
        make_config=make_config,
        command=command,
        expected_after_crash={p: base.expected_after_crash[p] for p in points},
    )


def as_parquet(csv_path: Path) -> Path:
    """The refunds input as a Parquet file next to it (made once; renamed into place whole)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    target = csv_path.with_suffix(".parquet")
    if not target.exists():
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        pq.write_table(pacsv.read_csv(csv_path), tmp, row_group_size=20_000)
        tmp.replace(target)
    return target


# -- kafka --------------------------------------------------------------------------------------


def kafka_harness(kafka) -> SinkHarness:  # type: ignore[no-untyped-def]
    """The Kafka sink against the real broker from the harness; each test gets its own topics."""
    import hashlib

    def names(base: Path) -> tuple[str, str]:
        tag = hashlib.sha1(str(base).encode()).hexdigest()[:10]
        return f"refunds-{tag}", f"ledger-{tag}"

    def make_config(base: Path) -> Path:
        base.mkdir(parents=True, exist_ok=True)
        topic, ledger = names(base)
        cfg = base / "publish.toml"
        cfg.write_text(
            '[defaults]\nsink = "stream"\n\n[sinks.stream]\ntype = "kafka"\n'
            f'bootstrap_servers = "{kafka.bootstrap}"\ntopic = "{topic}"\nledger_topic = "{ledger}"\n'
            'key_columns = ["refund_id"]\n'
        )
        return cfg

    def committed_records(config: LoadedConfig, run: Run) -> bytes | None:
        values = readers.kafka_run_records(kafka.bootstrap, config.sink()[1].topic, run.run_id)
        return b"\n".join(sorted(values)) if values else None

    def published_bytes(config: LoadedConfig, run: Run) -> bytes:
        data = committed_records(config, run)
        assert data is not None
        return data

    def gated_read(config: LoadedConfig, run: Run) -> bytes | None:
        """A batch reader gated by the ledger, as docs/sinks/kafka.md says to read: the ledger
        record, then the run's records until it holds the ledger's ``rows`` of them (the commit
        markers reach the ledger and each data partition one after the other, in no set order)."""
        ledger = readers.kafka_ledger(kafka.bootstrap, config.sink()[1].ledger_topic, run.run_id)
        if ledger is None:
            return None
        deadline = time.monotonic() + 10.0
        while True:
            data = committed_records(config, run)
            if (len(data.split(b"\n")) if data else 0) >= ledger["rows"] or time.monotonic() > deadline:
                return data
            time.sleep(0.05)

    def settled_records(config: LoadedConfig, run: Run) -> bytes | None:
        """What a read_committed consumer that ignores the ledger holds once it has caught up: read
        until two reads agree (at most 2 s). The coordinator writes a transaction's commit markers
        partition by partition a few ms after the commit, so one instantaneous read can catch some
        partitions committed and the others not yet (seen in CI once in many runs, under load).
        Records visible before the commit, or never, still differ from the run for good."""
        first = committed_records(config, run)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            again = committed_records(config, run)
            if again == first:
                return first
            first = again
        return first

    return SinkHarness(
        name="kafka",
        make_config=make_config,
        expected_after_crash={
            "after_extract": State.NOTHING_IN_FLIGHT,
            "mid_transform": State.NOTHING_IN_FLIGHT,
            "after_lock": State.NOTHING_IN_FLIGHT,
            "mid_stage": State.ORPHANED,
            "after_stage": State.ORPHANED,
            "after_commit": State.DONE,
            "after_cleanup": State.DONE,
        },
        published_bytes=published_bytes,
        gated_read=gated_read,
        ungated_read=settled_records,  # a read_committed consumer that ignores the ledger
    )


# name -> (service fixtures it needs, factory taking those services)
HARNESSES: dict[str, tuple[tuple[str, ...], Callable[..., SinkHarness]]] = {
    "file": ((), lambda: FILE),
    "postgres": (("postgres_service",), postgres_harness),
    "iceberg": ((), iceberg_harness),
    "s3": (("s3_service",), s3_harness),
    "s3-files": (("s3_service",), s3_files_harness),
    "s3-minio": (("minio_service",), lambda s3: dataclasses.replace(s3_harness(s3), name="s3-minio")),
    "s3-files-minio": (
        ("minio_service",),
        lambda s3: dataclasses.replace(s3_files_harness(s3), name="s3-files-minio"),
    ),
    "iceberg-rest": (("iceberg_rest_service",), iceberg_rest_harness),
    "iceberg-rest-minio": (("iceberg_rest_minio_service",), iceberg_rest_harness),
    "kafka": (("kafka_service",), kafka_harness),
}
# The crash points each sink is run through (known without starting any service).
CRASH_POINTS: dict[str, tuple[str, ...]] = {
    "file": tuple(FILE.expected_after_crash),
    "iceberg": tuple(iceberg_harness().expected_after_crash),
    "s3": ("after_extract", "mid_transform", "after_lock", "mid_stage", "after_stage", "after_commit", "after_cleanup"),
    "s3-files": ("after_lock", "mid_stage", "after_stage", "after_commit", "after_cleanup"),
    "iceberg-rest": tuple(iceberg_harness().expected_after_crash),
    "iceberg-rest-minio": tuple(iceberg_harness().expected_after_crash),
    "kafka": (
        "after_extract",
        "mid_transform",
        "after_lock",
        "mid_stage",
        "after_stage",
        "after_commit",
        "after_cleanup",
    ),
    "postgres": (
        "after_extract",
        "mid_transform",
        "after_lock",
        "mid_stage",
        "after_stage",
        "before_commit",
        "after_commit",
        "after_cleanup",
    ),
}
# MinIO: the same points as on moto.
CRASH_POINTS["s3-minio"] = CRASH_POINTS["s3"]
CRASH_POINTS["s3-files-minio"] = CRASH_POINTS["s3-files"]
