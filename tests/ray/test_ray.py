"""A Ray Dataset published through the datasink (a real local Ray, 2 CPUs) as one run: parts staged
by write tasks, committed once by the driver's holder; under Ray's own failure modes (a task that
fails after staging and is retried, a worker killed mid-write, a part staged twice, a write that
fails, the driver killed). Every outcome is read back by the sink's independent reader and compared,
row for row, with a single-process publish of the same rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.contract.harness import DATASET, DATE, HARNESSES, SinkHarness, loaded
from tests.helpers import REPO, cli_env, csv_rows, refunds_run_args, run_cli

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SINKS = ["file", "s3-minio", "postgres", "iceberg"]
RETRIED = {"max_retries": 3, "retry_exceptions": True}  # Ray retries a task's own error only if told


def _params(names):  # type: ignore[no-untyped-def]
    return [pytest.param(n, marks=[pytest.mark.integration] if HARNESSES[n][0] else [], id=n) for n in names]


def _sink(cfg: Path, flags: Path | None = None, *, fault: str = "", if_absent: bool = False):  # type: ignore[no-untyped-def]
    from tests.ray.faults import FaultyDatasink

    return FaultyDatasink(
        sink=loaded(cfg).settings.defaults.sink,
        dataset=DATASET,
        run_date=DATE,
        config=str(cfg),
        if_absent=if_absent,
        fault=fault,
        flag_dir=str(flags or cfg.parent),
    )


def _dataset(ray_local, refunds_parquet):  # type: ignore[no-untyped-def]
    import ray.data

    return ray.data.read_parquet(str(refunds_parquet)).repartition(4)


def _diagnose(cfg, harness) -> dict:  # type: ignore[no-untyped-def,type-arg]
    result = run_cli(
        "diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=cli_env(cfg, **harness.extra_env)
    )
    return result.json()


def _published_rows(harness: SinkHarness, cfg: Path) -> list[tuple]:  # type: ignore[type-arg]
    from atomic_publish import Run

    return csv_rows(harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)))


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_a_dataset_is_published_once_and_a_rerun_is_refused(ray_local, harness, tmp_path, refunds_parquet, reference):
    cfg = harness.make_config(tmp_path)
    _dataset(ray_local, refunds_parquet).write_datasink(_sink(cfg))
    doc = _diagnose(cfg, harness)
    assert doc["state"] == "DONE" and doc["orphans"] == [], doc
    published = _published_rows(harness, cfg)
    assert published == csv_rows(reference(harness))
    assert len(published) == len(set(published))
    with pytest.raises(Exception, match="already published"):
        _dataset(ray_local, refunds_parquet).write_datasink(_sink(cfg))
    _dataset(ray_local, refunds_parquet).write_datasink(_sink(cfg, if_absent=True))
    assert _published_rows(harness, cfg) == published
    assert _diagnose(cfg, harness)["state"] == "DONE"


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_retried_killed_and_duplicated_tasks_publish_exactly_one_copy(
    ray_local, harness, tmp_path, refunds_parquet, reference
):
    """One write, three of Ray's failure modes at once: task 1 fails after staging all of its part
    (retried, same index), task 2's worker is SIGKILLed after its first block (retried), task 3
    stages its part twice. Only the parts the driver commits are published; the other stagings (all
    of the same attempt) are removed after the commit."""
    cfg = harness.make_config(tmp_path)
    sink = _sink(cfg, fault="fail_after_staging:1,kill_mid_write:2,speculate:3")
    _dataset(ray_local, refunds_parquet).write_datasink(sink, ray_remote_args=RETRIED)
    flags = sorted(p.name for p in cfg.parent.iterdir() if "-" in p.name and p.suffix == "")
    assert {"fail_after_staging-1", "kill_mid_write-2", "speculate-3"} <= set(flags), flags  # every fault ran
    doc = _diagnose(cfg, harness)
    assert doc["state"] == "DONE" and doc["orphans"] == [], doc
    published = _published_rows(harness, cfg)
    assert published == csv_rows(reference(harness))
    assert len(published) == len(set(published))


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_a_failed_write_publishes_nothing_and_leaves_nothing(ray_local, harness, tmp_path, refunds_parquet, reference):
    from atomic_publish import Run

    cfg = harness.make_config(tmp_path)
    with pytest.raises(Exception, match="injected: task"):
        _dataset(ray_local, refunds_parquet).write_datasink(_sink(cfg, fault="fail_always:0,fail_after_staging:1"))
    assert harness.gated_read(loaded(cfg), Run.new(DATASET, DATE)) is None
    doc = _diagnose(cfg, harness)
    assert doc["state"] == "NOTHING_IN_FLIGHT", doc  # on_write_failed removed every staging of the attempt
    _dataset(ray_local, refunds_parquet).write_datasink(_sink(cfg))  # and the next write publishes
    assert _published_rows(harness, cfg) == csv_rows(reference(harness))


def test_kafka_is_refused_when_the_datasink_is_made(tmp_path):
    """Kafka: a transaction belongs to one producer. Refused in the driver before Ray runs anything
    (there is no broker at this address: nothing reached one)."""
    from atomic_publish import CommitRejected
    from atomic_publish.publishers.ray_data import AtomicPublishDatasink

    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.out]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\ntopic = "refunds"\n')
    with pytest.raises(CommitRejected, match="the kafka sink cannot take a run staged by several Ray tasks"):
        AtomicPublishDatasink(sink="out", dataset=DATASET, run_date=DATE, config=str(cfg))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"sink": "file", "dataset": "../x", "run_date": DATE}, "dataset"),
        ({"sink": "file", "dataset": DATASET, "run_date": "2026-13-01"}, "2026-13-01"),
        ({"sink": "nope", "dataset": DATASET, "run_date": DATE}, "no sink named 'nope'"),
    ],
)
def test_bad_arguments_are_refused_naming_them(tmp_path, monkeypatch, arguments, message):
    from atomic_publish.publishers.ray_data import AtomicPublishDatasink

    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match=message):
        AtomicPublishDatasink(**arguments)
    assert not (tmp_path / "data").exists()


def test_the_driver_killed_while_tasks_hold_staged_parts(ray_local, tmp_path, refunds_parquet, reference):
    """SIGKILL to a Ray driver (a process of its own, connected to the module's Ray) while its tasks
    hold staged parts: Ray ends the dead driver's tasks, the holder sees the driver gone and removes
    the attempt's staging (NOTHING_IN_FLIGHT); a re-run publishes the run once."""
    harness = HARNESSES["file"][1]()
    cfg = harness.make_config(tmp_path / "cfg")
    flags = tmp_path / "flags"
    flags.mkdir()
    code = (
        "import ray, ray.data\n"
        "from tests.ray.faults import FaultyDatasink\n"
        f"ray.init(address={ray_local.get_runtime_context().gcs_address!r})\n"
        f"ds = ray.data.read_parquet({str(refunds_parquet)!r}).repartition(4)\n"
        f"ds.write_datasink(FaultyDatasink(sink={loaded(cfg).settings.defaults.sink!r}, dataset={DATASET!r}, "
        f"run_date={DATE!r}, "
        f"config={str(cfg)!r}, fault='hang_after_staging', flag_dir={str(flags)!r}))\n"
    )
    log = tmp_path / "driver.log"  # a file, not a pipe: the holder outlives the driver with it open
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, env=cli_env(cfg), stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while len(list(flags.glob("staged-*"))) < 2:
        if time.monotonic() > deadline or proc.poll() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            raise AssertionError(log.read_text()[-3000:])
        time.sleep(0.2)
    assert _diagnose(cfg, harness)["state"] == "RUNNING"  # the holder holds the run
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    while (doc := _diagnose(cfg, harness))["state"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert doc["state"] == "NOTHING_IN_FLIGHT", doc
    env = cli_env(cfg)
    rerun = run_cli("publish", "--dataset", DATASET, "--run-date", DATE, str(refunds_parquet), env=env)
    assert rerun.code == 0, rerun.stderr
    assert _published_rows(harness, cfg) == csv_rows(reference(harness))


def test_abort_gives_up_a_write_ray_never_finished(tmp_path, small_inputs):
    """Ctrl-C in a driver that lives on (a notebook): Ray calls neither callback, the holder still
    holds the run (RUNNING); the datasink's abort() gives it up (NOTHING_IN_FLIGHT), and a
    publish of the run then goes through."""
    from atomic_publish.publishers.ray_data import AtomicPublishDatasink

    harness = HARNESSES["file"][1]()
    cfg = harness.make_config(tmp_path)
    sink = AtomicPublishDatasink(
        sink=loaded(cfg).settings.defaults.sink, dataset=DATASET, run_date=DATE, config=str(cfg)
    )
    sink.on_write_start(None)
    assert _diagnose(cfg, harness)["state"] == "RUNNING"
    sink.abort()
    assert _diagnose(cfg, harness)["state"] == "NOTHING_IN_FLIGHT"
    assert run_cli(*refunds_run_args(small_inputs), env=cli_env(cfg)).code == 0


def test_a_block_whose_column_is_all_null_publishes_with_the_others_type(ray_local, tmp_path):
    """Ray infers each block's types apart: one block's all-None column is type null there. The run
    is published with the type the other blocks give the column (file sink, Parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    from atomic_publish.publishers.ray_data import AtomicPublishDatasink

    harness = HARNESSES["file"][1]()
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[defaults]\nsink = "out"\n[sinks.out]\ntype = "file"\nroot = "{tmp_path / "out"}"\nformat = "parquet"\n'
    )
    tables = [
        pa.table({"id": list(range(i * 100, i * 100 + 100)), "v": [None] * 100 if i == 0 else [f"s{i}"] * 100})
        for i in range(4)
    ]
    assert pa.types.is_null(tables[0].schema.field("v").type)
    sink = AtomicPublishDatasink(sink="out", dataset=DATASET, run_date=DATE, config=str(cfg))
    ray.data.from_arrow(tables).write_datasink(sink)
    assert _diagnose(cfg, harness)["state"] == "DONE"
    published = pq.read_table(next((tmp_path / "out").rglob(f"{DATE}.parquet")))
    assert sorted(published.column("id").to_pylist()) == list(range(400))
    assert published.schema.field("v").type == pa.string()


def _interrupt_an_import(root: Path, package: str) -> None:
    """Import ``package`` (written under ``root``) the way a task Ray cancels does: KeyboardInterrupt
    raised in the middle, after its submodule ``a`` is finished. Checks that this leaves the package
    broken for the next import, as boto3 was ("module 'boto3' has no attribute 'utils'")."""
    pkg = root / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"import {package}.a\nimport {package}.b\nVALUE = {package}.a.VALUE\n")
    (pkg / "a.py").write_text("VALUE = 42\n")
    (pkg / "b.py").write_text(f"import os\nif os.path.exists({str(root / 'cancel')!r}):\n    raise KeyboardInterrupt\n")
    (root / "cancel").touch()
    with pytest.raises(KeyboardInterrupt):
        __import__(package)
    (root / "cancel").unlink()
    assert package not in sys.modules and f"{package}.a" in sys.modules


def test_an_import_a_cancelled_task_interrupted_works_in_the_next_task(tmp_path, monkeypatch):
    from atomic_publish.publishers.ray_data import forget_interrupted_imports

    monkeypatch.syspath_prepend(str(tmp_path))
    _interrupt_an_import(tmp_path, "cancelled_pkg_one")
    with pytest.raises(AttributeError, match="has no attribute 'a'"):
        __import__("cancelled_pkg_one")  # the failure mode, without the repair
    _interrupt_an_import(tmp_path, "cancelled_pkg_two")
    # pkg_one's second import failed too (on the missing attribute), after finishing its b
    assert sorted(forget_interrupted_imports()) == ["cancelled_pkg_one.a", "cancelled_pkg_one.b", "cancelled_pkg_two.a"]
    assert __import__("cancelled_pkg_two").VALUE == 42
    assert forget_interrupted_imports() == []


def test_a_write_task_repairs_an_import_an_earlier_task_interrupted(tmp_path, monkeypatch):
    """The write task itself runs the repair first (in-process here: a worker Ray reuses after
    cancelling a task in it is the same Python)."""
    import pyarrow as pa

    from atomic_publish.publishers.ray_data import AtomicPublishDatasink

    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    (tmp_path / "modules").mkdir()
    _interrupt_an_import(tmp_path / "modules", "cancelled_pkg_three")
    harness = HARNESSES["file"][1]()
    cfg = harness.make_config(tmp_path)
    sink = AtomicPublishDatasink(
        sink=loaded(cfg).settings.defaults.sink, dataset=DATASET, run_date=DATE, config=str(cfg)
    )
    sink.on_write_start(None)
    try:
        ctx = type("TaskContext", (), {"task_idx": 0})()
        assert sink.write([pa.table({"id": [1, 2]})], ctx) is not None
        assert __import__("cancelled_pkg_three").VALUE == 42
    finally:
        sink.abort()
