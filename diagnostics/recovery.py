"""Recovery: turn a diagnosis into a plan, apply it, and the daily sweep of old orphans.

A plan lists exactly the orphans the verdict names and nothing else. Applying it re-checks each one
under the run lock (the diagnostic's ``clean``), then diagnoses again, so the caller always ends
with the state the destination is really in. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from atomic_publish.publishers._errors import AtomicPublishError, DestinationUnavailable
from atomic_publish.publishers._protocol import Diagnostic
from atomic_publish.publishers._types import Run
from atomic_publish.publishers.taxonomy import CleanReport, Diagnosis, State, old_enough


@dataclass(frozen=True)
class RecoveryPlan:
    diagnosis: Diagnosis

    @property
    def actionable(self) -> bool:
        return self.diagnosis.state in (State.ORPHANED, State.PUBLISHED_WITH_ORPHANS) and bool(self.diagnosis.orphans)

    @property
    def steps(self) -> list[str]:
        d = self.diagnosis
        if d.state is State.RUNNING:
            return ["nothing: a live attempt holds the run; wait for it, then diagnose again"]
        if d.state is State.UNKNOWN:
            return ["nothing automatic: the evidence contradicts itself; read it and settle by hand"]
        steps = [f"remove {a.kind} {a.location} ({a.size_bytes} bytes, attempt {a.attempt})" for a in d.orphans]
        if d.state is State.ORPHANED:
            steps.append("then re-run the job for this run date")
        if d.state is State.NOTHING_IN_FLIGHT:
            steps.append("nothing to clean; re-run the job for this run date")
        if d.state is State.DONE:
            steps.append("nothing: the run is published")
        return steps

    def to_dict(self) -> dict[str, Any]:
        return {"diagnosis": self.diagnosis.to_dict(), "steps": self.steps}


@dataclass(frozen=True)
class RecoveryOutcome:
    plan: RecoveryPlan
    report: CleanReport | None
    after: Diagnosis

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "report": self.report.to_dict() if self.report else None,
            "after": self.after.to_dict(),
        }


def plan_recovery(diagnostic: Diagnostic, run: Run) -> RecoveryPlan:
    return RecoveryPlan(diagnostic.diagnose(run))


@contextlib.contextmanager
def _destination_errors(diagnostic: Diagnostic, doing: str) -> Iterator[None]:
    """A client failure while cleaning or listing (the server down, no credentials) becomes one
    line naming the sink: the project's DestinationUnavailable (exit 5), never a raw driver error."""
    try:
        yield
    except (AtomicPublishError, KeyboardInterrupt):
        raise
    except Exception as exc:
        from atomic_publish.publishers._secrets import redact

        text = redact(str(exc).strip()).splitlines()
        raise DestinationUnavailable(
            f"{diagnostic.sink_name} sink: {doing} failed: {type(exc).__name__}: {text[0] if text else ''}"
        ) from exc


def apply_recovery(diagnostic: Diagnostic, plan: RecoveryPlan) -> RecoveryOutcome:
    """Clean what the plan names (refuses RUNNING and UNKNOWN), then diagnose again."""
    d = plan.diagnosis
    with _destination_errors(diagnostic, "cleaning"):
        report = diagnostic.clean(d) if plan.actionable or d.state in (State.RUNNING, State.UNKNOWN) else None
    after = diagnostic.diagnose(Run.new(d.dataset, d.run_date))
    return RecoveryOutcome(plan, report, after)


@dataclass(frozen=True)
class SweepReport:
    dataset: str
    older_than: dt.timedelta
    applied: bool
    runs: list[tuple[Diagnosis, CleanReport | None, str]] = field(default_factory=list)
    # Runs left alone because a group holds them (its decided run rolls forward from their staging).
    held_by_groups: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes_freed for _, r, _ in self.runs if r)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "older_than_seconds": self.older_than.total_seconds(),
            "applied": self.applied,
            "bytes_freed": self.bytes_freed,
            "runs": [
                {"diagnosis": d.to_dict(), "report": r.to_dict() if r else None, "note": note}
                for d, r, note in self.runs
            ],
        }


def sweep(
    diagnostic: Diagnostic,
    dataset: str,
    older_than: dt.timedelta,
    *,
    apply: bool,
    skip: Callable[[Run], tuple[State, str] | None] | None = None,
) -> SweepReport:
    """The daily orphan-cleaner: across every run date of ``dataset`` with leftovers, remove the
    orphans of attempts older than ``older_than``. Never touches RUNNING or UNKNOWN runs, nor a run
    ``skip`` gives the state a group puts the run in and why, to leave it alone (a group publishing
    it, RUNNING, or rolling it forward, ROLL_FORWARD: only the latter is listed in held_by_groups)."""
    report = SweepReport(dataset, older_than, apply)
    now = dt.datetime.now(dt.UTC)
    with _destination_errors(diagnostic, "listing the run dates with leftovers"):
        run_dates = diagnostic.runs_with_leftovers(dataset)
    for run_date in run_dates:
        d = diagnostic.diagnose(Run.new(dataset, run_date))
        claim = skip(Run.new(dataset, run_date)) if skip is not None else None
        if claim is not None:
            report.runs.append((d, None, f"left alone: {claim[1]}"))
            if claim[0] is State.ROLL_FORWARD:  # to roll forward (not a group's publish still running)
                report.held_by_groups.append(d.run_id)
            continue
        if d.state in (State.RUNNING, State.UNKNOWN):
            report.runs.append((d, None, f"left alone: {d.state.value}"))
            continue
        if not d.orphans:
            continue
        old, _ = old_enough(d.orphans, older_than, now)  # the same rule clean applies
        if not apply:
            report.runs.append((d, None, f"would remove {len(old)} of {len(d.orphans)} orphan(s)"))
            continue
        with _destination_errors(diagnostic, f"cleaning {d.run_id}"):
            cleaned = diagnostic.clean(d, older_than=older_than)
        report.runs.append((d, cleaned, f"removed {len(cleaned.removed)} of {len(d.orphans)} orphan(s)"))
    return report
