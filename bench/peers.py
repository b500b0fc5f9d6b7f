"""The peers of ``bench/run_all.py``: the same rows loaded by dlt, the closest tool users compare
this project with. dlt lives only in the bench's own virtualenv (``bench/.venv-peers``, made by
``run_all.py --peers``), never in the package's dependencies:

    bench/.venv-peers/bin/python bench/peak_rss.py bench.peers KIND ARGS...
"""

from __future__ import annotations

import sys


def _rows(source: str, disposition: str) -> object:
    import dlt
    import pyarrow as pa
    import pyarrow.parquet as pq

    @dlt.resource(name="refunds", write_disposition=disposition, primary_key="refund_id")
    def refunds() -> object:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=65_536):
            yield pa.Table.from_batches([batch])

    return refunds()


def file_parquet(source: str, dest: str, work: str) -> None:
    """dlt's filesystem destination, Parquet files, ``replace``."""
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name="peer_file",
        pipelines_dir=work,
        destination=dlt.destinations.filesystem(bucket_url=f"file://{dest}"),
        dataset_name="peer",
    )
    pipeline.run(_rows(source, "replace"), loader_file_format="parquet")


def postgres(source: str, url: str, schema: str, work: str, disposition: str) -> None:
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=f"peer_pg_{schema}",
        pipelines_dir=work,
        destination=dlt.destinations.postgres(credentials=url),
        dataset_name=schema,
    )
    pipeline.run(_rows(source, disposition))


KINDS = {
    "file-parquet": file_parquet,
    "postgres-empty": lambda source, url, schema, work: postgres(source, url, schema, work, "replace"),
    "postgres-full": lambda source, url, schema, work: postgres(source, url, schema, work, "merge"),
}

if __name__ == "__main__":
    KINDS[sys.argv[1]](*sys.argv[2:])
