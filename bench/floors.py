"""The floors of ``bench/run_all.py``: for each sink, the raw, non-atomic write of the same rows to the
same destination in the same format and compression, the way a job would do it without this
project (no lock, no staging, no marker, no read-back). Each runs in its own process, so its peak
RSS is its own:

    python bench/peak_rss.py bench.floors KIND ARGS...

Nothing here imports atomic_publish.
"""

from __future__ import annotations

import os
import sys


def file_parquet(source: str, dest: str) -> None:
    """``pq.write_table`` (zstd) of the whole input, then fsync: the usual one-liner, reading with
    ``ParquetFile.read`` rather than ``pq.read_table``, whose ``pyarrow.dataset`` imports pandas
    (0.3 s that is no part of a write; the sink does not import it either)."""
    import pyarrow.parquet as pq

    pq.write_table(pq.ParquetFile(source).read(), dest, compression="zstd")
    _fsync(dest)


def file_csv(source: str, dest: str) -> None:
    """The input streamed into pyarrow's CSV writer, then fsync."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(source)
    with open(dest, "wb") as fh:
        writer = pacsv.CSVWriter(fh, pf.schema_arrow)
        for batch in pf.iter_batches(batch_size=65_536):
            writer.write_batch(batch)
        writer.close()
        fh.flush()
        os.fsync(fh.fileno())


def s3_upload(source: str, endpoint: str, bucket: str, key: str) -> None:
    """boto3's ``upload_file`` of the Parquet file as it is (credentials from the environment)."""
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").upload_file(source, bucket, key)


def iceberg_append(source: str, catalog_uri: str, warehouse: str) -> None:
    """pyiceberg: ``create_table`` from the Arrow schema, then ``append`` of the whole table."""
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("floor", uri=catalog_uri, warehouse=warehouse)
    catalog.create_namespace_if_not_exists("floor")
    data = pq.read_table(source)
    catalog.create_table("floor.refunds", schema=data.schema).append(data)


def postgres_copy(source: str, conninfo: str, schema: str) -> None:
    """ADBC's binary COPY of the input into an empty table with the same primary key."""
    with _Adbc(conninfo) as db:
        db.execute(f'CREATE SCHEMA "{schema}"')
        db.execute(f'CREATE TABLE "{schema}".target ({_COLUMNS}, PRIMARY KEY (refund_id))')
        db.ingest(source, schema, "target")
        db.commit()


def postgres_merge(source: str, conninfo: str, schema: str) -> None:
    """The same rows into a target that holds their keys: binary COPY into an unlogged staging
    table, then one bare ``MERGE`` (update every matched row, insert the rest), one transaction."""
    names = [f.split()[0] for f in _COLUMNS.split(", ")]
    sets = ", ".join(f"{n} = s.{n}" for n in names if n != "refund_id")
    with _Adbc(conninfo) as db:
        db.execute(f'CREATE UNLOGGED TABLE "{schema}".staging ({_COLUMNS})')
        db.ingest(source, schema, "staging")
        db.execute(
            f'MERGE INTO "{schema}".target t USING "{schema}".staging s ON t.refund_id = s.refund_id '
            f"WHEN MATCHED THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({', '.join('s.' + n for n in names)})"
        )
        db.execute(f'DROP TABLE "{schema}".staging')
        db.commit()


class _Adbc:
    """One ADBC connection, one transaction, through ADBC's own API (as the sink loads): its DB-API
    module imports pyarrow.dataset, which imports pandas (0.3 s that is no part of a COPY)."""

    def __init__(self, uri: str) -> None:
        import adbc_driver_manager as adbc
        import adbc_driver_postgresql

        self.adbc = adbc
        self.db = adbc_driver_postgresql.connect(uri)
        self.conn = adbc.AdbcConnection(self.db)
        self.conn.set_autocommit(False)

    def __enter__(self) -> _Adbc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.db.close()

    def execute(self, query: str) -> None:
        with self.adbc.AdbcStatement(self.conn) as statement:
            statement.set_sql_query(query)
            statement.execute_update()

    def ingest(self, source: str, schema: str, table: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(source)
        reader = pa.RecordBatchReader.from_batches(pf.schema_arrow, pf.iter_batches(batch_size=65_536))
        with self.adbc.AdbcStatement(self.conn) as statement:
            statement.set_options(
                **{
                    self.adbc.StatementOptions.INGEST_TARGET_TABLE.value: table,
                    self.adbc.StatementOptions.INGEST_TARGET_DB_SCHEMA.value: schema,
                    self.adbc.INGEST_OPTION_MODE: self.adbc.INGEST_OPTION_MODE_APPEND,
                }
            )
            stream = self.adbc.ArrowArrayStreamHandle()
            reader._export_to_c(stream.address)
            statement.bind_stream(stream)
            statement.execute_update()

    def commit(self) -> None:
        self.conn.commit()


_COLUMNS = (
    "refund_id text, payment_id text, merchant_id text, merchant_name text, merchant_category text, "
    "amount_paise bigint, currency text, created_at timestamptz, _run_id text"
)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


KINDS = {
    "file-parquet": file_parquet,
    "file-csv": file_csv,
    "s3": s3_upload,
    "iceberg": iceberg_append,
    "postgres-empty": postgres_copy,
    "postgres-full": postgres_merge,
}

if __name__ == "__main__":
    KINDS[sys.argv[1]](*sys.argv[2:])
