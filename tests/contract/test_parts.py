"""Runs staged in parts by separate worker processes and committed once by a driver: every sink
that declares it can (``Capabilities.max_parts``), the others refuse with a clear message.

- 4 parts staged by 4 processes, committed by a fifth (the test process, holding the run);
- the driver killed after some parts were staged: the diagnosis names them (the driver's attempt),
  recover removes them, a re-run publishes the run once;
- a part staged twice (a retried task): only the staging the driver commits is published; the
  other is removed after the commit, never a second copy.

Every outcome is read back by the sink's independent reader and compared with a clean publish.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from atomic_publish import CommitRejected, Run, Staged, begin_run, stage_part
from atomic_publish.publishers._types import check_parts
from tests.helpers import REPO, cli_env, refunds_run_args, run_cli

from .harness import DATASET, DATE, HARNESSES, SinkHarness, loaded
from .parts_worker import part_table

pytestmark = pytest.mark.contract

PARTS = 4
MULTI = ["file", "postgres", "iceberg", "s3"]  # the sinks whose definition accepts several parts
SINGLE = ["kafka"]


@pytest.fixture
def harness(request) -> SinkHarness:
    needs, factory = HARNESSES[request.param]
    return factory(*(request.getfixturevalue(name) for name in needs))


def _params(names):  # type: ignore[no-untyped-def]
    return [pytest.param(n, marks=[pytest.mark.integration] if HARNESSES[n][0] else [], id=n) for n in names]


def _sink(harness, cfg):  # type: ignore[no-untyped-def]
    definition, options = loaded(cfg).sink()
    return definition.make_publisher(options), definition.make_diagnostic(options)


def _canonical(harness: SinkHarness, data: bytes) -> bytes:
    """Published content, independent of how the run was split: S3 objects are one CSV per part
    (each with its header), the file sink's one CSV has the parts' rows in part order, so their
    rows are compared sorted."""
    if not harness.name.startswith(("s3", "file")):
        return data
    lines = data.splitlines()
    header = lines[0]
    if harness.name.startswith("file"):  # one file: one header, and a second one would be a row
        return b"\n".join([header, *sorted(lines[1:])])
    return b"\n".join([header, *sorted(line for line in lines if line != header)])


def _workers(cfg, attempt, inputs, env, parts=range(PARTS)):  # type: ignore[no-untyped-def]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.contract.parts_worker",
                "--config",
                str(cfg),
                "--attempt",
                attempt,
                "--part",
                str(part),
                "--parts",
                str(PARTS),
                str(inputs[0]),
                str(inputs[1]),
            ],
            cwd=REPO,
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


@pytest.mark.parametrize("harness", _params(MULTI), indirect=True)
def test_four_parts_staged_by_four_processes_are_committed_once_by_a_fifth(
    harness, tmp_path, small_inputs, reference, monkeypatch
):
    for name, value in harness.extra_env.items():
        monkeypatch.setenv(name, value)
    cfg = harness.make_config(tmp_path)
    publisher, diagnostic = _sink(harness, cfg)
    run = Run.new(DATASET, DATE)
    with begin_run(publisher, diagnostic, run) as job:
        staged = _workers(cfg, run.attempt, small_inputs, cli_env(cfg, **harness.extra_env))
        # Nothing is visible while the parts are staged; the run is RUNNING (the driver holds it).
        assert harness.gated_read(loaded(cfg), run) is None
        assert (
            run_cli("diagnose", "--dataset", DATASET, "--run-date", DATE, env=cli_env(cfg, **harness.extra_env)).code
            == 13
        )
        result = job.commit(staged)
    assert result.receipt is not None and result.receipt.attempt == run.attempt
    assert sorted(s.part for s in staged) == list(range(PARTS))
    doc = run_cli(
        "diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=cli_env(cfg, **harness.extra_env)
    ).json()
    assert doc["state"] == "DONE" and doc["orphans"] == []
    published = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))
    assert _canonical(harness, published) == _canonical(harness, reference(harness))


@pytest.mark.parametrize("harness", _params(MULTI), indirect=True)
def test_a_driver_killed_after_some_parts_leaves_attributable_orphans(harness, tmp_path, small_inputs, reference):
    cfg = harness.make_config(tmp_path)
    driver = textwrap.dedent(
        f"""
        import os, signal, sys
        from atomic_publish import Run, begin_run, load_config
        from tests.contract.parts_worker import part_table
        definition, options = load_config({str(cfg)!r}).sink()
        run = Run.new({DATASET!r}, {DATE!r})
        with begin_run(definition.make_publisher(options), definition.make_diagnostic(options), run) as job:
            for part in (0, 1):
                job.stage(part_table({str(small_inputs[0])!r}, {str(small_inputs[1])!r}, part, {PARTS}), part=part)
            print(run.attempt, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", driver],
        cwd=REPO,
        env=cli_env(cfg, **harness.extra_env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    attempt = proc.stdout.strip()
    env = cli_env(cfg, **harness.extra_env)
    doc = run_cli("diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=env).json()
    assert doc["state"] == "ORPHANED", doc
    assert {o["attempt"] for o in doc["orphans"]} == {attempt}
    assert run_cli("recover", "--dataset", DATASET, "--run-date", DATE, "--apply", env=env).code == 10
    assert run_cli(*refunds_run_args(small_inputs), env=env).code == 0
    assert harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE)) == reference(harness)


@pytest.mark.parametrize("harness", _params(MULTI), indirect=True)
def test_a_part_staged_twice_is_published_once(harness, tmp_path, small_inputs, reference, monkeypatch):
    for name, value in harness.extra_env.items():
        monkeypatch.setenv(name, value)
    cfg = harness.make_config(tmp_path)
    publisher, diagnostic = _sink(harness, cfg)
    run = Run.new(DATASET, DATE)
    with begin_run(publisher, diagnostic, run) as job:
        staged = _workers(cfg, run.attempt, small_inputs, cli_env(cfg, **harness.extra_env))
        # Part 2 again (a retried task), in another process: another token, never the same names.
        (again,) = _workers(cfg, run.attempt, small_inputs, cli_env(cfg, **harness.extra_env), parts=[2])
        assert again.part == 2 and again.token != staged[2].token
        with pytest.raises(CommitRejected, match="more than once"):
            check_parts(run, [*staged, again])
        job.commit(staged)
    doc = run_cli(
        "diagnose", "--dataset", DATASET, "--run-date", DATE, "--json", env=cli_env(cfg, **harness.extra_env)
    ).json()
    assert doc["state"] == "DONE" and doc["orphans"] == [], doc  # the unused staging was removed
    published = harness.published_bytes(loaded(cfg), Run.new(DATASET, DATE))
    assert _canonical(harness, published) == _canonical(harness, reference(harness))


@pytest.mark.parametrize("harness", _params(SINGLE), indirect=True)
def test_a_sink_that_takes_one_piece_refuses_parts_clearly(harness, tmp_path, small_inputs, monkeypatch):
    for name, value in harness.extra_env.items():
        monkeypatch.setenv(name, value)
    cfg = harness.make_config(tmp_path)
    publisher, _ = _sink(harness, cfg)
    assert publisher.capabilities.max_parts == 1
    run = Run.new(DATASET, DATE)
    with pytest.raises(CommitRejected, match="one piece"):
        stage_part(publisher, run, part_table(str(small_inputs[0]), str(small_inputs[1]), 1, PARTS), part=1)
    assert (
        run_cli("diagnose", "--dataset", DATASET, "--run-date", DATE, env=cli_env(cfg, **harness.extra_env)).code == 10
    )
