"""One taxonomy of crash states for every sink, with the safe action and exit code of each.

The destination is the ground truth: a verdict is built only from what the diagnostic found at the
destination (and the run lock), never from logs or the crashed process's memory.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any


class State(enum.Enum):
    """What a run's destination holds. Values are stable strings used in ``--json`` documents."""

    DONE = "DONE"
    NOTHING_IN_FLIGHT = "NOTHING_IN_FLIGHT"
    ORPHANED = "ORPHANED"
    PUBLISHED_WITH_ORPHANS = "PUBLISHED_WITH_ORPHANS"
    RUNNING = "RUNNING"
    UNKNOWN = "UNKNOWN"
    # A group of sinks only (never one sink's state): the decision to commit is recorded and not
    # every sink is committed yet; the run rolls forward, never back.
    ROLL_FORWARD = "ROLL_FORWARD"

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]

    @property
    def safe_action(self) -> str:
        return _SAFE_ACTIONS[self]

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]

    @property
    def published(self) -> bool:
        return self in (State.DONE, State.PUBLISHED_WITH_ORPHANS)


# 1 and 2 mean "error" and "usage error" to every shell and CLI library, so states start at 10,
# except DONE, where "nothing to do" is exactly what 0 means to a scheduler.
_EXIT_CODES = {
    State.DONE: 0,
    State.NOTHING_IN_FLIGHT: 10,
    State.ORPHANED: 11,
    State.PUBLISHED_WITH_ORPHANS: 12,
    State.RUNNING: 13,
    State.UNKNOWN: 14,
    State.ROLL_FORWARD: 15,
}

_SAFE_ACTIONS = {
    State.DONE: "nothing: the run is published",
    State.NOTHING_IN_FLIGHT: "re-run",
    State.ORPHANED: "clean the orphans (recover --apply), then re-run",
    State.PUBLISHED_WITH_ORPHANS: "clean the orphans only (recover --apply); never re-run",
    State.RUNNING: "touch nothing: a live attempt holds the run",
    State.UNKNOWN: "stop: read the evidence, settle it by hand; do not re-run or clean",
    State.ROLL_FORWARD: "roll forward: recover --group --apply commits the sinks not yet committed; "
    "never re-run, never recover a sink of the group on its own",
}

UNREADABLE_ACTION = (
    "wait: the destination could not be read (down, unreachable, or it refused these credentials: see why); "
    "diagnose again once it answers (do not re-run or clean)"
)

_MEANINGS = {
    State.DONE: "published: its data matches its commit record (checksums, unless --no-verify), no leftovers",
    State.NOTHING_IN_FLIGHT: "not published and nothing left behind (a crash before staging, or no run yet)",
    State.ORPHANED: "not published; a dead attempt left staging behind",
    State.PUBLISHED_WITH_ORPHANS: "published, plus leftovers (of another attempt, e.g. a race or a retry, "
    "or of the publishing attempt's own unfinished cleanup)",
    State.RUNNING: "a live attempt holds the run",
    State.UNKNOWN: "the evidence contradicts itself, cannot be read, or a commit's outcome is unknown",
    State.ROLL_FORWARD: "a group's decision to commit is recorded; some of its sinks are not committed yet",
}


