"""One run to a group of sinks: each sink atomic, one decision for the run, roll forward after it.

1. every sink's run lock is taken (in the group's order) and the run checked under each;
2. every sink stages the run (nothing visible anywhere);
3. the decision to commit, with what each sink staged, is recorded in the group's journal (the
   first attempt to record it wins; a loser discards its staging and exits 4);
4. the sinks commit in the group's order; their staging is kept, whatever happens, until each is
   committed;
5. the journal marks the run complete.

A crash before 3 rolls back (each sink's orphans are cleaned by ``recover``); a crash after it rolls
forward: ``recover_group(apply=True)`` commits every sink not yet committed from its retained
staging, or re-stages it (a sink whose staging cannot outlive its process, Kafka) from the run's
data in a sink already committed that reads it back exactly (a Parquet file sink), or from the input files
when the group declares them durable.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diagnostics import apply_recovery, plan_recovery
from .publishers._arrow import InputFiles, check_columns, conform, open_inputs
from .publishers._crash import crash_point
from .publishers._errors import (
    AlreadyPublished,
    AtomicPublishError,
    CommitOutcomeUnknown,
    CommitRejected,
    ConfigError,
    DestinationUnavailable,
    InputError,
    LostRace,
    RecoveryNeeded,
    RollForwardNeeded,
    RunInProgress,
    TransientError,
    first_line,
)
from .publishers._journal import as_claimed, group_claim, rolling_forward
from .publishers._protocol import ReadsBack
from .publishers._publish import begin_run, check_input_schema, resolve_config
from .publishers._signals import critical_section, stop_if_received
from .publishers._types import Receipt, Run, Staged
from .publishers.config import GroupConfig
from .publishers.taxonomy import GroupDiagnosis, State, decide_group

log = logging.getLogger("atomic_publish.group")


@dataclass
class GroupResult:
    """What ``publish_group`` did: each sink's receipt (in commit order), or ``skipped`` when the
    run was already complete and ``if_absent`` was given."""

    group: str
    run: Run
    receipts: dict[str, Receipt] = field(default_factory=dict)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "run_id": self.run.run_id,
            "attempt": self.run.attempt,
            "skipped": self.skipped,
            "receipts": {name: r.to_dict() for name, r in self.receipts.items()},
        }


@dataclass
class GroupRecovery:
    """A group's recovery: the diagnosis it started from, what it did, and the state after."""

    before: GroupDiagnosis
    steps: list[str]
    after: GroupDiagnosis | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.to_dict(),
            "steps": self.steps,
            "applied": self.after is not None,
            "after": self.after.to_dict() if self.after is not None else None,
        }


def diagnose_group(*, dataset: str, run_date: Any, group: str, config: Any = None) -> GroupDiagnosis:
    """The state of run ``dataset``/``run_date`` in every sink of ``group``, and of the whole (the
    state another group puts it in when that group holds the run in a sink they share)."""
    loaded = resolve_config(config)
    cfg, run = loaded.group(group), Run.new(dataset, run_date)
    return _seen_by_others(_diagnose(cfg, run), loaded, cfg, run)


def _seen_by_others(d: GroupDiagnosis, loaded: Any, cfg: GroupConfig, run: Run) -> GroupDiagnosis:
    """``d`` as the other groups of the configuration leave it: a run this group has not decided,
    in a sink another group is publishing or has decided, is that group's to finish."""
    if d.state in (State.ROLL_FORWARD, State.DONE):  # this group's own decision, or published
        return d
    return as_claimed(d, _claimed_by_another_group(loaded, cfg, run))


def _diagnose(group: GroupConfig, run: Run) -> GroupDiagnosis:
    configured = [name for name, _, _ in group.members]
    order, decision, completion, problem = configured, None, None, None
    try:
        decision, completion = group.journal.read(run, "decision"), group.journal.read(run, "complete")
    except DestinationUnavailable as exc:
        problem = f"the group's journal cannot be read: {exc}"
    if decision is not None:  # a decided run is judged by what was decided
        decided = list(decision.get("order") or order)
        dropped = [name for name in decided if name not in configured]
        if dropped:
            problem = f"the decision names sink(s) {', '.join(dropped)}, which the configuration no longer has"
        else:
            order = decided
    sinks = {name: group.diagnostic(name).diagnose(run) for name in order}
    judged = decide_group(group.name, run, sinks, order, decision, completion, group.journal.holder(run))
    return judged if problem is None else dataclasses.replace(judged, state=State.UNKNOWN, reason=problem)


