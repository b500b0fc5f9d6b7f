"""The refunds pipeline: deterministic inputs, a pure transform, the memory budget, retries, SIGTERM."""

import datetime as dt
import hashlib
import signal
import time

import pyarrow as pa
import pytest

from atomic_publish import CommitAborted, InputError, MemoryBudgetExceeded, TransientError, load_config
from atomic_publish.pipelines.generate import generate_inputs
from atomic_publish.pipelines.refunds import OUTPUT_SCHEMA, load_merchants, run_id_value, settled_refunds, transform
from atomic_publish.pipelines.runner import run_refunds
from atomic_publish.publishers.file import FilePublisher
from atomic_publish.publishers.taxonomy import State
from tests.helpers import cli_env, refunds_run_args, run_cli, start_cli, tree, write_config


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generator_is_deterministic_and_seeded(tmp_path):
    a = generate_inputs(tmp_path / "a", rows=30_000, merchants=100)
    b = generate_inputs(tmp_path / "b", rows=30_000, merchants=100)
    c = generate_inputs(tmp_path / "c", rows=30_000, merchants=100, seed=7)
    assert [_sha(p) for p in a] == [_sha(p) for p in b]
    assert _sha(a[0]) != _sha(c[0])
    assert sum(1 for _ in a[0].open()) == 30_001


def test_run_id_comes_from_the_run_date_never_the_clock():
    assert run_id_value(dt.date(2026, 4, 24)) == "2026-04-24T06:00:00+05:30"
    assert run_id_value(dt.date(2026, 4, 24), "23:30", "UTC") == "2026-04-24T23:30:00+00:00"
    with pytest.raises(InputError, match="timezone"):
        run_id_value(dt.date(2026, 4, 24), "06:00", "Mars/Olympus")


def test_transform_is_pure_and_keeps_only_settled_refunds(small_inputs):
    refunds_path, merchants_path = small_inputs
    merchants = load_merchants(merchants_path)
    first = pa.Table.from_batches(list(settled_refunds(refunds_path, merchants, dt.date(2026, 4, 24))))
    second = pa.Table.from_batches(list(settled_refunds(refunds_path, merchants, dt.date(2026, 4, 24))))
    assert first.equals(second)
    assert first.schema == OUTPUT_SCHEMA
    assert 0.6 < first.num_rows / 10_000 < 0.8  # the generator settles 70% of refunds
    assert set(first.column("_run_id").to_pylist()) == {"2026-04-24T06:00:00+05:30"}


def test_unknown_merchant_is_an_error_not_a_silent_drop(small_inputs):
    _, merchants_path = small_inputs
    merchants = load_merchants(merchants_path)
    batch = pa.record_batch(
        {
            "refund_id": ["R1"],
            "payment_id": ["P1"],
            "merchant_id": ["M9999999"],
            "amount_paise": [100],
            "currency": ["INR"],
            "status": ["settled"],
            "created_at": pa.array([0], pa.timestamp("s", tz="UTC")),
            "reason": ["other"],
        }
    )
    with pytest.raises(InputError, match="M9999999"):
        transform(batch, merchants, "x")


def test_memory_budget_refuses_before_loading(small_inputs, tmp_path):
    refunds_path, merchants_path = small_inputs
    cfg = write_config(tmp_path / "publish.toml", tmp_path / "out", extra="\n[pipeline]\nmemory_budget_mb = 1\n")
    big_merchants = generate_inputs(tmp_path / "big", rows=1, merchants=20_000)[1]
    with pytest.raises(MemoryBudgetExceeded, match="budget of 1 MiB"):
        run_refunds(load_config(cfg), "2026-04-24", refunds_path, big_merchants)
    assert tree(tmp_path / "out") == {}
    # The same budget takes the small merchants file.
    assert run_refunds(load_config(cfg), "2026-04-24", refunds_path, merchants_path).receipt is not None


class _FlakyCommit(FilePublisher):
    """The real file publisher with a fault injected into its first ``failures`` commits."""

    failures = 0
    calls = 0

    def commit(self, run, staged):
        type(self).calls += 1
        if type(self).calls <= type(self).failures:
            # A failure the destination proves did not land (a connection cut before the commit
            # point): the only kind of commit failure a retry may follow.
            raise CommitAborted(f"injected transient fault #{type(self).calls}")
        return super().commit(run, staged)


@pytest.fixture
def flaky_sink(monkeypatch):
    from dataclasses import replace

    from atomic_publish.publishers import registry
    from atomic_publish.sinks.file import SINK

    monkeypatch.setitem(registry._loaded, "file", replace(SINK, make_publisher=_FlakyCommit))
    return lambda failures: setattr(_FlakyCommit, "failures", failures) or setattr(_FlakyCommit, "calls", 0)