@dataclass(frozen=True)
class Artifact:
    """One thing found at the destination, with what an operator needs to judge it."""

    kind: str
    location: str
    size_bytes: int | None = None
    modified_at: dt.datetime | None = None
    attempt: str | None = None
    rows: int | None = None
    detail: str = ""
    # Sink-specific identity used by clean() to make sure it removes exactly what was diagnosed
    # (an inode, an ETag, a table oid); not shown to operators.
    identity: tuple[Any, ...] = ()

    def age_seconds(self, now: dt.datetime) -> float | None:
        if self.modified_at is None:
            return None
        return max(0.0, (now - self.modified_at).total_seconds())

    def to_dict(self, now: dt.datetime) -> dict[str, Any]:
        age = self.age_seconds(now)
        return {
            "kind": self.kind,
            "location": self.location,
            "size_bytes": self.size_bytes,
            "rows": self.rows,
            "modified_at": self.modified_at.isoformat() if self.modified_at else None,
            "age_seconds": round(age, 3) if age is not None else None,
            "attempt": self.attempt,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class LockHolder:
    """The live attempt that holds a run's lock (RUNNING evidence)."""

    attempt: str | None
    pid: int | None
    host: str | None
    started_at: str | None
    location: str
    purpose: str | None = None  # "recover" when a recover holds the run (None: an attempt, or not said)

    @classmethod
    def from_lease(cls, doc: dict[str, Any], location: str) -> LockHolder:
        return cls(
            attempt=doc.get("attempt"),
            pid=doc.get("pid"),
            host=doc.get("host"),
            started_at=doc.get("started_at"),
            location=location,
            purpose="recover" if doc.get("purpose") == "recover" else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "pid": self.pid,
            "host": self.host,
            "started_at": self.started_at,
            "location": self.location,
            "purpose": self.purpose,
        }


class _Verdict:
    """What every verdict (one sink's, or a group's) says the same way."""

    dataset: str
    run_date: dt.date
    state: State

    @property
    def run_id(self) -> str:
        return f"{self.dataset}/{self.run_date.isoformat()}"

    @property
    def exit_code(self) -> int:
        return self.state.exit_code

    @property
    def safe_action(self) -> str:
        return self.state.safe_action


@dataclass(frozen=True)
class Diagnosis(_Verdict):
    """A verdict on one run, with every piece of evidence it was built from."""

    sink: str
    dataset: str
    run_date: dt.date
    state: State
    reason: str
    evidence: tuple[Artifact, ...] = ()
    orphans: tuple[Artifact, ...] = ()
    holder: LockHolder | None = None
    destination: str = ""
    diagnosed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    # Set (with the why) when the verdict is UNKNOWN only because the destination itself does not
    # exist: an operator checks the configuration, while a publish goes on and creates it.
    missing_destination: str | None = None
    # Set (with the why) when the verdict is UNKNOWN because the destination could not be read at all.
    unreadable: str | None = None
    # The attempt whose commit record the destination holds (None: not published).
    published_by: str | None = None

    @property
    def safe_action(self) -> str:
        if self.state is State.UNKNOWN and self.unreadable is not None:
            # Not evidence that contradicts itself: none could be read (found from outside: a server
            # that was down was told to be settled by hand).
            return UNREADABLE_ACTION
        return self.state.safe_action

    def to_dict(self) -> dict[str, Any]:
        now = self.diagnosed_at
        return {
            "run_id": self.run_id,
            "dataset": self.dataset,
            "run_date": self.run_date.isoformat(),
            "sink": self.sink,
            "destination": self.destination,
            "state": self.state.value,
            "exit_code": self.exit_code,
            "meaning": self.state.meaning,
            "safe_action": self.safe_action,
            "reason": self.reason,
            "holder": self.holder.to_dict() if self.holder else None,
            "evidence": [a.to_dict(now) for a in self.evidence],
            "orphans": [a.to_dict(now) for a in self.orphans],
            "orphan_bytes": sum(a.size_bytes or 0 for a in self.orphans),
            "diagnosed_at": now.isoformat(timespec="seconds"),
            "missing_destination": self.missing_destination,
            "unreadable": self.unreadable,
            "published_by": self.published_by,
        }


@dataclass(frozen=True)
class CleanReport:
    """What clean() did: exactly the orphans it removed, and what it left and why."""

    run_id: str
    state_before: State
    removed: tuple[Artifact, ...] = ()
    skipped: tuple[tuple[Artifact, str], ...] = ()

    @property
    def bytes_freed(self) -> int:
        return sum(a.size_bytes or 0 for a in self.removed)

    def to_dict(self, now: dt.datetime | None = None) -> dict[str, Any]:
        now = now or dt.datetime.now(dt.UTC)
        return {
            "run_id": self.run_id,
            "state_before": self.state_before.value,
            "removed": [a.to_dict(now) for a in self.removed],
            "skipped": [{**a.to_dict(now), "why": why} for a, why in self.skipped],
            "bytes_freed": self.bytes_freed,
        }


def attempts_of(artifacts: Iterable[Artifact]) -> str:
    """The attempts that own ``artifacts``, sorted, for a verdict's one-line reason."""
    return ", ".join(sorted({a.attempt or "?" for a in artifacts}))


def old_enough(
    orphans: Iterable[Artifact], older_than: dt.timedelta | None, now: dt.datetime
) -> tuple[list[Artifact], list[tuple[Artifact, str]]]:
    """The one age rule of ``clean`` and ``sweep``: with ``older_than``, only the orphans of attempts
    whose youngest leftover is older (an attempt's evidence is never split). Returns (eligible,
    skipped with why)."""
    orphans = list(orphans)
    if older_than is None:
        return orphans, []
    youngest: dict[str | None, float] = {}
    for art in orphans:
        age = art.age_seconds(now)
        youngest[art.attempt] = min(youngest.get(art.attempt, float("inf")), age if age is not None else 0.0)
    eligible, skipped = [], []
    for art in orphans:
        if youngest[art.attempt] < older_than.total_seconds():
            skipped.append((art, f"its attempt has leftovers younger than {older_than}"))
        else:
            eligible.append(art)
    return eligible, skipped


@dataclass(frozen=True)
class Evidence:
    """What a sink's diagnostic found at the destination about one run, before any verdict.

    A sink only gathers this; ``decide`` turns it into the Diagnosis, the same way for every sink.
    """

    destination: str
    # The commit record of the run (marker, ledger row, snapshot, ledger record), if published.
    # ``record.attempt`` is the attempt that published it; ``record.detail`` says what it holds.
    record: Artifact | None = None
    # A live attempt that holds the run (lock, lease, session, open transaction). The asking attempt
    # itself is never one (a diagnosis made under one's own lock is not RUNNING).
    holder: LockHolder | None = None
    # Attempts proven alive (the holder's among them): their staging is theirs, never an orphan.
    live_attempts: frozenset[str] = frozenset()
    # Staging of attempts: every artifact carries the attempt that owns it and the identity the
    # clean loop re-checks. Never anything the commit record references.
    leftovers: tuple[Artifact, ...] = ()
    # Contradictions: published data that does not match its record, a record that references
    # something missing, data that no evidence explains. Any of these is UNKNOWN.
    problems: tuple[str, ...] = ()
    # Shown to the operator, never cleaned: published data, a stale lease, a fence.
    context: tuple[Artifact, ...] = ()
    # Set when the destination itself does not exist (no root, no bucket, no catalog): nothing of
    # the run can be there, but nothing proves this is where the run would have been published.
    missing: str | None = None
    # Set when the container was read (the catalog, the database, the cluster) but what a first
    # publish creates in it does not exist yet (the table, the ledger): said in the reason.
    absent: str | None = None
    # Set when the destination could not be read at all (unreachable, timed out): why.
    unreadable: str | None = None


def decide(sink: str, run: Any, evidence: Evidence, now: dt.datetime | None = None) -> Diagnosis:
    """The one verdict function: evidence -> state, for every sink. Its rules, in order:

    1. evidence that cannot be read is UNKNOWN (a timeout, an unreachable server);
    2. a commit record beats a live holder: published runs are DONE, or PUBLISHED_WITH_ORPHANS
       when dead attempts left staging, or UNKNOWN when the published data contradicts its record;
       the staging of a live attempt is never an orphan;
    3. not published and a live attempt holds the run: RUNNING (whatever else is there is its own);
    4. not published and data that no evidence explains: UNKNOWN;
    5. the destination itself does not exist: UNKNOWN (re-running is only safe once the
       configuration is known to point where the run would be);
    6. staging of dead attempts: ORPHANED; nothing at all: NOTHING_IN_FLIGHT.
    """
    now = now or dt.datetime.now(dt.UTC)
    holder = evidence.holder if evidence.holder is not None and evidence.holder.attempt != run.attempt else None
    live = set(evidence.live_attempts) | ({holder.attempt} if holder and holder.attempt else set())
    orphans = tuple(a for a in evidence.leftovers if a.attempt not in live)
    theirs = tuple(a for a in evidence.leftovers if a.attempt in live)

    def verdict(
        state: State,
        reason: str,
        shown: tuple[Artifact, ...],
        found: tuple[Artifact, ...] = (),
        missing: str | None = None,
        unreadable: str | None = None,
    ) -> Diagnosis:
        return Diagnosis(
            sink=sink,
            dataset=run.dataset,
            run_date=run.run_date,
            state=state,
            reason=reason,
            evidence=shown,
            orphans=found,
            holder=holder,
            destination=evidence.destination,
            diagnosed_at=now,
            missing_destination=missing,
            unreadable=unreadable,
            published_by=evidence.record.attempt if evidence.record is not None else None,
        )

    everything = (*((evidence.record,) if evidence.record else ()), *evidence.context, *evidence.leftovers)
    if evidence.unreadable is not None:
        return verdict(
            State.UNKNOWN,
            f"could not read the destination: {evidence.unreadable}",
            everything,
            unreadable=evidence.unreadable,
        )
    record = evidence.record
    if record is not None:
        if evidence.problems:
            return verdict(State.UNKNOWN, "; ".join(evidence.problems), everything)
        published = f"published by attempt {record.attempt}" + (f": {record.detail}" if record.detail else "")
        if orphans:
            return verdict(
                State.PUBLISHED_WITH_ORPHANS,
                f"{published}; {len(orphans)} leftover(s) of attempt(s) {attempts_of(orphans)}",
                (record, *evidence.context, *orphans, *theirs),
                orphans,
            )
        also = f"; attempt {holder.attempt} is still live" if holder is not None else ""
        return verdict(State.DONE, published + also, (record, *evidence.context, *theirs))
    if holder is not None:
        return verdict(
            State.RUNNING,
            f"{'a recover' if holder.purpose == 'recover' else 'attempt'} {holder.attempt} (pid {holder.pid} on "
            f"{holder.host}, since {holder.started_at}) holds the run"
            + (f" ({holder.location})" if holder.location else ""),
            everything,
        )
    if evidence.problems:
        return verdict(State.UNKNOWN, "; ".join(evidence.problems), everything)
    if evidence.missing is not None:
        return verdict(
            State.UNKNOWN,
            f"{evidence.missing}: nothing of this run can be there, but nothing shows this is where it would "
            "be; check the configuration",
            everything,
            missing=evidence.missing,
        )
    if orphans:
        return verdict(
            State.ORPHANED,
            f"not published; {len(orphans)} leftover(s) of dead attempt(s) {attempts_of(orphans)}",
            (*evidence.context, *orphans),
            orphans,
        )
    if evidence.absent is not None:
        return verdict(
            State.NOTHING_IN_FLIGHT,
            f"not published and nothing left behind: {evidence.absent} (the destination that holds it "
            "was read, so this is where the run would be; a first publish creates it)",
            everything,
        )
    return verdict(State.NOTHING_IN_FLIGHT, "not published and nothing left behind", everything)


@dataclass(frozen=True)
class GroupDiagnosis(_Verdict):
    """A verdict on one run published to a group of sinks: each sink's own diagnosis, what the
    group's journal holds, and the one state of the whole."""

    group: str
    dataset: str
    run_date: dt.date
    state: State
    reason: str
    sinks: dict[str, Diagnosis]
    order: tuple[str, ...]
    decision: dict[str, Any] | None = None
    completion: dict[str, Any] | None = None

    @property
    def committed(self) -> tuple[str, ...]:
        """The sinks that hold the run published by the decided attempt."""
        attempt = (self.decision or {}).get("attempt")
        return tuple(n for n in self.order if attempt and self.sinks[n].published_by == attempt)

    @property
    def safe_action(self) -> str:
        unknown = [d for d in self.sinks.values() if d.state is State.UNKNOWN]
        if self.state is State.UNKNOWN and unknown and all(d.unreadable is not None for d in unknown):
            return UNREADABLE_ACTION
        return self.state.safe_action

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "run_id": self.run_id,
            "dataset": self.dataset,
            "run_date": self.run_date.isoformat(),
            "state": self.state.value,
            "exit_code": self.exit_code,
            "meaning": self.state.meaning,
            "safe_action": self.safe_action,
            "reason": self.reason,
            "decided_by": (self.decision or {}).get("attempt"),
            "decided_at": (self.decision or {}).get("decided_at"),
            "completed_at": (self.completion or {}).get("completed_at"),
            "order": list(self.order),
            "committed": list(self.committed),
            "sinks": {name: self.sinks[name].to_dict() for name in self.order},
        }


