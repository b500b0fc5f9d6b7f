"""A stop (SIGTERM/SIGINT) before the commit point is obeyed and reported as one even when its
exception never reaches us as such: code between the signal and us catches it (a library's
``except Exception``, a records source that retries) or wraps it (a driver calling back into
Python from C, an import cut in half). Found from outside: an S3 publish that a SIGTERM reached
during its first read of the commit point published anyway (exit 0); others ended with exit 5 or 1
naming the wrapped error instead of 143.

The signals are real (``signal.raise_signal`` in the main thread, inside ``terminate_on_signals``);
the destination is the file sink, read back with the operating system's own calls.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import atomic_publish as ap
from atomic_publish.cli import run_guarded
from atomic_publish.sdk import DestinationUnavailable, Terminated, received_signal, terminate_on_signals

RUN = {"dataset": "refunds", "run_date": "2026-04-24"}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "publish.toml"
    cfg.write_text(f'[defaults]\nsink = "local"\n[sinks.local]\ntype = "file"\nroot = "{tmp_path / "out"}"\n')
    return cfg


def _batches(after_first: Any) -> Any:
    """Three batches; ``after_first`` runs between the first and the second (where the signal lands)."""
    schema = pa.schema([("refund_id", pa.string()), ("amount_paise", pa.int64())])

    def gen() -> Any:
        for i in range(3):
            yield pa.record_batch([pa.array([f"R{i}"]), pa.array([i])], schema=schema)
            if i == 0:
                after_first()

    return pa.RecordBatchReader.from_batches(schema, gen())


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _swallow() -> None:
    with contextlib.suppress(Exception):  # a records source that retries whatever goes wrong
        signal.raise_signal(signal.SIGTERM)


def _wrap() -> None:
    try:
        signal.raise_signal(signal.SIGTERM)
    except Exception as exc:  # a driver reporting its callback's failure as its own
        raise ValueError("the driver's stream callback failed") from exc


@pytest.mark.parametrize("source", [_swallow, _wrap], ids=["swallowed", "wrapped"])
def test_a_stop_caught_on_its_way_up_still_stops_the_attempt_before_the_commit(config, tmp_path, source):
    with terminate_on_signals(), pytest.raises(Terminated) as stopped:
        ap.publish(_batches(source), sink="local", config=config, **RUN)
    assert stopped.value.signum == signal.SIGTERM
    assert "stopped before the commit point" in str(stopped.value)
    assert "removed its own staging" in str(stopped.value)
    if source is _wrap:
        assert "the driver's stream callback failed" in str(stopped.value)  # what the stop caused, named
    # Nothing published, nothing left: only the lock file the run's lock uses.
    assert [f for f in _files(tmp_path / "out") if not f.startswith("_locks/")] == []
    assert ap.diagnose(sink="local", config=config, **RUN).state.value == "NOTHING_IN_FLIGHT"


def test_the_stop_is_forgotten_when_a_new_block_starts(config, tmp_path):
    with terminate_on_signals(), pytest.raises(Terminated):
        ap.publish(_batches(_swallow), sink="local", config=config, **RUN)
    with terminate_on_signals():
        assert received_signal() == 0
        result = ap.publish(_batches(lambda: None), sink="local", config=config, **RUN)
    assert result.receipt is not None and (tmp_path / "out" / "refunds" / "2026-04-24.csv").is_file()


def test_the_cli_reports_a_wrapped_stop_as_the_stop(capsys):
    def action() -> int:
        _swallow()
        raise DestinationUnavailable("bulk load failed: IO: nanoarrow call failed: received SIGTERM")

    with pytest.raises(SystemExit) as ended:
        run_guarded(action)
    assert ended.value.code == 143
    err = capsys.readouterr().err
    assert err.startswith("error: received SIGTERM; stopped before the commit point (bulk load failed")
    assert len(err.strip().splitlines()) == 1


def test_the_cli_keeps_a_code_that_tells_the_state(capsys):
    """After a stop, a refusal that says what the destination holds keeps its own code."""

    def action() -> int:
        _swallow()
        raise ap.AlreadyPublished("run refunds/2026-04-24 is already published")

    with pytest.raises(SystemExit) as ended:
        run_guarded(action)
    assert ended.value.code == 3


def test_a_group_stopped_before_its_decision_decides_nothing(tmp_path):
    """The same for a group of sinks: a stop that was swallowed stops the group before its
    decision is recorded; every sink's staging is removed and nothing is published anywhere."""
    (tmp_path / "journal").mkdir()
    cfg = tmp_path / "publish.toml"
    cfg.write_text(
        f'[sinks.a]\ntype = "file"\nroot = "{tmp_path / "a"}"\nformat = "parquet"\n'
        f'[sinks.b]\ntype = "file"\nroot = "{tmp_path / "b"}"\nformat = "parquet"\n'
        f'[groups.both]\nsinks = ["a", "b"]\njournal = "{tmp_path / "journal"}"\n'
    )
    with terminate_on_signals(), pytest.raises(Terminated):
        ap.publish_group(_batches(_swallow), group="both", config=cfg, **RUN)
    for root in ("a", "b"):
        assert [f for f in _files(tmp_path / root) if not f.startswith("_locks/")] == []
    assert [f for f in _files(tmp_path / "journal") if "decision" in f] == []
    assert ap.diagnose_group(group="both", config=cfg, **RUN).state.value == "NOTHING_IN_FLIGHT"