def _stuck(before: GroupDiagnosis, reason: str) -> RecoveryNeeded:
    """A condition no retry cures (exit 14): an operator reads the evidence."""
    return RecoveryNeeded(reason, dataclasses.replace(before, state=State.UNKNOWN, reason=reason))


def publish_group(
    records: Any,
    *,
    dataset: str,
    run_date: Any,
    group: str,
    config: Any = None,
    if_absent: bool = False,
    schema: Any = None,
) -> GroupResult:
    """Publish ``records`` (a ``pyarrow.Table``, any Arrow stream, or ``open_inputs(paths)``) as run
    ``dataset``/``run_date`` to every sink of ``group``: all of them or, once decided, all of them
    eventually (see the module's docstring).

    Raises AlreadyPublished (unless ``if_absent``), RunInProgress, RecoveryNeeded (leftovers, or a
    decided run that must roll forward: ``recover_group``), LostRace (another attempt decided first;
    this attempt's staging is removed), RollForwardNeeded (decided, and a sink's commit did not
    complete: ``recover_group(apply=True)``), CommitOutcomeUnknown (the journal could not be
    written: whether the run was decided is for ``diagnose_group`` to say; nothing was removed),
    ConfigError (a group that could not roll a sink forward after a crash: ``check_roll_forward``),
    or InputError (the input files changed while the sinks read them). ``schema`` (a
    ``pyarrow.Schema``) casts the records to it, as ``publish(schema=...)`` does: a CSV column it makes
    a string is read as text (also when a roll-forward stages a sink again from the input files).
    """
    loaded = resolve_config(config)
    cfg = loaded.group(group)
    run = Run.new(dataset, run_date)
    data = _Replayable(records, schema)
    check_roll_forward(cfg, data.files is not None)  # before anything is written
    if data.table is not None:  # as publish() refuses them (files: open_inputs did)
        check_columns(data.table.schema, "the records")
        if data.table.num_rows == 0:
            raise InputError("the records: the input has no rows; nothing to publish")
    for _, definition, options in cfg.members:  # a schema one sink can never take: refused before any lock
        check_input_schema(definition.make_publisher(options), data.schema)
    if cfg.durable_input and data.files is None:
        log.warning("group %s: durable_input is set, but the input is an Arrow stream, not files: not durable", group)
    with cfg.journal.lock(run):  # one publish or recover of the group's run at a time
        return _publish_group(cfg, run, data, if_absent, loaded)


