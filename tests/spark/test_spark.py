"""A DataFrame published through Spark (local[2,3], a real JVM) as one run: parts staged by tasks,
committed once by the driver's holder; under Spark's own failure modes (a task that fails after
staging, a Python worker killed mid-write, a speculated partition, a job that fails, the driver
killed before and at the commit). Every outcome is read back by the sink's independent reader and
compared, row for row, with a single-process publish of the same rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.contract.harness import DATASET, DATE, HARNESSES, SinkHarness, loaded
from tests.helpers import REPO, cli_env, run_cli
from tests.helpers import csv_rows as rows

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SINKS = ["file", "s3", "s3-minio", "postgres", "iceberg"]


def _params(names):  # type: ignore[no-untyped-def]
    return [pytest.param(n, marks=[pytest.mark.integration] if HARNESSES[n][0] else [], id=n) for n in names]


def _writer(spark, refunds_parquet, cfg, *, fault="", if_absent=False, fmt="atomic_publish_faulty"):  # type: ignore[no-untyped-def]
    df = spark.read.parquet(str(refunds_parquet)).repartition(4)
    w = df.write.format(fmt).option("config", str(cfg)).option("dataset", DATASET).option("run_date", DATE)
    w = w.option("sink", loaded(cfg).settings.defaults.sink)
    if fault:
        w = w.option("fault", fault)
    if if_absent:
        w = w.option("if_absent", "true")
    return w.mode("append")


def _diagnose(cfg, harness) -> dict:  # type: ignore[no-untyped-def,type-arg]
    result = run_cli(
        "diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=cli_env(cfg, **harness.extra_env)
    )
    return result.json()


def _published_rows(harness: SinkHarness, cfg: Path) -> list[tuple]:
    from atomic_publish import Run

    return rows(harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)))


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_a_dataframe_is_published_once_and_a_rerun_is_refused(spark, harness, tmp_path, refunds_parquet, reference):
    from atomic_publish import Run

    cfg = harness.make_config(tmp_path)
    _writer(spark, refunds_parquet, cfg, fmt="atomic_publish").save()
    doc = _diagnose(cfg, harness)
    assert doc["state"] == "DONE" and doc["orphans"] == [], doc
    published = _published_rows(harness, cfg)
    assert published == rows(reference(harness))
    assert len(published) == len(set(published))
    # A second job of the same run is refused before any task runs; with if_absent it succeeds
    # and changes nothing.
    with pytest.raises(Exception, match="AlreadyPublished"):
        _writer(spark, refunds_parquet, cfg, fmt="atomic_publish").save()
    _writer(spark, refunds_parquet, cfg, fmt="atomic_publish", if_absent=True).save()
    assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) is not None
    assert _published_rows(harness, cfg) == published
    assert _diagnose(cfg, harness)["state"] == "DONE"


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_retried_killed_and_speculated_tasks_publish_exactly_one_copy(
    spark, harness, tmp_path, refunds_parquet, reference
):
    """One job, three of Spark's failure modes at once: partition 1 fails after staging all of its
    part (retried), partition 2's Python worker is SIGKILLed after its first batch (retried),
    partition 3 is staged twice as a speculative attempt would. Only the parts the driver commits
    are published; the other stagings (all of the same attempt) are removed after the commit."""
    cfg = harness.make_config(tmp_path)
    _writer(spark, refunds_parquet, cfg, fault="fail_after_staging:1,kill_mid_write:2,speculate:3").save()
    doc = _diagnose(cfg, harness)
    assert doc["state"] == "DONE" and doc["orphans"] == [], doc
    published = _published_rows(harness, cfg)
    assert published == rows(reference(harness))
    assert len(published) == len(set(published))


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_a_failed_job_publishes_nothing_and_leaves_nothing(spark, harness, tmp_path, refunds_parquet, reference):
    from atomic_publish import Run

    cfg = harness.make_config(tmp_path)
    with pytest.raises(Exception, match="partition 0 always fails"):
        _writer(spark, refunds_parquet, cfg, fault="fail_always:0,fail_after_staging:1").save()
    assert harness.gated_read(loaded(cfg), Run.new(DATASET, DATE)) is None
    doc = _diagnose(cfg, harness)
    assert doc["state"] == "NOTHING_IN_FLIGHT", doc  # abort removed every staging of the attempt
    _writer(spark, refunds_parquet, cfg).save()  # and the next job publishes
    assert _published_rows(harness, cfg) == rows(reference(harness))


def test_a_parquet_run_of_the_file_sink_is_read_back_by_sparks_own_reader(spark, tmp_path, refunds_parquet):
    """The file sink joins the tasks' Parquet parts byte for byte under one footer it writes itself
    (publishers/_parquet.py): Spark's JVM reader (parquet-mr, no pyarrow, none of this project's
    code) reads the published file as exactly the DataFrame's rows, one row group per part at least."""
    import pyarrow.parquet as pq

    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[sinks.files]\ntype = "file"\nroot = "{tmp_path / "out"}"\nformat = "parquet"\n')
    df = spark.read.parquet(str(refunds_parquet)).repartition(4)
    w = df.write.format("atomic_publish").option("config", str(cfg)).option("sink", "files")
    w.option("dataset", DATASET).option("run_date", DATE).mode("append").save()
    published = tmp_path / "out" / DATASET / f"{DATE}.parquet"
    assert pq.ParquetFile(published).metadata.num_row_groups >= 4  # the parts' groups, not re-cut
    back = spark.read.parquet(str(published))
    assert back.schema == df.schema
    assert back.count() == df.count()
    assert back.exceptAll(df).count() == 0 and df.exceptAll(back).count() == 0


