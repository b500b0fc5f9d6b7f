"""The contract suite: every sink, every crash point, the same assertions (see ``ContractSuite``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from .. import CommitRejected, Fenced, LostRace, Run, Staged, begin_run, stage_part
from ..sdk import State, check_parts
from ._harness import DATASET, DATE, SinkHarness, loaded, run_cli, start_cli
from ._parts_worker import part_table

PARTS = 4
Reference = Callable[[SinkHarness], bytes]


class ContractSuite:
    """Subclass it with a ``harness`` fixture (a ``SinkHarness``) and the ``crash_points`` the sink
    passes; every test then runs against the sink's real destination:

    - for each crash point: the job SIGKILLs itself there; ``diagnose`` must name the state the
      harness expects; ``recover --apply`` must reach DONE or NOTHING_IN_FLIGHT; a re-run must end
      in DONE with exactly a clean run's content and no orphan;
    - a reader polling throughout a publish never sees a partial run, and never sees it vanish;
    - two attempts racing publish exactly once (the loser exits 3, 4 or 13), with and without the
      run lock (the commit itself lets one win);
    - a re-run after DONE is refused (3) or a no-op (``--if-absent``) and changes nothing;

    Add ``PartsSuite`` to the bases for a sink that takes a run in several parts, ``OnePieceSuite``
    for one that does not.
    """

    crash_points: ClassVar[Sequence[str]] = ()

    # -- crash points -------------------------------------------------------------------------------

    def test_crash_diagnose_recover_rerun(
        self,
        harness: SinkHarness,
        crash_point: str,
        tmp_path: Path,
        contract_inputs: Any,
        contract_reference: Reference,
    ) -> None:
        assert crash_point in harness.expected_after_crash, f"{harness.name}: no expected state after {crash_point}"
        ref_bytes = contract_reference(harness)
        cfg = harness.make_config(tmp_path)
        crashed = run_cli(*harness.job(contract_inputs), env=harness.env(cfg, PUBLISH_CRASH_AT=crash_point))
        assert crashed.code == -9, f"expected SIGKILL at {crash_point}, got {crashed.code}: {crashed.stderr}"

        expected = harness.expected_after_crash[crash_point]
        doc = _diagnose(cfg, harness)
        assert doc["state"] == expected.value, doc
        if expected in (State.ORPHANED, State.PUBLISHED_WITH_ORPHANS):
            assert doc["orphans"] and all(o["attempt"] for o in doc["orphans"])

        recovered = run_cli(
            "recover", "--dataset", DATASET, "--run-date", DATE, "--apply", "--json", env=harness.env(cfg)
        )
        after = State(recovered.json()["after"]["state"])
        assert after is (State.DONE if expected.published else State.NOTHING_IN_FLIGHT), recovered.stdout
        assert recovered.code == after.exit_code

        rerun = run_cli(*harness.job(contract_inputs), env=harness.env(cfg))
        assert rerun.code == (3 if expected.published else 0), rerun.stderr

        final = _diagnose(cfg, harness)
        assert final["state"] == "DONE" and final["orphans"] == []
        assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) == ref_bytes

    # -- readers and races --------------------------------------------------------------------------

    def test_reader_never_sees_a_partial_publish(
        self, harness: SinkHarness, tmp_path: Path, contract_medium_inputs: Any
    ) -> None:
        cfg = harness.make_config(tmp_path / "ref")
        assert run_cli(*harness.job(contract_medium_inputs), env=harness.env(cfg)).code == 0
        clean = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))

        cfg = harness.make_config(tmp_path / "run")
        config, run = loaded(cfg), Run.new(DATASET, DATE)
        seen: list[str] = []
        errors: list[str] = []
        stop = threading.Event()

        def reader() -> None:
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
            env = harness.env(cfg, PUBLISH_PAUSE_AT="mid_stage:1,after_stage:1,after_data_rename:0.5")
            proc = start_cli(*harness.job(contract_medium_inputs), env=env)
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
        # The reader really polled while the publish was in flight.
        assert seen.count("nothing") >= 5

    def test_two_attempts_racing_publish_exactly_once(
        self, harness: SinkHarness, tmp_path: Path, contract_inputs: Any, contract_reference: Reference
    ) -> None:
        ref_bytes = contract_reference(harness)
        cfg = harness.make_config(tmp_path)
        # Both processes are held after staging so they are truly in flight at the same time.
        env = harness.env(cfg, PUBLISH_PAUSE_AT="after_extract:0.2,after_stage:3")
        procs = [start_cli(*harness.job(contract_inputs), env=env) for _ in range(2)]
        codes = sorted(p.wait(timeout=120) for p in procs)
        stderrs = [p.stderr.read() for p in procs if p.stderr]
        # The loser ends with a clear error: RUNNING (13) if it met the winner's lock or lease, already
        # published (3) if it came after, or lost the race at the commit (4) if both got past a lease
        # at the same instant (a lease is evidence, not a mutex). Never a second publish.
        assert codes[0] == 0 and codes[1] in (3, 4, 13), (codes, stderrs)
        doc = _diagnose(cfg, harness)
        assert doc["state"] == "DONE" and doc["orphans"] == []
        assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) == ref_bytes

    def test_commit_race_without_the_run_lock_publishes_once(
        self, harness: SinkHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Below the lock: two attempts that both staged commit at once (the lock lost or not shared).
        The commit itself must let exactly one win."""
        import pyarrow as pa

        for name, value in harness.extra_env.items():
            monkeypatch.setenv(name, value)
        publisher, diagnostic = _sink(harness.make_config(tmp_path))
        table = pa.table({"refund_id": [f"R{i}" for i in range(100)], "_run_id": ["x"] * 100, "v": ["x"] * 100})
        a, b = Run.new(DATASET, DATE), Run.new(DATASET, DATE)
        staged = {r.attempt: publisher.stage(r, table.to_reader()) for r in (a, b)}
        results: dict[str, object] = {}
        barrier = threading.Barrier(2)

        def commit(r: Run) -> None:
            barrier.wait()
            try:
                results[r.attempt] = publisher.commit(r, [staged[r.attempt]])
            except (LostRace, Fenced) as exc:
                # Fenced: a sink whose newer attempt fences the older (Kafka) before its record exists.
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

    def test_rerun_after_done_is_refused_and_changes_nothing(
        self, harness: SinkHarness, tmp_path: Path, contract_inputs: Any
    ) -> None:
        cfg = harness.make_config(tmp_path)
        assert run_cli(*harness.job(contract_inputs), env=harness.env(cfg)).code == 0
        before = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))
        before_doc = _diagnose(cfg, harness)
        refused = run_cli(*harness.job(contract_inputs), env=harness.env(cfg))
        assert refused.code == 3 and "already published" in refused.stderr
        noop = run_cli(*harness.job(contract_inputs, "--if-absent"), env=harness.env(cfg))
        assert noop.code == 0
        after_doc = _diagnose(cfg, harness)
        assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) == before
        assert after_doc["state"] == "DONE"

        def strip(d: dict[str, Any]) -> list[tuple[Any, ...]]:
            return [(e["kind"], e["location"], e["size_bytes"], e["attempt"]) for e in d["evidence"]]

        assert strip(after_doc) == strip(before_doc)