def _publish_group(cfg: GroupConfig, run: Run, data: _Replayable, if_absent: bool, loaded: Any) -> GroupResult:
    group = cfg.name
    before = _seen_by_others(_diagnose(cfg, run), loaded, cfg, run)
    unreadable = [f"{name}: {d.destination}: {d.unreadable}" for name, d in before.sinks.items() if d.unreadable]
    if unreadable:  # as for one sink: a destination that cannot be read cannot be published to (exit 5)
        raise DestinationUnavailable(f"group {group}: {'; '.join(unreadable)}")
    if before.state in (State.DONE, State.PUBLISHED_WITH_ORPHANS):
        if if_absent:
            return GroupResult(group, run, skipped=True)
        raise AlreadyPublished(f"run {run.run_id} is already published to group {group}: {before.reason}", before)
    if before.state is State.RUNNING:
        raise RunInProgress(f"run {run.run_id} of group {group} is RUNNING: {before.reason}", before)
    # A destination that does not exist yet holds nothing of the run: a first publish creates it.
    first = before.decision is None and all(
        d.state is State.NOTHING_IN_FLIGHT or d.missing_destination is not None for d in before.sinks.values()
    )
    if before.state is not State.NOTHING_IN_FLIGHT and not first:
        raise RecoveryNeeded(
            f"run {run.run_id} of group {group} is {before.state.value}: {before.reason}. Safe action: "
            f"{before.safe_action}",
            before,
        )
    inputs = data.input_record() if cfg.durable_input else None  # hashed before any sink reads them
    members = [(name, d.make_publisher(o), d.make_diagnostic(o)) for name, d, o in cfg.members]
    result = GroupResult(group, run)
    with contextlib.ExitStack() as stack:
        # Every sink's lock, in the group's order, each run checked under its own lock: an error
        # before the decision unwinds them all, and each discards its own staging.
        jobs = {name: stack.enter_context(begin_run(pub, diag, run)) for name, pub, diag in members}
        staged = {name: [job.stage(data.fresh(), schema=data.target)] for name, job in jobs.items()}
        if inputs is not None and data.input_record() != inputs:
            raise InputError(
                f"group {group}: the input files changed while the sinks read them; nothing decided, nothing published"
            )
        crash_point("group_staged")
        decision = {
            "version": 1,
            "group": group,
            "run_id": run.run_id,
            "attempt": run.attempt,
            "order": list(jobs),
            "staged": {name: [s.to_dict() for s in parts] for name, parts in staged.items()},
            "schema": data.schema_b64(),
            "inputs": inputs,
            "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        stop_if_received()  # a stop caught and lost on its way up stops the group before its decision
        stack.enter_context(critical_section())  # from the decision on, a signal waits for the end
        try:
            won = cfg.journal.record(run, "decision", decision)
        except DestinationUnavailable as exc:
            for job in jobs.values():
                job.retain()  # the record may have landed: keep everything for the diagnosis
            raise CommitOutcomeUnknown(
                f"group {group}: could not learn whether the decision for {run.run_id} was recorded ({exc}); "
                f"nothing was removed: run diagnose --group {group}"
            ) from exc
        if not won:
            other = cfg.journal.read(run, "decision") or {}
            raise LostRace(f"group {group}: run {run.run_id} was decided by attempt {other.get('attempt')}")
        for job in jobs.values():
            job.retain()
        crash_point("group_decided")
        for number, (name, job) in enumerate(jobs.items(), start=1):
            try:
                result.receipts[name] = job.commit(staged[name]).receipt  # type: ignore[assignment]
            except AtomicPublishError as exc:
                done = ", ".join(result.receipts) or "no sink"
                raise RollForwardNeeded(
                    f"group {group}: run {run.run_id} is decided and committed in {done}; {name}: {exc}. "
                    f"Roll forward: recover --group {group} --apply"
                ) from exc
            crash_point(f"group_committed_{number}")
        try:
            _complete(cfg, run, list(result.receipts))
        except DestinationUnavailable as exc:
            raise RollForwardNeeded(
                f"group {group}: run {run.run_id} is committed in every sink, and the journal could not mark it "
                f"complete ({exc}): recover --group {group} --apply marks it"
            ) from exc
    return result


def recover_group(*, dataset: str, run_date: Any, group: str, config: Any = None, apply: bool = False) -> GroupRecovery:
    """The recovery plan of a run of ``group`` (read-only), or, with ``apply=True``, carry it out:
    roll forward a decided run (commit every sink not yet committed, then mark it complete), or
    roll back an undecided one (clean each sink's orphans); then diagnose again."""
    loaded = resolve_config(config)
    cfg = loaded.group(group)
    run = Run.new(dataset, run_date)
    if not apply:
        before = _diagnose(cfg, run)
        _refuse_if_claimed(before, loaded, cfg, run)  # the plan would be one --apply refuses
        return GroupRecovery(before, _plan(before, cfg))
    with cfg.journal.lock(run):  # never beside a publish or another recover of the group's run
        before = _diagnose(cfg, run)
        _refuse_if_claimed(before, loaded, cfg, run)
        steps = _plan(before, cfg)
        if before.state in (State.DONE, State.NOTHING_IN_FLIGHT):
            return GroupRecovery(before, steps, before)
        if before.state is State.RUNNING:
            raise RunInProgress(f"run {run.run_id} of group {group} is RUNNING: {before.reason}", before)
        if before.state is State.UNKNOWN:
            raise RecoveryNeeded(f"run {run.run_id} of group {group} is UNKNOWN: {before.reason}; nothing done", before)
        if before.state is State.ROLL_FORWARD:
            _roll_forward(cfg, run, before)
        else:  # ORPHANED (not decided: roll back) or PUBLISHED_WITH_ORPHANS (complete: others' leftovers)
            for name in before.order:
                if before.sinks[name].orphans:
                    diagnostic = cfg.diagnostic(name)
                    apply_recovery(diagnostic, plan_recovery(diagnostic, run))
        return GroupRecovery(before, steps, _diagnose(cfg, run))


@dataclass
class GroupSweepReport:
    """What ``sweep_group`` found (and removed): each run date of the dataset with leftovers in any
    sink of the group, its group state, and what was cleaned in which sink."""

    group: str
    dataset: str
    older_than: dt.timedelta
    applied: bool
    runs: list[tuple[GroupDiagnosis, list[Any], str]] = field(default_factory=list)
    # Runs left alone because another group holds them (it rolls them forward from their staging).
    held_by_groups: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes_freed for _, reports, _ in self.runs for r in reports)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "dataset": self.dataset,
            "older_than_seconds": self.older_than.total_seconds(),
            "applied": self.applied,
            "bytes_freed": self.bytes_freed,
            "runs": [
                {"diagnosis": d.to_dict(), "reports": [r.to_dict() for r in reports], "note": note}
                for d, reports, note in self.runs
            ],
        }