def decide_group(
    group: str,
    run: Any,
    sinks: dict[str, Diagnosis],
    order: Iterable[str],
    decision: dict[str, Any] | None,
    completion: dict[str, Any] | None,
    holder: LockHolder | None = None,
) -> GroupDiagnosis:
    """The one verdict on a run published to a group of sinks, from each sink's diagnosis and the
    group's journal (the decision to commit, and the mark that every sink is committed). Rules:

    1. a sink whose state is UNKNOWN makes the group UNKNOWN; a live holder of the group's own lock
       (a group publish or recover under way, not the asking attempt) makes an incomplete run RUNNING;
    2. without a decision nothing may be published: a live attempt is RUNNING; a sink that holds the
       run published (by a publish outside the group) is UNKNOWN; orphaned staging is ORPHANED (the
       run rolls back: each sink's orphans are cleaned, then a re-run); else NOTHING_IN_FLIGHT;
    3. with a decision the run rolls forward, never back: a sink published by another attempt than
       the decided one is UNKNOWN; every sink committed and the completion marked is DONE (or
       PUBLISHED_WITH_ORPHANS with other attempts' leftovers); a live attempt is RUNNING (the
       publish, or a roll-forward, is still committing); a completion mark over a sink that is not
       committed is UNKNOWN; otherwise ROLL_FORWARD.
    """
    order = tuple(order)

    def verdict(state: State, reason: str) -> GroupDiagnosis:
        return GroupDiagnosis(group, run.dataset, run.run_date, state, reason, dict(sinks), order, decision, completion)

    def named(states: Iterable[State]) -> list[str]:
        wanted = set(states)
        return [n for n in order if sinks[n].state in wanted]

    unknown = named([State.UNKNOWN])
    if unknown:
        why = "; ".join(f"{n}: {sinks[n].reason}" for n in unknown)
        if all(sinks[n].missing_destination is not None for n in unknown):
            # A destination not there yet contradicts nothing: what the others show comes first
            # (found from outside: it hid a sink published outside the group).
            others = {n: replace(d, state=State.NOTHING_IN_FLIGHT) if n in unknown else d for n, d in sinks.items()}
            judged = decide_group(group, run, others, order, decision, completion, holder)
            if judged.state is State.UNKNOWN:
                why = f"{judged.reason}; also {why}"
        return verdict(State.UNKNOWN, why)
    if holder is not None and holder.attempt != run.attempt and completion is None:
        return verdict(
            State.RUNNING,
            f"attempt {holder.attempt} (pid {holder.pid} on {holder.host}) holds the group's run ({holder.location})",
        )
    if decision is None:
        if completion is not None:
            return verdict(State.UNKNOWN, "the journal marks the run complete but holds no decision to commit it")
        running = named([State.RUNNING])
        if running:
            return verdict(State.RUNNING, "; ".join(f"{n}: {sinks[n].reason}" for n in running))
        published = named([State.DONE, State.PUBLISHED_WITH_ORPHANS])
        if published:
            by = ", ".join(f"{n} by attempt {sinks[n].published_by}" for n in published)
            return verdict(
                State.UNKNOWN, f"published ({by}) with no decision in the group's journal: published outside the group"
            )
        orphaned = named([State.ORPHANED])
        if orphaned:
            return verdict(
                State.ORPHANED,
                f"not decided: the run rolls back; leftovers in {', '.join(orphaned)} "
                "(recover --group --apply cleans them)",
            )
        return verdict(State.NOTHING_IN_FLIGHT, "not decided, and nothing left behind in any sink")
    attempt = decision.get("attempt")
    foreign = [n for n in order if sinks[n].published_by not in (None, attempt)]
    if foreign:
        by = ", ".join(f"{n} by attempt {sinks[n].published_by}" for n in foreign)
        return verdict(State.UNKNOWN, f"decided by attempt {attempt}, but published by another: {by}")
    committed = [n for n in order if sinks[n].published_by == attempt]
    if len(committed) == len(order) and completion is not None:
        leftovers = named([State.PUBLISHED_WITH_ORPHANS])
        if leftovers:
            return verdict(
                State.PUBLISHED_WITH_ORPHANS,
                f"published to every sink by attempt {attempt}; other attempts' leftovers in {', '.join(leftovers)}",
            )
        return verdict(State.DONE, f"published to every sink ({', '.join(order)}) by attempt {attempt}")
    running = [n for n in named([State.RUNNING]) if n not in committed]
    if running:
        return verdict(State.RUNNING, "; ".join(f"{n}: {sinks[n].reason}" for n in running))
    if completion is not None:
        missing = [n for n in order if n not in committed]
        return verdict(State.UNKNOWN, f"marked complete, but not committed in {', '.join(missing)}")
    rest = [n for n in order if n not in committed]
    done = f"committed in {', '.join(committed)}" if committed else "committed in no sink yet"
    if not rest:
        return verdict(
            State.ROLL_FORWARD, f"decided by attempt {attempt} and committed in every sink; not yet marked complete"
        )
    # The sinks not committed yet as the roll-forward sees them (found from outside: shown as ORPHANED).
    shown = {**sinks, **{name: _to_roll_forward(sinks[name], str(attempt)) for name in rest}}
    reason = f"decided by attempt {attempt}: {done}; not yet in {', '.join(rest)}"
    return GroupDiagnosis(
        group, run.dataset, run.run_date, State.ROLL_FORWARD, reason, shown, order, decision, completion
    )


def _to_roll_forward(d: Diagnosis, attempt: str) -> Diagnosis:
    """A sink of a decided group run that is not committed yet: its staging of the decided
    ``attempt`` is what the roll-forward commits (evidence, not orphans); other attempts' leftovers
    stay orphans."""
    others = tuple(a for a in d.orphans if a.attempt != attempt)
    kept = [a for a in d.evidence if a.attempt == attempt]
    reason = f"not committed yet: the roll-forward commits attempt {attempt} here" + (
        f" (its staging: {len(kept)} item(s))" if kept else " (no staging of it left: staged again first)"
    )
    if others:
        reason += f"; {len(others)} leftover(s) of attempt(s) {attempts_of(others)}"
    return replace(d, state=State.ROLL_FORWARD, reason=reason, orphans=others)
