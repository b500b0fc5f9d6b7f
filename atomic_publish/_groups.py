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
data in a sink already committed that can read it back (the file sink), or from the input files
when the group declares them durable.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diagnostics import apply_recovery, plan_recovery
from .publishers._arrow import InputFiles, conform, open_inputs
from .publishers._crash import crash_point
from .publishers._errors import (
    AlreadyPublished,
    AtomicPublishError,
    CommitOutcomeUnknown,
    CommitRejected,
    DestinationUnavailable,
    LostRace,
    RecoveryNeeded,
    RollForwardNeeded,
    RunInProgress,
)
from .publishers._protocol import ReadsBack
from .publishers._publish import begin_run, resolve_config
from .publishers._signals import critical_section
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
    """The state of run ``dataset``/``run_date`` in every sink of ``group``, and of the whole."""
    return _diagnose(resolve_config(config).group(group), Run.new(dataset, run_date))


def _diagnose(group: GroupConfig, run: Run) -> GroupDiagnosis:
    sinks = {name: definition.make_diagnostic(options).diagnose(run) for name, definition, options in group.members}
    order = [name for name, _, _ in group.members]
    return decide_group(
        group.name, run, sinks, order, group.journal.read(run, "decision"), group.journal.read(run, "complete")
    )


def publish_group(
    records: Any, *, dataset: str, run_date: Any, group: str, config: Any = None, if_absent: bool = False
) -> GroupResult:
    """Publish ``records`` (a ``pyarrow.Table``, any Arrow stream, or ``open_inputs(paths)``) as run
    ``dataset``/``run_date`` to every sink of ``group``: all of them or, once decided, all of them
    eventually (see the module's docstring).

    Raises AlreadyPublished (unless ``if_absent``), RunInProgress, RecoveryNeeded (leftovers, or a
    decided run that must roll forward: ``recover_group``), LostRace (another attempt decided first;
    this attempt's staging is removed), RollForwardNeeded (decided, and a sink's commit did not
    complete: ``recover_group(apply=True)``), or CommitOutcomeUnknown (the journal could not be
    written: whether the run was decided is for ``diagnose_group`` to say; nothing was removed).
    """
    cfg = resolve_config(config).group(group)
    run = Run.new(dataset, run_date)
    data = _Replayable(records)
    before = _diagnose(cfg, run)
    if before.state is State.DONE:
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
    members = [(name, d.make_publisher(o), d.make_diagnostic(o)) for name, d, o in cfg.members]
    result = GroupResult(group, run)
    with contextlib.ExitStack() as stack:
        # Every sink's lock, in the group's order, each run checked under its own lock: an error
        # before the decision unwinds them all, and each discards its own staging.
        jobs = {
            name: stack.enter_context(begin_run(publisher, diagnostic, run)) for name, publisher, diagnostic in members
        }
        staged = {name: [job.stage(data.fresh())] for name, job in jobs.items()}
        crash_point("group_staged")
        decision = {
            "version": 1,
            "group": group,
            "run_id": run.run_id,
            "attempt": run.attempt,
            "order": list(jobs),
            "staged": {name: [s.to_dict() for s in parts] for name, parts in staged.items()},
            "schema": data.schema_b64(),
            "inputs": data.input_record() if cfg.durable_input else None,
            "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
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
        _complete(cfg, run, list(result.receipts))
    return result


def recover_group(*, dataset: str, run_date: Any, group: str, config: Any = None, apply: bool = False) -> GroupRecovery:
    """The recovery plan of a run of ``group`` (read-only), or, with ``apply=True``, carry it out:
    roll forward a decided run (commit every sink not yet committed, then mark it complete), or
    roll back an undecided one (clean each sink's orphans); then diagnose again."""
    cfg = resolve_config(config).group(group)
    run = Run.new(dataset, run_date)
    before = _diagnose(cfg, run)
    steps = _plan(before, cfg)
    if not apply or before.state in (State.DONE, State.NOTHING_IN_FLIGHT):
        return GroupRecovery(before, steps, _diagnose(cfg, run) if apply else None)
    if before.state is State.RUNNING:
        raise RunInProgress(f"run {run.run_id} of group {group} is RUNNING: {before.reason}", before)
    if before.state is State.UNKNOWN:
        raise RecoveryNeeded(f"run {run.run_id} of group {group} is UNKNOWN: {before.reason}; nothing done", before)
    if before.state is State.ROLL_FORWARD:
        _roll_forward(cfg, run, before)
    else:  # ORPHANED (not decided: roll back) or PUBLISHED_WITH_ORPHANS (complete: other attempts' leftovers)
        for name, definition, options in cfg.members:
            if before.sinks[name].orphans:
                diagnostic = definition.make_diagnostic(options)
                apply_recovery(diagnostic, plan_recovery(diagnostic, run))
    return GroupRecovery(before, steps, _diagnose(cfg, run))


def _plan(d: GroupDiagnosis, cfg: GroupConfig) -> list[str]:
    if d.state is State.ROLL_FORWARD:
        attempt = (d.decision or {}).get("attempt")
        readers = [n for n, definition, _ in cfg.members if definition.capabilities.reads_back]
        steps = []
        for name, definition, _ in cfg.members:
            if name in d.committed:
                continue
            if definition.capabilities.staging_outlives_process:
                steps.append(f"commit {name} as attempt {attempt} from its retained staging")
            else:
                source = f"the run in {readers[0]}" if readers else "the durable input files"
                steps.append(
                    f"stage {name} again from {source} (its staging does not outlive its process), then commit it "
                    f"as attempt {attempt}"
                )
        return [*steps, "mark the run complete in the journal"]
    if d.state in (State.ORPHANED, State.PUBLISHED_WITH_ORPHANS):
        return [f"clean {len(d.sinks[n].orphans)} orphan(s) in {n}" for n in d.order if d.sinks[n].orphans]
    return [d.safe_action]


def _roll_forward(cfg: GroupConfig, run: Run, before: GroupDiagnosis) -> None:
    decision = before.decision or {}
    decided = Run(run.dataset, run.run_date, str(decision["attempt"]))
    for name, definition, options in cfg.members:
        if name in before.committed:
            continue
        publisher, diagnostic = definition.make_publisher(options), definition.make_diagnostic(options)
        staged = [Staged(**doc) for doc in decision["staged"][name]]
        with publisher.run_lock(decided):
            now = diagnostic.diagnose(decided)
            if now.published_by == decided.attempt:
                continue  # committed meanwhile (a concurrent recover)
            if now.published_by is not None:
                raise RecoveryNeeded(f"{name}: published by attempt {now.published_by}, not {decided.attempt}", now)
            with critical_section():
                try:
                    if not definition.capabilities.staging_outlives_process:
                        raise CommitRejected(f"{name}: its staging does not outlive the process that staged it")
                    publisher.commit(decided, staged)
                except CommitRejected as exc:  # proven not committed: its retained staging is gone
                    log.info("group %s: %s must be staged again (%s)", cfg.name, name, exc)
                    publisher.commit(decided, [_restage(cfg, name, publisher, decided, decision, staged)])
        log.info("group %s: rolled %s forward to %s", cfg.name, run.run_id, name)
    _complete(cfg, run, [n for n, _, _ in cfg.members])


def _restage(
    cfg: GroupConfig, name: str, publisher: Any, run: Run, decision: dict[str, Any], was: list[Staged]
) -> Staged:
    """Stage ``name`` again from the run's data: a committed sink of the group that reads its run
    back, or the input files when the group declares them durable (checked unchanged)."""
    import pyarrow as pa

    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(decision["schema"])))
    source: Any = None
    for other, definition, options in cfg.members:
        reader = definition.make_publisher(options) if definition.capabilities.reads_back else None
        if other != name and isinstance(reader, ReadsBack):
            with contextlib.suppress(FileNotFoundError):
                source, where = reader.read_published(run), f"the run published in {other}"
                break
    if source is None and decision.get("inputs"):
        source, where = _Replayable.from_record(decision["inputs"]), "the run's input files"
    if source is None:
        raise RecoveryNeeded(
            f"group {cfg.name}: {name} must be staged again, and no sink of the group can read the run back "
            "and its input is not declared durable (durable_input = true)"
        )
    staged = publisher.stage(
        run, conform(source if isinstance(source, pa.RecordBatchReader) else source.reader(), schema)
    )
    if staged.rows != sum(s.rows for s in was):
        publisher.discard(run, [staged])
        raise RecoveryNeeded(
            f"{name}: {where} has {staged.rows} rows, the decided staging had {sum(s.rows for s in was)}"
        )
    return staged


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

    def __init__(self, records: Any) -> None:
        import pyarrow as pa

        from .publishers._arrow import as_reader

        self.files = records if isinstance(records, InputFiles) else None
        self.table = None if self.files is not None else as_reader(records).read_all()
        self.schema: pa.Schema = self.files.reader().schema if self.files is not None else self.table.schema  # type: ignore[union-attr]

    def fresh(self) -> Any:
        return open_inputs(self.files.paths) if self.files is not None else self.table

    def schema_b64(self) -> str:
        return base64.b64encode(self.schema.serialize().to_pybytes()).decode()

    def input_record(self) -> list[dict[str, Any]] | None:
        if self.files is None:
            return None
        return [{"path": str(p), "sha256": _sha256(p)} for p in self.files.paths]

    @staticmethod
    def from_record(inputs: list[dict[str, Any]]) -> InputFiles:
        changed = [i["path"] for i in inputs if _sha256(Path(i["path"])) != i["sha256"]]
        if changed:
            raise RecoveryNeeded(f"the run's input files changed since the decision: {', '.join(changed)}")
        return open_inputs([i["path"] for i in inputs])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_if_rolling_forward(config: Any, sink: str | None, run: Run) -> None:
    """One sink's recover must not remove the staging a group's roll-forward will commit: refuse it
    (RollForwardNeeded, exit 15) when the sink belongs to a group whose run is decided and not
    complete."""
    from .publishers._journal import FileJournal

    loaded = resolve_config(config)
    name = sink or loaded.settings.defaults.sink
    for group, settings in loaded.settings.groups.items():
        journal = FileJournal(settings.journal, group)
        if name in settings.sinks and journal.read(run, "decision") and not journal.read(run, "complete"):
            raise RollForwardNeeded(
                f"sink {name} belongs to group {group}, whose run {run.run_id} is decided and not complete: "
                f"recover --group {group} --apply (this sink's own recover would remove what the group commits)"
            )