def sweep_group(
    *, dataset: str, older_than: dt.timedelta, group: str, config: Any = None, apply: bool = False
) -> GroupSweepReport:
    """The daily orphan-cleaner for a group: every run date of ``dataset`` with leftovers in any of
    its sinks. Only runs whose group state is ORPHANED (not decided: rolled back) or
    PUBLISHED_WITH_ORPHANS (complete: other attempts' leftovers) are cleaned, under the group's lock,
    each sink's orphans older than ``older_than``; a decided run that is not complete is never
    touched (its staging is what the roll-forward commits), nor a RUNNING or UNKNOWN one."""
    loaded = resolve_config(config)
    cfg = loaded.group(group)
    report = GroupSweepReport(group, dataset, older_than, apply)
    dates: set[dt.date] = set()
    for _, definition, options in cfg.members:
        dates.update(definition.make_diagnostic(options).runs_with_leftovers(dataset))
    for run_date in sorted(dates):
        run = Run.new(dataset, run_date)
        d = _diagnose(cfg, run)
        if d.state not in (State.ORPHANED, State.PUBLISHED_WITH_ORPHANS):
            report.runs.append((d, [], f"left alone: {d.state.value}"))
            continue
        if claim := _claimed_by_another_group(loaded, cfg, run):
            report.runs.append((d, [], f"left alone: {claim[1]}"))
            if claim[0] is State.ROLL_FORWARD:  # not another group's publish still running
                report.held_by_groups.append(run.run_id)
            continue
        if not apply:
            found = sum(len(d.sinks[n].orphans) for n in d.order)
            report.runs.append((d, [], f"would clean the orphans ({found}) older than {older_than}"))
            continue
        with cfg.journal.lock(run):
            d = _diagnose(cfg, run)  # again, under the lock
            if d.state not in (State.ORPHANED, State.PUBLISHED_WITH_ORPHANS):
                report.runs.append((d, [], f"left alone: {d.state.value}"))
                continue
            cleaned = [
                cfg.diagnostic(name).clean(d.sinks[name], older_than=older_than)
                for name in d.order
                if d.sinks[name].orphans
            ]
        report.runs.append((d, cleaned, f"removed {sum(len(c.removed) for c in cleaned)} orphan(s)"))
    return report


def _plan(d: GroupDiagnosis, cfg: GroupConfig) -> list[str]:
    if d.state is State.ROLL_FORWARD:
        attempt = (d.decision or {}).get("attempt")
        steps = []
        for name in d.order:  # the decided sinks, in the decided order
            if name in d.committed:
                continue
            publisher = cfg.publisher(name)
            source = " or ".join(_sources(cfg, d.order, name, bool((d.decision or {}).get("inputs"))))
            again = f"stage it again from {source or 'nowhere (nothing reads the run back; the input is not durable)'}"
            if publisher.capabilities.staging_outlives_process:
                steps.append(f"commit {name} as attempt {attempt} from its retained staging (if it is gone: {again})")
            else:
                steps.append(f"{again} (its staging does not outlive its process), then commit {name} as {attempt}")
        return [*steps, "mark the run complete in the journal"]
    if d.state in (State.ORPHANED, State.PUBLISHED_WITH_ORPHANS):
        return [f"clean {len(d.sinks[n].orphans)} orphan(s) in {n}" for n in d.order if d.sinks[n].orphans]
    return [d.safe_action]


def _sources(cfg: GroupConfig, order: Any, name: str, durable: bool) -> list[str]:
    """Where ``name`` can be staged again from: the sinks before it in ``order`` that read their run
    back exactly (committed by the time its turn comes), then the durable input files."""
    before = list(order)[: list(order).index(name)]
    readers = [n for n in before if cfg.publisher(n).capabilities.reads_back]
    return [f"the run in {r}" for r in readers] + (["the durable input files"] if durable else [])


