"""Diagnostics: read a destination, name the state a run is in, and clean exactly what it names."""

from .recovery import RecoveryOutcome, RecoveryPlan, SweepReport, apply_recovery, plan_recovery, sweep
from .taxonomy import Artifact, CleanReport, Diagnosis, LockHolder, State

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
    "plan_recovery",
    "sweep",
]
