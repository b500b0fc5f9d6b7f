"""publish(): the one orchestration every caller uses (CLI, pipeline runner, library users).

Order matters, and is the same for every sink: take the run lock, diagnose (refuse unless nothing is in flight),
stage (nothing visible), commit (the single atomic step). Own staging is discarded after a failure
before the commit, or after a CommitRejected (the destination proved the commit did not land);
every other way out of the commit is an unknown outcome, after which nothing is touched and the
diagnosis settles it from the destination.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from ._arrow import InputFiles, as_reader, check_columns, conform, open_inputs, require_rows
from ._crash import crash_point
from ._errors import (
    AlreadyPublished,
    CommitOutcomeUnknown,
    CommitRejected,
    DestinationUnavailable,
    InputError,
    RecoveryNeeded,
    RollForwardNeeded,
    RunInProgress,
    Terminated,
    first_line,
)
from ._protocol import (
    AssemblesParts,
    ChecksSchema,
    Diagnostic,
    ProgressCallback,
    Publisher,
    StagesFiles,
    check_hooks,
)
from ._signals import critical_section, stop_if_received, stopped, stopping
from ._types import Receipt, Run, Staged, new_part_token
from .taxonomy import Diagnosis, State

log = logging.getLogger("atomic_publish")


@dataclass(frozen=True)
class PublishResult:
    run: Run
    receipt: Receipt | None
    skipped: bool
    diagnosis: Diagnosis

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "attempt": self.run.attempt,
            "published": self.receipt is not None,
            "skipped_already_published": self.skipped,
            "receipt": self.receipt.to_dict() if self.receipt else None,
            "state_before": self.diagnosis.state.value,
        }


def publish(first: Any, *args: Any, **kwargs: Any) -> PublishResult:
    """Publish records as one run, all or nothing. Two forms:

    - ``publish(records, dataset="refunds", run_date="2026-04-24", sink="warehouse")``: the one call
      for a job. ``records`` is any Arrow stream (a pyarrow Table or RecordBatchReader, a polars or
      pandas DataFrame converted by pyarrow, a DuckDB relation: anything with ``__arrow_c_stream__``),
      or file paths (CSV/Parquet). ``sink`` names a sink of the configuration (``config``: a path, a
      ``LoadedConfig``, or None for ``publish.toml`` / ``$ATOMIC_PUBLISH_CONFIG`` / the embedded
      default). Keywords: ``if_absent``, ``schema``, ``progress``.
    - ``publish(publisher, diagnostic, run, records, ...)``: the same with the sink's objects built by
      the caller (engines, sink authors); see ``publish_run``.
    """
    if hasattr(first, "stage") and hasattr(first, "commit"):
        return publish_run(first, *args, **kwargs)
    return _publish_records(first, *args, **kwargs)


def _publish_records(
    records: Any,
    *,
    dataset: str,
    run_date: Any,
    sink: str | None = None,
    config: Any = None,
    if_absent: bool = False,
    schema: pa.Schema | None = None,
    progress: ProgressCallback | None = None,
) -> PublishResult:
    loaded = resolve_config(config)
    run = Run.new(dataset, run_date)
    from ._journal import rolling_forward

    why = rolling_forward(loaded, sink, run)
    if why is not None:
        raise RollForwardNeeded(why)
    definition, options = loaded.sink(sink)
    if isinstance(records, str | os.PathLike) or (
        isinstance(records, list | tuple) and records and all(isinstance(r, str | os.PathLike) for r in records)
    ):
        paths = [records] if isinstance(records, str | os.PathLike) else list(records)
        records = open_inputs([Path(os.fspath(path)) for path in paths])
    return publish_run(
        definition.make_publisher(options),
        definition.make_diagnostic(options),
        run,
        records,
        schema=schema,
        if_absent=if_absent,
        progress=progress,
    )


def resolve_config(config: Any) -> Any:
    """A LoadedConfig from a path, a LoadedConfig, or None (the usual lookup)."""
    from ._errors import ConfigError
    from .config import LoadedConfig, load_config

    if config is not None and not isinstance(config, LoadedConfig | str | os.PathLike):
        raise ConfigError(f"config must be a path to a TOML file, a LoadedConfig or None, not {type(config).__name__}")
    if isinstance(config, LoadedConfig):
        return config
    return load_config(None if config is None else Path(os.fspath(config)))


def publish_run(
    publisher: Publisher,
    diagnostic: Diagnostic,
    run: Run,
    records: Any,
    *,
    schema: pa.Schema | None = None,
    if_absent: bool = False,
    progress: ProgressCallback | None = None,
) -> PublishResult:
    """Publish ``records`` as run ``run``, all or nothing, in this process: ``begin_run``, stage the
    run in one piece, commit.

    ``records``: any Arrow stream (see as_reader), or ``open_inputs(paths)``, which a sink that
    can take files as they are (the S3 sink writing Parquet) uploads byte for byte.

    Raises AlreadyPublished (unless ``if_absent``), RunInProgress, RecoveryNeeded, InputError,
    CommitRejected (this attempt's staging was discarded) or CommitOutcomeUnknown (nothing was
    touched: diagnose the run).
    """
    records = prepare_records(publisher, records, schema=schema, progress=progress)
    with begin_run(publisher, diagnostic, run, if_absent=if_absent) as job:
        if job.skipped is not None:
            return job.skipped
        staged = job.stage(records, progress=progress)
        return job.commit([staged])


def prepare_records(
    publisher: Publisher, records: Any, *, schema: pa.Schema | None = None, progress: ProgressCallback | None = None
) -> Any:
    """Everything a publish can refuse before the run's lock, so that the refusal changes nothing at
    the destination (found from outside: a refused table still created the file sink's root, its
    ``_locks`` and ``_staging``, a Postgres schema, an Iceberg namespace): arguments of the wrong
    type, an object that is not an Arrow stream, a column ``schema`` names that is missing, an
    input without rows, and a schema the sink can never take (``ChecksSchema``). Returns what to
    stage: the records as a reader (conformed to ``schema``), or the ``InputFiles`` as they are."""
    if schema is not None and not isinstance(schema, pa.Schema):
        raise InputError(f"schema must be a pyarrow.Schema, not {type(schema).__name__}")
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a callable taking (rows, bytes), not {type(progress).__name__}")
    if isinstance(records, InputFiles) and (
        schema is None or (records.parquet_schema is not None and records.parquet_schema.equals(schema))
    ):
        # Checked as the files declare themselves, and staged as they are (a sink may upload them).
        prepared: Any = records
        declared = records.schema
    else:
        source = ", ".join(map(str, records.paths)) if isinstance(records, InputFiles) else "the records"
        # Files are read as schema's types from the start (a CSV value is never guessed, then cast).
        reader = records.reader(schema) if isinstance(records, InputFiles) else as_reader(records)
        if not isinstance(records, InputFiles):
            check_columns(reader.schema, source)  # as open_inputs checks files: no empty or repeated name
        if schema is not None:
            reader = conform(reader, schema, source=source)
        prepared = require_rows(_input_side(reader, source), source=source)  # its first batch is read here
        declared = reader.schema
    if declared is not None:
        try:
            check_input_schema(publisher, declared)
        except InputError as exc:
            raise _naming_files(exc, records) from None
    return prepared


def check_input_schema(publisher: Publisher, schema: pa.Schema) -> None:
    """The sink's own refusal of a schema it can never take (``ChecksSchema``), if it has one."""
    check_hooks(publisher)
    if publisher.capabilities.checks_schema:
        cast(ChecksSchema, publisher).check_schema(schema)