def test_sinks_that_take_one_piece_are_refused_before_any_task(spark, tmp_path, refunds_parquet):
    """Kafka: a transaction belongs to one producer. Refused on the driver, before any task runs
    and before anything reaches the broker (there is none at this address)."""
    cfg = tmp_path / "publish.toml"
    cfg.write_text('[sinks.out]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\ntopic = "refunds"\n')
    df = spark.read.parquet(str(refunds_parquet))
    w = df.write.format("atomic_publish").option("config", str(cfg)).option("sink", "out")
    with pytest.raises(Exception, match="the kafka sink cannot take a run staged by several Spark tasks"):
        w.option("dataset", DATASET).option("run_date", DATE).mode("append").save()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dataset": DATASET, "run_date": DATE}, r"needs the option\(s\) \['sink'\]"),
        ({"sink": "iceberg", "dataset": DATASET, "run_date": "2026-13-01"}, "2026-13-01"),
        ({"sink": "iceberg", "dataset": "../x", "run_date": DATE}, "dataset"),
        ({"sink": "iceberg", "dataset": DATASET, "run_date": DATE, "colour": "red"}, "unknown option"),
        ({"sink": "nope", "dataset": DATASET, "run_date": DATE}, "no sink named 'nope'"),
    ],
)
def test_bad_options_are_refused_naming_them(spark, tmp_path, refunds_parquet, options, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = spark.read.parquet(str(refunds_parquet)).write.format("atomic_publish")
    for key, value in options.items():
        w = w.option(key, value)
    with pytest.raises(Exception, match=message):
        w.mode("append").save()


def test_overwrite_is_refused(spark, tmp_path, refunds_parquet, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = spark.read.parquet(str(refunds_parquet)).write.format("atomic_publish").option("sink", "iceberg")
    with pytest.raises(Exception, match="never overwrites"):
        w.option("dataset", DATASET).option("run_date", DATE).mode("overwrite").save()


# -- the driver killed: a driver process of its own -------------------------------------------------


def _driver(harness, cfg, refunds_parquet, *, fault="", flag_dir="", env=None):  # type: ignore[no-untyped-def]
    sink = loaded(cfg).settings.defaults.sink
    args = [sys.executable, "-m", "tests.spark.driver", "--parquet", str(refunds_parquet), "--sink", sink]
    args += ["--dataset", DATASET, "--run-date", DATE, "--fault", fault, "--flag-dir", flag_dir]
    return subprocess.Popen(
        args,
        cwd=REPO,
        env={**cli_env(cfg, **harness.extra_env), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the driver, its JVM and its Python workers
    )


def _holders(cfg: Path) -> list[int]:
    """The holders of this test's driver: their environment names its publish.toml (other tests,
    or other suites on the machine, may run holders of their own meanwhile)."""
    out = subprocess.run(
        ["pgrep", "-f", "atomic_publish.publishers._held"], capture_output=True, text=True, check=False
    ).stdout
    mine = f"ATOMIC_PUBLISH_CONFIG={cfg}".encode()
    found = []
    for pid in (int(p) for p in out.split()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mine in environ:
            found.append(pid)
    return found


def _wait(predicate, seconds: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")


# Each case starts a JVM of its own (~10 s): every sink for the driver killed; the holder killed
# too (the host lost: the orphan path) on one object store and one database.
DRIVER_KILLED = [
    *(pytest.param(n, False, marks=m.marks, id=f"driver-killed-{m.id}") for m in _params(SINKS) for n in [m.values[0]]),
    *(
        pytest.param(n, True, marks=m.marks, id=f"driver-and-holder-killed-{m.id}")
        for m in _params(["file", "s3-minio", "postgres"])
        for n in [m.values[0]]
    ),
]


@pytest.mark.parametrize(("harness", "holder_too"), DRIVER_KILLED, indirect=["harness"])
def test_the_driver_killed_before_the_commit(spark, harness, holder_too, tmp_path, refunds_parquet, reference):
    """SIGKILL to the driver's process group (driver, JVM, workers) while tasks hold staged parts.
    Its holder sees the JVM gone and removes the attempt's staging (NOTHING_IN_FLIGHT); if the
    holder dies too (the host lost), the parts are ORPHANED, attributed to the attempt, and recover
    removes them. Either way a re-run publishes the run once."""
    cfg = harness.make_config(tmp_path / "cfg")
    flags = tmp_path / "flags"
    flags.mkdir()
    before = set(_holders(cfg))
    proc = _driver(harness, cfg, refunds_parquet, fault="hang_after_staging", flag_dir=str(flags))
    try:
        _wait(lambda: len(list(flags.iterdir())) >= 2, 120, "two tasks to stage their parts")
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(proc.communicate()[1][-3000:]) from None
    holders = [p for p in _holders(cfg) if p not in before]
    assert len(holders) == 1, holders
    assert _diagnose(cfg, harness)["state"] == "RUNNING"  # the holder holds the run
    if holder_too:
        os.kill(holders[0], signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    env = cli_env(cfg, **harness.extra_env)
    if holder_too:
        doc = _wait(lambda: (d := _diagnose(cfg, harness))["state"] != "RUNNING" and d, 30, "the lease to lapse")
        assert doc["state"] == "ORPHANED", doc
        assert len({o["attempt"] for o in doc["orphans"]}) == 1, doc
        assert run_cli("recover", "--dataset", DATASET, "--run-date", DATE, "--apply", env=env).code == 10
    else:
        _wait(lambda: holders[0] not in _holders(cfg), 60, "the holder to clean up and exit")
        doc = _diagnose(cfg, harness)
        assert doc["state"] == "NOTHING_IN_FLIGHT", doc
    _writer(spark, refunds_parquet, cfg).save()  # the re-run, as after a single-process publish
    assert _published_rows(harness, cfg) == rows(reference(harness))


@pytest.mark.parametrize(
    ("sink", "point", "state"),
    [
        ("file", "after_data_rename", "ORPHANED"),
        ("postgres", "before_commit", "ORPHANED"),
        ("postgres", "after_commit", "DONE"),
        ("s3", "after_commit", "DONE"),
        ("iceberg", "after_commit", "DONE"),
    ],
)
def test_the_holder_killed_at_the_commit(spark, request, sink, point, state, tmp_path, refunds_parquet, reference):
    """The process that commits dies at the commit (SIGKILL at a crash point): the job fails with
    an unknown outcome, and the diagnosis settles it as it does for a single-process publish."""
    needs, factory = HARNESSES[sink]
    harness = factory(*(request.getfixturevalue(name) for name in needs))
    cfg = harness.make_config(tmp_path)
    proc = _driver(harness, cfg, refunds_parquet, env={"PUBLISH_CRASH_AT": point})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "CommitOutcomeUnknown: the holder" in err, (out, err[-3000:])
    env = cli_env(cfg, **harness.extra_env)
    doc = _wait(lambda: (d := _diagnose(cfg, harness))["state"] != "RUNNING" and d, 30, "the holder's lock to go")
    assert doc["state"] == state, doc
    if state == "ORPHANED":
        assert run_cli("recover", "--dataset", DATASET, "--run-date", DATE, "--apply", env=env).code == 10
        _writer(spark, refunds_parquet, cfg).save()
    else:
        with pytest.raises(Exception, match="AlreadyPublished"):
            _writer(spark, refunds_parquet, cfg).save()
    assert _published_rows(harness, cfg) == rows(reference(harness))