def check_roll_forward(cfg: GroupConfig, durable_files: bool) -> None:
    """Refuse, before anything is written, a group that could not roll a decided run forward: a sink
    whose staging dies with its process (Kafka) with no sink before it that reads its run back and
    no durable input files. Raised as ConfigError (exit 2)."""
    order = [name for name, _, _ in cfg.members]
    for name in order:
        if cfg.publisher(name).capabilities.staging_outlives_process:
            continue
        if not _sources(cfg, order, name, cfg.durable_input and durable_files):
            why = "the input is an Arrow stream, not files" if cfg.durable_input else "durable_input is false"
            raise ConfigError(
                f"group {cfg.name}: after a crash past the decision, {name} (its staging dies with its process) could "
                f"not be staged again: no sink before it reads its run back (a Parquet file or S3 sink, an Iceberg "
                f"table) and {why}. Put such a sink before {name}, or declare durable input files; nothing written"
            )


def _roll_forward(cfg: GroupConfig, run: Run, before: GroupDiagnosis) -> None:
    decision = before.decision or {}
    decided = Run(run.dataset, run.run_date, str(decision["attempt"]))
    committed = list(before.committed)  # grows as this roll-forward commits
    for name in before.order:
        if name in committed:
            continue
        publisher, diagnostic = cfg.publisher(name), cfg.diagnostic(name)
        staged = [Staged(**doc) for doc in decision["staged"][name]]
        with publisher.run_lock(decided):
            now = diagnostic.diagnose(decided)
            if now.published_by == decided.attempt:
                committed.append(name)
                continue  # committed meanwhile
            if now.published_by is not None:
                raise _stuck(before, f"{name}: published by attempt {now.published_by}, not {decided.attempt}")
            # The decided staging is committed if it is still there; staged again only when it
            # provably is not (never after a transient refusal: that is for a later recover).
            kept = publisher.capabilities.staging_outlives_process and any(
                a.attempt == decided.attempt for a in now.evidence
            )
            with critical_section():
                if kept:
                    try:
                        publisher.commit(decided, staged)
                    except CommitRejected as exc:
                        if isinstance(exc, TransientError):  # proven not landed, for a passing reason
                            raise RollForwardNeeded(
                                f"{name}: the commit of its decided staging did not happen ({exc}); nothing else "
                                f"was tried: recover --group {cfg.name} --apply again"
                            ) from exc
                        # Refused for good (the staging is incomplete, the destination will not take
                        # it): a retry would get the same answer. Never replaced behind the operator's back.
                        raise _stuck(
                            before,
                            f"{name}: the destination refused its decided staging ({exc}); nothing else was tried. "
                            f"Read the evidence (diagnose --sink {name}), mend the cause, then recover --group "
                            f"{cfg.name} --apply again",
                        ) from exc
                else:
                    log.info("group %s: %s has no staging of attempt %s: staged again", cfg.name, name, decided.attempt)
                    again = _restage(cfg, before, committed, name, publisher, decided, decision, staged)
                    publisher.commit(decided, [again])
        committed.append(name)
        log.info("group %s: rolled %s forward to %s", cfg.name, run.run_id, name)
    _complete(cfg, run, list(before.order))


def _restage(
    cfg: GroupConfig,
    before: GroupDiagnosis,
    committed: list[str],
    name: str,
    publisher: Any,
    run: Run,
    decision: dict[str, Any],
    was: list[Staged],
) -> Staged:
    """Stage ``name`` again from the run's data: each committed sink of the group that reads its run
    back exactly (a Parquet file or S3 sink, an Iceberg table), in the group's order, then the input
    files when the group declares them durable (unchanged since the decision). The first source whose
    new staging has the decided staging's checksum is used; a staging that differs is discarded."""
    import pyarrow as pa

    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(decision["schema"])))
    expected = [s.checksum for s in was]
    tried: list[str] = []

    def sources() -> Iterator[tuple[str, Any]]:
        for other, _, _ in cfg.members:
            reader = cfg.publisher(other)
            # reads_back is per format (a CSV file or S3 sink has the hook, but it refuses)
            if other == name or other not in committed or not reader.capabilities.reads_back:
                continue
            if not isinstance(reader, ReadsBack):
                continue
            try:
                yield f"the run published in {other}", reader.read_published(run)
            except (FileNotFoundError, AtomicPublishError) as exc:
                tried.append(f"{other}: {exc}")
        if decision.get("inputs"):
            # Read as the decided types: a CSV column decided as a string is read as text ("007").
            yield "the run's input files", _Replayable.from_record(before, decision["inputs"]).reader(schema)

    for where, records in sources():
        try:
            staged: Staged = publisher.stage(run, conform(records, schema))
        except AtomicPublishError as exc:  # the source does not fit (stage removed what it wrote)
            tried.append(f"{where}: {exc}")
            continue
        if [staged.checksum] == expected:
            log.info("group %s: %s staged again from %s", cfg.name, name, where)
            return staged
        publisher.discard(run, [staged])
        tried.append(f"{where}: checksum {staged.checksum}, decided {', '.join(expected)}")
    raise _stuck(
        before,
        f"group {cfg.name}: {name} must be staged again, and no committed sink of the group gave back the decided "
        f"data ({'; '.join(tried) or 'none reads its run back'})"
        + ("" if decision.get("inputs") else ", and the input is not durable (durable_input)")
        + "; nothing committed",
    )