@contextlib.contextmanager
def begin_run(publisher: Publisher, diagnostic: Diagnostic, run: Run, *, if_absent: bool = False) -> Iterator[RunJob]:
    """The driver's side of a publish: take the run's lock, check the run under it (refuse unless
    nothing is in flight), and hold both while the run is staged, in this process or by workers
    (``stage_part``, under ``job.run``'s attempt), until ``job.commit(parts)``. A block that ends
    without committing, or with an error before the commit, removes every staging of the attempt
    (found by its names: a worker killed mid-part leaves one the driver never heard of).

    ``job.skipped`` is a result (not None) when the run is already published and ``if_absent``.
    """
    check_hooks(publisher)
    # A published run is refused before the lock is even taken: a re-run of a published run_id
    # writes nothing at all at the destination (not even a lease), and --if-absent is read-only.
    # A sink whose lock writes nothing (Kafka: fencing is the lock) is checked under it only.
    if publisher.capabilities.run_lock_writes and not _surely_unpublished(diagnostic, run):
        early = _refuse_if_published(run, _readable(diagnostic.diagnose(run)), if_absent)
        if early is not None:
            yield RunJob(publisher, diagnostic, run, early.diagnosis, contextlib.ExitStack(), early)
            return
    held = contextlib.ExitStack()  # holds signals from the commit until the driver is done
    with held, publisher.run_lock(run):
        before = _readable(diagnostic.diagnose(run))  # again, under the lock: the state may have moved
        skipped = _refuse_if_published(run, before, if_absent)
        if skipped is not None:
            yield RunJob(publisher, diagnostic, run, before, held, skipped)
            return
        if before.state is State.RUNNING:
            raise RunInProgress(f"run {run.run_id} is RUNNING: {before.reason}", before)
        # A destination that does not exist yet holds nothing of the run: a first publish creates it.
        if before.state is not State.NOTHING_IN_FLIGHT and before.missing_destination is None:
            raise RecoveryNeeded(
                f"run {run.run_id} is {before.state.value}: {before.reason}. Safe action: {before.safe_action}",
                before,
            )
        crash_point("after_lock")  # the lock held and the run checked; nothing staged
        job = RunJob(publisher, diagnostic, run, before, held, None)
        try:
            yield job
        except BaseException as exc:
            if job.state == "open" and not job.retained:
                _discard(publisher, run, job.staged)
                if isinstance(exc, Terminated):
                    raise Terminated(f"{exc}; this attempt removed its own staging", exc.signum) from None
                if signum := stopping():  # the signal's exception was caught and wrapped (or lost) on its way
                    cause = stopped(signum, f"{type(exc).__name__}: {first_line(exc)}")
                    raise Terminated(f"{cause}; this attempt removed its own staging", signum) from exc
            raise
        if job.state == "open" and not job.retained:  # ended without a commit: nothing of it may stay
            _discard(publisher, run, job.staged)
    if job.state == "committed" and job.parts_committed > 1:
        _tidy(diagnostic, run)


