"""The SQLite sink passes the contract suite every sink passes, as shipped in atomic_publish.testing.

Its readers use Python's own sqlite3 module and nothing of the sink: the gated reader reads the run
only when the ledger says it is published, in the same snapshot; the ungated one reads the table.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
from pathlib import Path

import pytest

from atomic_publish import LoadedConfig, Run
from atomic_publish.sdk import State
from atomic_publish.testing import DATASET, ContractSuite, PartsSuite, SinkHarness

HERE = Path(__file__).resolve().parent
POINTS = ("after_extract", "mid_transform", "after_lock", "mid_stage", "after_stage", "after_commit", "after_cleanup")


def _make_config(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(base / "warehouse.db").close()  # a configured destination exists, empty
    cfg = base / "publish.toml"
    cfg.write_text(
        f'[defaults]\nsink = "db"\n\n[sinks.db]\ntype = "sqlite_sink:SINK"\npath = "{base / "warehouse.db"}"\n'
    )
    return cfg


def _read(config: LoadedConfig, run: Run, *, gated: bool) -> bytes | None:
    with sqlite3.connect(config.sink()[1].path, timeout=30) as conn:
        conn.execute("BEGIN")  # the ledger and the table from one snapshot
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if gated and (
            "_ap_ledger" not in tables
            or conn.execute("SELECT 1 FROM _ap_ledger WHERE run_id = ?", (run.run_id,)).fetchone() is None
        ):
            return None
        if run.dataset not in tables:
            return None
        cursor = conn.execute(f'SELECT * FROM "{run.dataset}" ORDER BY refund_id')  # noqa: S608
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([d[0] for d in cursor.description])
        writer.writerows(cursor)
        return out.getvalue().encode()


def _published(config: LoadedConfig, run: Run) -> bytes:
    data = _read(config, run, gated=True)
    assert data is not None, f"{run.run_id} is not published"
    return data


HARNESS = SinkHarness(
    name="sqlite",
    make_config=_make_config,
    expected_after_crash={
        "after_extract": State.NOTHING_IN_FLIGHT,
        "mid_transform": State.NOTHING_IN_FLIGHT,
        "after_lock": State.NOTHING_IN_FLIGHT,
        "mid_stage": State.NOTHING_IN_FLIGHT,  # the staging table's transaction never committed
        "after_stage": State.ORPHANED,
        "after_commit": State.DONE,  # the staging tables were dropped in the commit's transaction
        "after_cleanup": State.DONE,
    },
    published_bytes=_published,
    gated_read=lambda config, run: _read(config, run, gated=True),
    ungated_read=lambda config, run: _read(config, run, gated=False),
    # The CLI the suite starts finds the sink by its import path: this folder on its PYTHONPATH.
    extra_env={"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))},
)


@pytest.mark.contract
class TestSqliteSink(ContractSuite, PartsSuite):
    crash_points = POINTS

    @pytest.fixture
    def harness(self) -> SinkHarness:
        assert DATASET == "refunds_settled"
        return HARNESS


def test_rows_the_ledger_does_not_account_for_are_unknown(tmp_path):
    """A row added to the published table by hand: the evidence contradicts the ledger."""
    from atomic_publish import diagnose, load_config, publish

    config = load_config(_make_config(tmp_path))
    import pyarrow as pa

    table = pa.table({"refund_id": ["R1", "R2"], "amount": [1, 2]})
    publish(table, dataset="refunds_settled", run_date="2026-04-24", sink="db", config=config)
    assert diagnose(dataset="refunds_settled", run_date="2026-04-24", sink="db", config=config).state is State.DONE
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        conn.execute("INSERT INTO refunds_settled VALUES ('R3', 3)")
    d = diagnose(dataset="refunds_settled", run_date="2026-04-24", sink="db", config=config)
    assert d.state is State.UNKNOWN and "the ledger accounts for 2" in d.reason