class PartsSuite:
    """The contract of a sink that takes a run in several parts (``Capabilities.max_parts`` is not
    1): 4 parts staged by 4 processes are committed once by a fifth; a driver killed after some parts
    leaves orphans attributed to its attempt; a part staged twice (a retried task, part 0 included) is
    published once."""

    # -- parts --------------------------------------------------------------------------------------

    def test_four_parts_staged_by_four_processes_are_committed_once_by_a_fifth(
        self,
        harness: SinkHarness,
        tmp_path: Path,
        contract_inputs: Any,
        contract_reference: Reference,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        cfg, publisher, diagnostic = _parts_sink(harness, tmp_path, monkeypatch)
        run = Run.new(DATASET, DATE)
        with begin_run(publisher, diagnostic, run) as job:
            staged = _workers(harness, cfg, run.attempt, contract_inputs)
            # Nothing is visible while the parts are staged; the run is RUNNING (the driver holds it).
            assert harness.gated_read(loaded(cfg), run) is None
            assert run_cli("diagnose", "--dataset", DATASET, "--run-date", DATE, env=harness.env(cfg)).code == 13
            result = job.commit(staged)
        assert result.receipt is not None and result.receipt.attempt == run.attempt
        assert sorted(s.part for s in staged) == list(range(PARTS))
        doc = _diagnose(cfg, harness)
        assert doc["state"] == "DONE" and doc["orphans"] == []
        published = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))
        assert harness.same(published) == harness.same(contract_reference(harness))

    def test_a_driver_killed_after_some_parts_leaves_attributable_orphans(
        self, harness: SinkHarness, tmp_path: Path, contract_inputs: Any, contract_reference: Reference
    ) -> None:
        cfg = harness.make_config(tmp_path)
        assert _sink(cfg)[0].capabilities.max_parts != 1, f"{harness.name} takes a run in one piece: no PartsSuite"
        driver = textwrap.dedent(
            f"""
            import os, signal
            from atomic_publish import Run, begin_run, load_config
            from atomic_publish.testing._parts_worker import part_table
            definition, options = load_config({str(cfg)!r}).sink()
            run = Run.new({DATASET!r}, {DATE!r})
            with begin_run(definition.make_publisher(options), definition.make_diagnostic(options), run) as job:
                for part in (0, 1):
                    job.stage(part_table(*{[str(p) for p in contract_inputs]!r}, part, {PARTS}), part=part)
                print(run.attempt, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", driver],
            env=harness.env(cfg),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        attempt = proc.stdout.strip()
        doc = _diagnose(cfg, harness)
        assert doc["state"] == "ORPHANED", doc
        assert {o["attempt"] for o in doc["orphans"]} == {attempt}
        assert run_cli("recover", "--dataset", DATASET, "--run-date", DATE, "--apply", env=harness.env(cfg)).code == 10
        assert run_cli(*harness.job(contract_inputs), env=harness.env(cfg)).code == 0
        assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) == contract_reference(harness)

    def test_a_part_staged_twice_is_published_once(
        self,
        harness: SinkHarness,
        tmp_path: Path,
        contract_inputs: Any,
        contract_reference: Reference,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        cfg, publisher, diagnostic = _parts_sink(harness, tmp_path, monkeypatch)
        run = Run.new(DATASET, DATE)
        with begin_run(publisher, diagnostic, run) as job:
            staged = _workers(harness, cfg, run.attempt, contract_inputs)
            # Parts 0 and 2 again (retried tasks), in other processes: other tokens, never the same
            # names, and the first stagings are still whole.
            again = _workers(harness, cfg, run.attempt, contract_inputs, parts=[0, 2])
            for second in again:
                assert second.token != staged[second.part].token
                with pytest.raises(CommitRejected, match="more than once"):
                    check_parts(run, [*staged, second])
            job.commit(staged)
        doc = _diagnose(cfg, harness)
        assert doc["state"] == "DONE" and doc["orphans"] == [], doc  # the unused staging was removed
        published = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))
        assert harness.same(published) == harness.same(contract_reference(harness))


def _diagnose(cfg: Path, harness: SinkHarness) -> dict[str, Any]:
    result = run_cli("diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=harness.env(cfg))
    doc: dict[str, Any] = result.json()
    assert result.code == State(doc["state"]).exit_code
    return doc


def _sink(cfg: Path) -> tuple[Any, Any]:
    definition, options = loaded(cfg).sink()
    return definition.make_publisher(options), definition.make_diagnostic(options)


def _parts_sink(harness: SinkHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any, Any]:
    """A fresh destination of a sink that takes parts, with the harness's environment in this process."""
    for name, value in harness.extra_env.items():
        monkeypatch.setenv(name, value)
    cfg = harness.make_config(tmp_path)
    publisher, diagnostic = _sink(cfg)
    assert publisher.capabilities.max_parts != 1, f"{harness.name} takes a run in one piece: no PartsSuite"
    return cfg, publisher, diagnostic


def _workers(
    harness: SinkHarness, cfg: Path, attempt: str, inputs: Any, parts: Sequence[int] = range(PARTS)
) -> list[Staged]:
    env = {**harness.env(cfg), "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), *sys.path]))}
    args = ["--config", str(cfg), "--attempt", attempt, "--parts", str(PARTS), *map(str, inputs)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "atomic_publish.testing._parts_worker", "--part", str(part), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in parts
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        out.append(Staged.from_json(stdout))
    return out


class OnePieceSuite:
    """The contract of a sink that takes a run in one piece (``Capabilities.max_parts == 1``): a part
    beyond the first is refused before anything is written, and nothing is left."""

    def test_a_sink_that_takes_one_piece_refuses_parts_clearly(
        self, harness: SinkHarness, tmp_path: Path, contract_inputs: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name, value in harness.extra_env.items():
            monkeypatch.setenv(name, value)
        cfg = harness.make_config(tmp_path)
        publisher, _ = _sink(cfg)
        assert publisher.capabilities.max_parts == 1
        run = Run.new(DATASET, DATE)
        with pytest.raises(CommitRejected, match="one piece"):
            stage_part(publisher, run, part_table(str(contract_inputs[0]), str(contract_inputs[1]), 1, PARTS), part=1)
        assert run_cli("diagnose", "--dataset", DATASET, "--run-date", DATE, env=harness.env(cfg)).code == 10