def _tidy(diagnostic: Diagnostic, run: Run) -> None:
    """After a run published in several parts, remove what its own attempt staged and did not
    commit (a part staged again by a retried or speculated task): through the one clean loop, under
    the run's lock, each artifact re-checked. Leftovers of other attempts are left to recover."""
    try:
        after = diagnostic.diagnose(Run.new(run.dataset, run.run_date))
        if after.state is State.PUBLISHED_WITH_ORPHANS and all(a.attempt == run.attempt for a in after.orphans):
            diagnostic.clean(after)
    except Exception as exc:  # published already: a leftover is the diagnosis's to name, not an error
        log.warning("published %s, but could not remove its unused parts (%s)", run.run_id, exc)


class RunJob:
    """A run held by its driver (see ``begin_run``)."""

    def __init__(
        self,
        publisher: Publisher,
        diagnostic: Diagnostic,
        run: Run,
        before: Diagnosis,
        held: contextlib.ExitStack,
        skipped: PublishResult | None,
    ) -> None:
        self.publisher, self.diagnostic, self.run, self.before = publisher, diagnostic, run, before
        self._held = held
        self.skipped = skipped
        self.staged: list[Staged] = []
        self.state = "open"  # open -> committed | rejected | unknown
        self.parts_committed = 0
        self.retained = False  # see retain()

    def stage(
        self,
        records: Any,
        *,
        schema: pa.Schema | None = None,
        progress: ProgressCallback | None = None,
        part: int = 0,
        token: str = "",
    ) -> Staged:
        """Stage a part in this process (the whole run, for a publish in one piece)."""
        log.info("staging run %s (attempt %s) to %s", self.run.run_id, self.run.attempt, self.publisher.sink_name)
        staged = stage_part(self.publisher, self.run, records, schema=schema, progress=progress, part=part, token=token)
        self.staged.append(staged)
        return staged

    def retain(self) -> None:
        """Keep this attempt's staging whatever happens from now on (a group of sinks has recorded its
        decision to commit: a sink whose commit does not complete is committed later from it, by
        ``recover --group --apply``). Nothing is discarded after this, not even on a refusal."""
        self.retained = True

    def commit(self, staged: Sequence[Staged]) -> PublishResult:
        """Commit these parts (one staging of each) in the sink's one atomic step. A proven
        refusal removes every staging of the attempt; anything else out of the commit is an
        unknown outcome and nothing is removed. From here on, SIGTERM/SIGINT are held."""
        limit = self.publisher.capabilities.max_parts
        if limit is not None and len(staged) > limit:
            self.state = "rejected"
            _discard(self.publisher, self.run, [*self.staged, *staged])
            raise CommitRejected(
                f"the {self.publisher.sink_name} sink commits at most {limit} part(s) per run; {len(staged)} were "
                "staged: publish this run from one process"
            )
        parts = len(staged)
        if self.publisher.capabilities.assembles_parts and (len(staged) > 1 or any(s.part or s.token for s in staged)):
            # Parts made one staging before the critical section: it takes time, and a signal may
            # still stop the attempt (it publishes nothing).
            try:
                staged = [cast(AssemblesParts, self.publisher).assemble(self.run, staged)]
            except CommitRejected:
                self.state = "rejected"
                _discard(self.publisher, self.run, [*self.staged, *staged])
                raise
        stop_if_received()  # a stop caught and lost on its way up still stops the attempt here
        self._held.enter_context(critical_section())
        try:
            receipt = self.publisher.commit(self.run, staged)
        except CommitRejected:
            # The one case where this attempt's staging goes: the destination proved the commit did
            # not land (or it was never sent). A retained staging stays for the roll-forward.
            self.state = "rejected"
            if not self.retained:
                _discard(self.publisher, self.run, [*self.staged, *staged])
            raise
        except CommitOutcomeUnknown:
            self.state = "unknown"
            log.error("commit outcome of %s is unknown; staging left for the diagnosis", self.run.run_id)
            raise
        except BaseException as exc:
            # Anything else out of commit is not a proof of anything: the commit may have landed.
            self.state = "unknown"
            raise _unknown(self.run, exc) from exc
        self.state = "committed"
        self.parts_committed = parts
        crash_point("after_cleanup")
        log.info(
            "published %s: %d rows, %d bytes at %s", self.run.run_id, receipt.rows, receipt.bytes, receipt.location
        )
        return PublishResult(self.run, receipt, False, self.before)

    def abort(self) -> None:
        """Give up before the commit: remove every staging of this attempt."""
        if self.state == "open":
            self.state = "rejected"
            _discard(self.publisher, self.run, self.staged)


