"""One taxonomy of crash states for every sink, with the safe action and exit code of each.

The destination is the ground truth: a verdict is built only from what the diagnostic found at the
destination (and the run lock), never from logs or the crashed process's memory.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


class State(enum.Enum):
    """What a run's destination holds. Values are stable strings used in ``--json`` documents."""

    DONE = "DONE"
    NOTHING_IN_FLIGHT = "NOTHING_IN_FLIGHT"
    ORPHANED = "ORPHANED"
    PUBLISHED_WITH_ORPHANS = "PUBLISHED_WITH_ORPHANS"
    RUNNING = "RUNNING"
    UNKNOWN = "UNKNOWN"

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
}

_SAFE_ACTIONS = {
    State.DONE: "nothing: the run is published",
    State.NOTHING_IN_FLIGHT: "re-run",
    State.ORPHANED: "clean the orphans (recover --apply), then re-run",
    State.PUBLISHED_WITH_ORPHANS: "clean the orphans only (recover --apply); never re-run",
    State.RUNNING: "touch nothing: a live attempt holds the run",
    State.UNKNOWN: "stop: read the evidence, settle it by hand; do not re-run or clean",
}

_MEANINGS = {
    State.DONE: "published, verified against its evidence, no leftovers",
    State.NOTHING_IN_FLIGHT: "not published and nothing left behind (crash states A/B/C)",
    State.ORPHANED: "not published; a dead attempt left staging behind (crash state D)",
    State.PUBLISHED_WITH_ORPHANS: "published, plus leftovers of another attempt (state D-race)",
    State.RUNNING: "a live attempt holds the run's lock",
    State.UNKNOWN: "the evidence contradicts itself",
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

    @classmethod
    def from_lease(cls, doc: dict[str, Any], location: str) -> LockHolder:
        return cls(
            attempt=doc.get("attempt"),
            pid=doc.get("pid"),
            host=doc.get("host"),
            started_at=doc.get("started_at"),
            location=location,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "pid": self.pid,
            "host": self.host,
            "started_at": self.started_at,
            "location": self.location,
        }


@dataclass(frozen=True)
class Diagnosis:
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

    @property
    def run_id(self) -> str:
        return f"{self.dataset}/{self.run_date.isoformat()}"

    @property
    def exit_code(self) -> int:
        return self.state.exit_code

    @property
    def safe_action(self) -> str:
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


def verdict_factory(sink: str, run: Any, destination: str, now: dt.datetime) -> Callable[..., Diagnosis]:
    """A function building this run's Diagnosis from a state, a reason and the evidence."""

    def verdict(state: State, reason: str, **evidence: Any) -> Diagnosis:
        return Diagnosis(
            sink=sink,
            dataset=run.dataset,
            run_date=run.run_date,
            state=state,
            reason=reason,
            destination=destination,
            diagnosed_at=now,
            **evidence,
        )

    return verdict


def nothing_to_clean(diagnosis: Diagnosis) -> CleanReport | None:
    """The part of every sink's ``clean`` that does not depend on the sink: refuse RUNNING and
    UNKNOWN (raising), and return an empty report when the verdict names no orphan."""
    from publishers._errors import RecoveryNeeded, RunInProgress

    if diagnosis.state is State.RUNNING:
        raise RunInProgress(f"run {diagnosis.run_id} is RUNNING: nothing is cleaned", diagnosis)
    if diagnosis.state is State.UNKNOWN:
        raise RecoveryNeeded(f"run {diagnosis.run_id} is UNKNOWN: {diagnosis.reason}; nothing is cleaned", diagnosis)
    if not diagnosis.orphans:
        return CleanReport(run_id=diagnosis.run_id, state_before=diagnosis.state)
    return None
