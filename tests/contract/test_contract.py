"""The contract suite: every sink, every crash point, the same assertions.

For each crash point: run the pipeline in a subprocess that SIGKILLs itself there, diagnose (the
state must be the one the point leaves), recover, re-run, and compare the output with a clean run's
byte for byte, with no orphan left. Plus: a reader polling throughout never sees a partial publish;
two attempts racing publish exactly once; a re-run after DONE is refused and changes nothing.
"""

from __future__ import annotations

import threading
import time

import pytest

from atomic_publish import Fenced, LostRace, Run
from atomic_publish.publishers.taxonomy import State
from tests.helpers import cli_env, refunds_run_args, run_cli, start_cli

from .harness import CRASH_POINTS, DATASET, DATE, HARNESSES, SinkHarness, loaded

pytestmark = pytest.mark.contract

SINKS = list(HARNESSES)
CASES = [(sink, point) for sink in SINKS for point in CRASH_POINTS[sink]]


def _marks(sink: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.integration] if HARNESSES[sink][0] else []


def _params(sinks):  # type: ignore[no-untyped-def]
    return [pytest.param(s, marks=_marks(s), id=s) for s in sinks]


@pytest.fixture
def harness(request) -> SinkHarness:
    """The sink under test, with the real services it needs from the harness."""
    needs, factory = HARNESSES[request.param]
    return factory(*(request.getfixturevalue(name) for name in needs))


def _job_args(harness, inputs, *extra):
    return (harness.command or refunds_run_args)(inputs, *extra)


def _diagnose(cfg, harness):
    result = run_cli(
        "diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=cli_env(cfg, **harness.extra_env)
    )
    doc = result.json()
    assert result.code == State(doc["state"]).exit_code
    return doc