def _complete(cfg: GroupConfig, run: Run, committed: list[str]) -> None:
    doc = {
        "run_id": run.run_id,
        "committed": committed,
        "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    crash_point("group_before_complete")
    cfg.journal.record(run, "complete", doc)


class _Replayable:
    """The records of a group's run, to be read once per sink."""

    def __init__(self, records: Any, schema: Any = None) -> None:
        import pyarrow as pa

        from .publishers._arrow import as_reader

        if schema is not None and not isinstance(schema, pa.Schema):
            raise InputError(f"schema must be a pyarrow.Schema, not {type(schema).__name__}")
        self.files = records if isinstance(records, InputFiles) else None
        # What each sink stages the files with (their types, conformed there); a table is conformed here.
        self.target: pa.Schema | None = schema if self.files is not None else None
        try:  # a failed read is the input's (exit 2, naming it), as for one sink (_publish._input_side)
            if self.files is not None:
                self.table = None
                read = self.files.reader(schema).schema
                if schema is not None:  # a column schema names that the files lack: before any lock
                    conform(pa.RecordBatchReader.from_batches(read, iter(())), schema, source="the input files")
                self.schema: pa.Schema = schema if schema is not None else read
            else:
                reader = as_reader(records)
                self.table = (
                    conform(reader, schema, source="the records") if schema is not None else reader
                ).read_all()
                self.schema = self.table.schema
        except OSError as exc:
            raise InputError(f"the records: reading the input failed: {first_line(exc)}") from exc

    def fresh(self) -> Any:
        return open_inputs(self.files.paths) if self.files is not None else self.table

    def schema_b64(self) -> str:
        return base64.b64encode(self.schema.serialize().to_pybytes()).decode()

    def input_record(self) -> list[dict[str, Any]] | None:
        if self.files is None:
            return None
        try:
            return [{"path": str(p.resolve()), "sha256": _sha256(p)} for p in self.files.paths]
        except OSError as exc:  # removed or unreadable since it was opened: the input's, exit 2
            raise InputError(f"the input files cannot be read: {first_line(exc)}; nothing decided") from exc

    @staticmethod
    def from_record(before: GroupDiagnosis, inputs: list[dict[str, Any]]) -> InputFiles:
        try:
            changed = [i["path"] for i in inputs if _sha256(Path(i["path"])) != i["sha256"]]
        except OSError as exc:
            raise _stuck(before, f"the run's durable input cannot be read: {exc}") from exc
        if changed:
            raise _stuck(before, f"the run's input files changed since the decision: {', '.join(changed)}")
        return open_inputs([i["path"] for i in inputs])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _claimed_by_another_group(loaded: Any, cfg: GroupConfig, run: Run) -> tuple[State, str] | None:
    """Why ``cfg``'s own recover or sweep must not clean ``run`` in its sinks (``group_claim``): one
    of them belongs to another group too, which is publishing the run or has decided it (found from
    outside: a sink in two groups; recovering one group removed the staging the other had decided to
    commit)."""
    for name, _, _ in cfg.members:
        if claim := group_claim(loaded, name, run, other_than=cfg.name):
            return claim
    return None


def _refuse_if_claimed(before: GroupDiagnosis, loaded: Any, cfg: GroupConfig, run: Run) -> None:
    """RollForwardNeeded (exit 15) when another group holds the run (``_seen_by_others``)."""
    seen = _seen_by_others(before, loaded, cfg, run)
    if seen is not before:
        raise RollForwardNeeded(f"{seen.reason}; nothing done")


def refuse_if_rolling_forward(config: Any, sink: str | None, run: Run) -> None:
    """One sink's own publish or recover must not touch a run its group is rolling forward (or is
    publishing right now): RollForwardNeeded (exit 15) says which group, and what to type."""
    why = rolling_forward(resolve_config(config), sink, run)
    if why is not None:
        raise RollForwardNeeded(why)
