"""Diagnostics: read a destination, name the state a run is in, and clean exactly what it names."""

if __name__ != "atomic_publish.diagnostics":  # the same files under two names would be two modules
    raise ImportError(f"import atomic_publish.diagnostics, not {__name__} (the repository's top-level folder)")

from atomic_publish.publishers._journal import as_groups_leave_it  # a run a group holds is the group's
from atomic_publish.publishers.taxonomy import Artifact, CleanReport, Diagnosis, LockHolder, State

from .recovery import RecoveryOutcome, RecoveryPlan, SweepReport, apply_recovery, plan_recovery, sweep

__all__ = [
    "Artifact",
    "CleanReport",
    "Diagnosis",
    "LockHolder",
    "RecoveryOutcome",
    "RecoveryPlan",
    "State",
    "SweepReport",
    "apply_recovery",
    "as_groups_leave_it",
    "plan_recovery",
    "sweep",
]