@pytest.mark.parametrize(
    "harness, point",
    [pytest.param(s, p, marks=_marks(s), id=f"{s}-{p}") for s, p in CASES],
    indirect=["harness"],
)
def test_crash_diagnose_recover_rerun(harness, point, tmp_path, small_inputs, reference):
    ref_bytes = reference(harness)
    cfg = harness.make_config(tmp_path)
    crashed = run_cli(*_job_args(harness, small_inputs), env=cli_env(cfg, PUBLISH_CRASH_AT=point, **harness.extra_env))
    assert crashed.code == -9, f"expected SIGKILL at {point}, got {crashed.code}: {crashed.stderr}"

    expected = harness.expected_after_crash[point]
    doc = _diagnose(cfg, harness)
    assert doc["state"] == expected.value, doc
    if expected in (State.ORPHANED, State.PUBLISHED_WITH_ORPHANS):
        assert doc["orphans"] and all(o["attempt"] for o in doc["orphans"])

    recovered = run_cli(
        "recover", "--dataset", DATASET, "--run-date", DATE, "--apply", "--json", env=cli_env(cfg, **harness.extra_env)
    )
    after = State(recovered.json()["after"]["state"])
    assert after is (State.DONE if expected.published else State.NOTHING_IN_FLIGHT), recovered.stdout
    assert recovered.code == after.exit_code

    rerun = run_cli(*_job_args(harness, small_inputs), env=cli_env(cfg, **harness.extra_env))
    assert rerun.code == (3 if expected.published else 0), rerun.stderr

    final = _diagnose(cfg, harness)
    assert final["state"] == "DONE" and final["orphans"] == []
    assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) == ref_bytes


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_reader_never_sees_a_partial_publish(harness, tmp_path, medium_inputs):
    cfg = harness.make_config(tmp_path / "ref")
    assert run_cli(*_job_args(harness, medium_inputs), env=cli_env(cfg, **harness.extra_env)).code == 0
    clean = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))

    cfg = harness.make_config(tmp_path)
    config, run = loaded(cfg), Run.new(DATASET, DATE)
    seen: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            gated = harness.gated_read(config, run)
            if gated is None:
                seen.append("nothing")
            elif gated == clean:
                seen.append("complete")
            else:
                errors.append(f"gated reader saw {len(gated)} bytes, not the {len(clean)} published")
            if harness.ungated_read is not None:
                raw = harness.ungated_read(config, run)
                if raw is not None and raw != clean:
                    errors.append(f"ungated reader saw {len(raw)} bytes at the output location")
            time.sleep(0.002)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        # Hold the attempt mid-stage and between the commit's steps so the reader polls there.
        env = cli_env(cfg, PUBLISH_PAUSE_AT="mid_stage:1,after_stage:1,after_data_rename:0.5", **harness.extra_env)
        proc = start_cli(*_job_args(harness, medium_inputs), env=env)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    # A poll can outlast the 0.1 s grace above, so the final state is read once more, after the run.
    assert seen[0] == "nothing" and harness.gated_read(config, run) == clean
    # Once readers see the run, they always do: it never vanishes nor goes back to an earlier state.
    first = seen.index("complete") if "complete" in seen else len(seen)
    assert seen[first:].count("nothing") == 0, f"the run vanished after being seen at poll {first}"
    # The reader really polled while the publish was in flight (a Kafka poll builds consumers and
    # takes ~0.2 s; a file poll takes microseconds).
    assert seen.count("nothing") >= 5


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_two_attempts_racing_publish_exactly_once(harness, tmp_path, small_inputs, reference):
    ref_bytes = reference(harness)
    cfg = harness.make_config(tmp_path)
    # Both processes are held after staging so they are truly in flight at the same time.
    env = cli_env(cfg, PUBLISH_PAUSE_AT="after_extract:0.2,after_stage:3", **harness.extra_env)
    procs = [start_cli(*_job_args(harness, small_inputs), env=env) for _ in range(2)]
    codes = sorted(p.wait(timeout=120) for p in procs)
    stderrs = [p.stderr.read() for p in procs if p.stderr]
    # The loser ends with a clear error: RUNNING (13) if it met the winner's lock or lease, already
    # published (3) if it came after, or lost the race at the commit (4) if both got past a lease
    # at the same instant (a lease is evidence, not a mutex). Never a second publish.
    assert codes[0] == 0 and codes[1] in (3, 4, 13), (codes, stderrs)
    doc = _diagnose(cfg, harness)
    assert doc["state"] == "DONE" and doc["orphans"] == []
    assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) == ref_bytes


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_commit_race_without_the_run_lock_publishes_once(harness, tmp_path, monkeypatch):
    """Below the lock: two attempts that both staged commit at once (the lock lost or not shared).
    The commit itself must let exactly one win."""
    import pyarrow as pa

    for name, value in harness.extra_env.items():
        monkeypatch.setenv(name, value)

    config = loaded(harness.make_config(tmp_path))
    definition, options = config.sink()
    publisher, diagnostic = definition.make_publisher(options), definition.make_diagnostic(options)
    table = pa.table({"refund_id": [f"R{i}" for i in range(100)], "_run_id": ["x"] * 100, "v": ["x"] * 100})
    a, b = Run.new(DATASET, DATE), Run.new(DATASET, DATE)
    staged = {r.attempt: publisher.stage(r, table.to_reader()) for r in (a, b)}
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def commit(r):
        barrier.wait()
        try:
            results[r.attempt] = publisher.commit(r, [staged[r.attempt]])
        except (LostRace, Fenced) as exc:
            # Kafka: the second attempt's init fenced the first; if the winner's ledger record is not
            # there yet when the loser looks, it is Fenced (a newer attempt holds the run), not LostRace.
            results[r.attempt] = exc
            publisher.discard(r, [staged[r.attempt]])

    threads = [threading.Thread(target=commit, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = sorted(type(v).__name__ for v in results.values())
    assert outcomes in (["LostRace", "Receipt"], ["Fenced", "Receipt"]), outcomes
    d = diagnostic.diagnose(Run.new(DATASET, DATE))
    assert d.state is State.DONE and not d.orphans


@pytest.mark.parametrize("harness", _params(SINKS), indirect=True)
def test_rerun_after_done_is_refused_and_changes_nothing(harness, tmp_path, small_inputs):
    cfg = harness.make_config(tmp_path)
    assert run_cli(*_job_args(harness, small_inputs), env=cli_env(cfg, **harness.extra_env)).code == 0
    before = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))
    before_doc = _diagnose(cfg, harness)
    refused = run_cli(*_job_args(harness, small_inputs), env=cli_env(cfg, **harness.extra_env))
    assert refused.code == 3 and "already published" in refused.stderr
    noop = run_cli(*_job_args(harness, small_inputs, "--if-absent"), env=cli_env(cfg, **harness.extra_env))
    assert noop.code == 0
    after_doc = _diagnose(cfg, harness)
    assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) == before
    assert after_doc["state"] == "DONE"
    strip = lambda d: [(e["kind"], e["location"], e["size_bytes"], e["attempt"]) for e in d["evidence"]]  # noqa: E731
    assert strip(after_doc) == strip(before_doc)