def stage_part(
    publisher: Publisher,
    run: Run,
    records: Any,
    *,
    schema: pa.Schema | None = None,
    progress: ProgressCallback | None = None,
    part: int = 0,
    token: str | None = None,
) -> Staged:
    """A worker's side of a publish: stage part ``part`` of ``run`` (the driver's attempt), under a
    fresh ``token`` unless one is given (``""``: the run staged in one piece, by its driver), so a
    retried worker never reuses a staging's name. Refused at once (CommitRejected) for a part the
    sink cannot take (``Capabilities.max_parts``). Takes no lock and checks nothing (the driver did
    both); nothing is visible until the driver commits. Its result is a JSON value
    (``Staged.to_json``) for the driver. On an error the part's own staging is removed."""
    if token is None:
        token = new_part_token()  # a retried or speculated worker never reuses a staging's name
    limit = publisher.capabilities.max_parts
    if limit is not None and part >= limit:
        raise CommitRejected(
            f"the {publisher.sink_name} sink takes a run in {'one piece' if limit == 1 else f'{limit} parts'}: "
            f"part {part} cannot be staged (Capabilities.max_parts); publish this run from one process"
        )
    try:
        staged = None
        if publisher.capabilities.stages_files and isinstance(records, InputFiles):
            staged = _stage_files_as_they_are(publisher, run, records, schema, progress, part, token)
        if staged is None:
            reader = records.reader(schema) if isinstance(records, InputFiles) else as_reader(records)
            if schema is not None:
                reader = conform(reader, schema)
            source = ", ".join(map(str, records.paths)) if isinstance(records, InputFiles) else "the records"
            staged = publisher.stage(
                run, _input_side(require_rows(reader, source=source), source), progress=progress, part=part, token=token
            )
        return staged
    except InputError as exc:
        named = _naming_files(exc, records)
        if named is exc:
            raise
        raise named from exc


