"""publish(): the one orchestration every caller uses (CLI, pipeline runner, library users).

Order matters and is the doctrine: take the run lock, diagnose (refuse unless nothing is in flight),
stage (nothing visible), commit (the single atomic step). Own staging is discarded after a failure
before the commit, or after a CommitRejected (the destination proved the commit did not land);
every other way out of the commit is an unknown outcome, after which nothing is touched and the
diagnosis settles it from the destination.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from diagnostics.taxonomy import Diagnosis, State

from ._arrow import InputFiles, as_reader, conform, open_inputs, require_rows
from ._crash import crash_point
from ._errors import (
    AlreadyPublished,
    CommitOutcomeUnknown,
    CommitRejected,
    DestinationUnavailable,
    InputError,
    RecoveryNeeded,
    RunInProgress,
)
from ._protocol import Diagnostic, ProgressCallback, Publisher
from ._signals import critical_section
from ._types import Receipt, Run, Staged

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
    definition, options = resolve_config(config).sink(sink)
    if isinstance(records, str | os.PathLike) or (
        isinstance(records, list | tuple) and records and all(isinstance(r, str | os.PathLike) for r in records)
    ):
        paths = [records] if isinstance(records, str | os.PathLike) else list(records)
        records = open_inputs([Path(os.fspath(path)) for path in paths])
    return publish_run(
        definition.make_publisher(options),
        definition.make_diagnostic(options),
        Run.new(dataset, run_date),
        records,
        schema=schema,
        if_absent=if_absent,
        progress=progress,
    )


def resolve_config(config: Any) -> Any:
    """A LoadedConfig from a path, a LoadedConfig, or None (the usual lookup)."""
    from .config import LoadedConfig, load_config

    return config if isinstance(config, LoadedConfig) else load_config(config)


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
    """Publish ``records`` as run ``run``, all or nothing.

    ``records``: any Arrow stream (see as_reader), or ``open_inputs(paths)``, which a sink that
    can take files as they are (the S3 sink writing Parquet) uploads byte for byte.

    Raises AlreadyPublished (unless ``if_absent``), RunInProgress, RecoveryNeeded, InputError,
    CommitRejected (this attempt's staging was discarded) or CommitOutcomeUnknown (nothing was
    touched: diagnose the run).
    """
    # A published run is refused before the lock is even taken: a re-run of a published run_id
    # writes nothing at all at the destination (not even a lease), and --if-absent is read-only.
    # A sink whose lock writes nothing (Kafka: fencing is the lock) is checked under it only.
    if getattr(publisher, "run_lock_writes", True):
        early = _refuse_if_published(run, _readable(diagnostic.diagnose(run)), if_absent)
        if early is not None:
            return early
    held = contextlib.ExitStack()  # holds signals from the commit until publish() returns
    with held, publisher.run_lock(run):
        before = _readable(diagnostic.diagnose(run))  # again, under the lock: the state may have moved
        skipped = _refuse_if_published(run, before, if_absent)
        if skipped is not None:
            return skipped
        if before.state is State.RUNNING:
            raise RunInProgress(f"run {run.run_id} is RUNNING: {before.reason}", before)
        # A destination that does not exist yet holds nothing of the run: a first publish creates it.
        if before.state is not State.NOTHING_IN_FLIGHT and before.missing_destination is None:
            raise RecoveryNeeded(
                f"run {run.run_id} is {before.state.value}: {before.reason}. Safe action: {before.safe_action}",
                before,
            )

        crash_point("after_lock")  # the lock held and the run checked; nothing staged
        log.info("staging run %s (attempt %s) to %s", run.run_id, run.attempt, publisher.sink_name)
        staged: Staged | None = None
        committing = False
        try:
            staged = _stage_files_as_they_are(publisher, run, records, schema, progress)
            if staged is None:
                reader = as_reader(records)
                if schema is not None:
                    reader = conform(reader, schema)
                source = ", ".join(map(str, records.paths)) if isinstance(records, InputFiles) else "the records"
                staged = publisher.stage(run, require_rows(reader, source=source), progress=progress)
            # From the commit on, SIGTERM/SIGINT are held until publish() returns (see _signals).
            held.enter_context(critical_section())
            committing = True
            receipt = publisher.commit(run, [staged])
        except CommitRejected:
            # The one case where this attempt's staging goes: the destination proved the commit did
            # not land (or it was never sent).
            _discard(publisher, run, staged)
            raise
        except CommitOutcomeUnknown:
            log.error("commit outcome of %s is unknown; staging left for the diagnosis", run.run_id)
            raise
        except InputError as exc:
            if committing:  # not a proven refusal (a sink's DataRejected is handled above)
                raise _unknown(run, exc) from exc
            _discard(publisher, run, staged)
            # Name the input when the sink's message does not (it sees records, not files).
            if isinstance(records, InputFiles) and not any(str(path) in str(exc) for path in records.paths):
                raise type(exc)(f"{', '.join(map(str, records.paths))}: {exc}") from exc
            raise
        except BaseException as exc:
            if committing:
                # Anything else out of commit is not a proof of anything: the commit may have landed.
                raise _unknown(run, exc) from exc
            _discard(publisher, run, staged)
            raise
        crash_point("after_cleanup")
        log.info("published %s: %d rows, %d bytes at %s", run.run_id, receipt.rows, receipt.bytes, receipt.location)
        return PublishResult(run, receipt, False, before)


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


def _discard(publisher: Publisher, run: Run, staged: Staged | None) -> None:
    """Remove this attempt's own staging after a proven refusal or a failure before the commit. A
    failure to do so (the destination is down) is logged, never raised over the original error:
    the diagnosis then names the leftovers."""
    with critical_section():
        try:
            publisher.discard(run, [staged] if staged is not None else [])
        except Exception as exc:
            log.warning("could not remove the staging of attempt %s (%s); `diagnose` will name it", run.attempt, exc)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _stage_files_as_they_are(
    publisher: Publisher, run: Run, records: Any, schema: pa.Schema | None, progress: ProgressCallback | None
) -> Staged | None:
    """Stage input files byte for byte if the sink can (see InputFiles); None to stage batches.

    Only when nothing would change the data: no target schema, or one the files already have.
    """
    stage_files = getattr(publisher, "stage_files", None)
    if stage_files is None or not isinstance(records, InputFiles):
        return None
    if schema is not None and not (records.parquet_schema is not None and records.parquet_schema.equals(schema)):
        return None
    if records.rows == 0:
        raise InputError(f"{', '.join(map(str, records.paths))}: the input has no rows; nothing to publish")
    staged: Staged | None = stage_files(run, records, progress=progress)
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