def test_transient_errors_are_retried_with_fresh_attempts(small_inputs, tmp_path, flaky_sink):
    refunds_path, merchants_path = small_inputs
    cfg = write_config(tmp_path / "publish.toml", tmp_path / "out", extra="\n[pipeline]\nbackoff_seconds = 0.05\n")
    flaky_sink(2)
    started = time.monotonic()
    result = run_refunds(load_config(cfg), "2026-04-24", refunds_path, merchants_path)
    assert result.receipt is not None and _FlakyCommit.calls == 3
    assert time.monotonic() - started >= 0.05 + 0.1  # backoff 0.05s, then 0.1s
    # Failed attempts removed their own staging: only the published run remains.
    d = load_config(cfg).sink()[0].make_diagnostic(load_config(cfg).sink()[1])
    from atomic_publish import Run

    assert d.diagnose(Run.new("refunds_settled", "2026-04-24")).state is State.DONE


def test_retries_are_bounded(small_inputs, tmp_path, flaky_sink):
    refunds_path, merchants_path = small_inputs
    cfg = write_config(tmp_path / "publish.toml", tmp_path / "out", extra="\n[pipeline]\nbackoff_seconds = 0\n")
    flaky_sink(5)
    with pytest.raises(TransientError, match="#3"):
        run_refunds(load_config(cfg), "2026-04-24", refunds_path, merchants_path)
    assert _FlakyCommit.calls == 3


def test_structural_errors_are_not_retried(tmp_path):
    cfg = write_config(tmp_path / "publish.toml", tmp_path / "out")
    refunds_path = tmp_path / "refunds.csv"
    refunds_path.write_text("refund_id,payment_id\nR1,P1\n")
    merchants_path = generate_inputs(tmp_path / "m", rows=1, merchants=10)[1]
    started = time.monotonic()
    with pytest.raises(InputError, match="missing column"):
        run_refunds(load_config(cfg), "2026-04-24", refunds_path, merchants_path)
    assert time.monotonic() - started < 1.0


def test_sigterm_mid_stage_removes_the_attempts_own_staging(medium_inputs, tmp_path):
    cfg = write_config(tmp_path / "publish.toml", tmp_path / "out")
    env = cli_env(cfg, PUBLISH_PAUSE_AT="mid_stage:30")
    proc = start_cli(*refunds_run_args(medium_inputs), env=env)
    staging = tmp_path / "out" / "_staging" / "refunds_settled"
    deadline = time.monotonic() + 30
    while not (staging.exists() and any(staging.iterdir())):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "SIGTERM" in stderr or "signal 15" in stderr
    assert list(staging.iterdir()) == []
    d = run_cli("diagnose", "--dataset", "refunds_settled", "--run-date", "2026-04-24", "--json", config=cfg)
    assert d.code == 10 and d.json()["state"] == "NOTHING_IN_FLIGHT"


def test_a_stop_that_came_back_as_a_transient_error_is_not_retried(small_inputs, tmp_path, monkeypatch):
    """The runner retries transient errors, but never after a SIGTERM: a driver may turn the stop
    into a connection error (a transient one), and a retry would start a new attempt the operator
    asked to stop. The signal is real; the error that carries it is what a driver would raise."""
    from atomic_publish.pipelines import runner
    from atomic_publish.sdk import DestinationUnavailable, Terminated

    calls = []

    def publish_that_swallows_the_stop(*args, **kwargs):
        calls.append(args[2].attempt)
        try:
            signal.raise_signal(signal.SIGTERM)
        except Terminated:
            raise DestinationUnavailable("connection closed (a driver's view of the stop)") from None
        raise AssertionError("the SIGTERM handler did not raise")

    monkeypatch.setattr(runner, "publish", publish_that_swallows_the_stop)
    refunds_path, merchants_path = small_inputs
    cfg = write_config(tmp_path / "publish.toml", tmp_path / "out", extra="\n[pipeline]\nbackoff_seconds = 0\n")
    with pytest.raises(DestinationUnavailable, match="a driver's view"):
        run_refunds(load_config(cfg), "2026-04-24", refunds_path, merchants_path)
    assert len(calls) == 1, calls  # without the stop: three attempts (test_retries_are_bounded)


def test_generate_into_a_place_that_cannot_hold_files_is_one_line_and_exit_2(tmp_path):
    """Found in review: ``refunds generate --out`` under a regular file exited 1 with "unexpected
    NotADirectoryError"; a bad --out is the user's to fix (exit 2), named with its reason."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli("refunds", "generate", "--out", str(blocker / "inputs"), "--rows", "5", env=cli_env())
    assert result.code == 2, result.stderr
    assert (
        result.stderr.strip()
        == f"error: --out {blocker / 'inputs'}: cannot write the sample inputs there: Not a directory"
    )