def _input_side(reader: pa.RecordBatchReader, source: str) -> pa.RecordBatchReader:
    """The same batches; an OSError raised while reading the input is the input's (InputError,
    naming it), not the destination's. Found from outside: a generator's failed read was reported
    by the file sink as its own disk failing (exit 5, "destination unreachable")."""

    def batches() -> Iterator[pa.RecordBatch]:
        it = iter(reader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except OSError as exc:
                raise InputError(f"{source}: reading the input failed: {first_line(exc)}") from exc
            yield batch

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _naming_files(exc: InputError, records: Any) -> InputError:
    """The error, naming the input files when the sink's message does not (it sees records)."""
    if isinstance(records, InputFiles) and not any(str(path) in str(exc) for path in records.paths):
        return type(exc)(f"{', '.join(map(str, records.paths))}: {exc}")
    return exc


def _surely_unpublished(diagnostic: Diagnostic, run: Run) -> bool:
    """True only when the sink's one cheap read (``SinkDiagnostic.surely_unpublished``) proves the
    run has no commit record, so the early check before the lock can be skipped: the full diagnosis
    under the lock still decides. Any failure, or a sink without the probe: False (diagnose)."""
    probe = getattr(diagnostic, "surely_unpublished", None)
    if probe is None:
        return False
    try:
        return probe(run) is True
    except Terminated:
        raise
    except Exception as exc:
        log.debug("the commit-record probe of %s failed (%s); diagnosing instead", run.run_id, exc)
        return False


def _readable(diagnosis: Diagnosis) -> Diagnosis:
    """A destination that cannot be read cannot be published to: say so (exit 5), rather than
    calling the run UNKNOWN, which is what diagnose tells an operator."""
    if diagnosis.unreadable is not None:
        raise DestinationUnavailable(f"{diagnosis.destination}: {diagnosis.unreadable}")
    return diagnosis


def _unknown(run: Run, exc: BaseException) -> CommitOutcomeUnknown:
    log.error("commit outcome of %s is unknown; staging left for the diagnosis", run.run_id)
    return CommitOutcomeUnknown(
        f"the commit of {run.run_id} ended with {type(exc).__name__}: {first_line(exc)}; whether it "
        "landed is unknown, so nothing was removed: run `atomic-publish diagnose`"
    )


def _discard(publisher: Publisher, run: Run, staged: Sequence[Staged]) -> None:
    """Remove this attempt's own staging after a proven refusal or a failure before the commit. A
    failure to do so (the destination is down) is logged, never raised over the original error:
    the diagnosis then names the leftovers."""
    with critical_section():
        try:
            publisher.discard(run, list(staged))
        except Exception as exc:
            log.warning("could not remove the staging of attempt %s (%s); `diagnose` will name it", run.attempt, exc)


def _stage_files_as_they_are(
    publisher: Publisher,
    run: Run,
    records: InputFiles,
    schema: pa.Schema | None,
    progress: ProgressCallback | None,
    part: int,
    token: str,
) -> Staged | None:
    """Stage input files byte for byte if the sink can (see InputFiles); None to stage batches.

    Only when nothing would change the data: no target schema, or one the files already have.
    """
    if schema is not None and not (records.parquet_schema is not None and records.parquet_schema.equals(schema)):
        return None
    if records.rows == 0:
        raise InputError(f"{', '.join(map(str, records.paths))}: the input has no rows; nothing to publish")
    staged: Staged | None = cast(StagesFiles, publisher).stage_files(
        run, records, progress=progress, part=part, token=token
    )
    return staged


def _refuse_if_published(run: Run, diagnosis: Diagnosis, if_absent: bool) -> PublishResult | None:
    """None if the run may go on; a no-op result (``if_absent``) or AlreadyPublished otherwise."""
    if not diagnosis.state.published:
        return None
    if if_absent:
        log.info("run %s is already published (%s); nothing to do", run.run_id, diagnosis.state.value)
        return PublishResult(run, None, True, diagnosis)
    raise AlreadyPublished(
        f"run {run.run_id} is already published ({diagnosis.state.value}: {diagnosis.reason}); "
        "a re-run would make a second copy, so it is refused",
        diagnosis,
    )
