"""The one-call library API beside ``publish``: ``diagnose`` and ``recover`` a run by name."""

from __future__ import annotations

from typing import Any

from ._publish import resolve_config
from ._types import Run


def diagnose(*, dataset: str, run_date: Any, sink: str | None = None, config: Any = None) -> Any:
    """The state of run ``dataset``/``run_date`` at ``sink`` (a ``Diagnosis``: ``.state``,
    ``.reason``, ``.safe_action``, ``.evidence``, ``.to_dict()``). Read-only."""
    definition, options = resolve_config(config).sink(sink)
    return definition.make_diagnostic(options).diagnose(Run.new(dataset, run_date))


def recover(*, dataset: str, run_date: Any, sink: str | None = None, config: Any = None, apply: bool = False) -> Any:
    """The recovery plan of a run (``apply=False``: a ``RecoveryPlan``, read-only), or carry it out
    and return the ``RecoveryOutcome`` (``.report`` of what was removed, ``.after``: the new state)."""
    from diagnostics import recovery

    definition, options = resolve_config(config).sink(sink)
    diagnostic = definition.make_diagnostic(options)
    plan = recovery.plan_recovery(diagnostic, Run.new(dataset, run_date))
    return recovery.apply_recovery(diagnostic, plan) if apply else plan
