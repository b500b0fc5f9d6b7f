"""The one-call library API beside ``publish``: ``diagnose`` and ``recover`` a run by name."""

from __future__ import annotations

from typing import Any

from .publishers._publish import resolve_config
from .publishers._types import Run


def diagnose(*, dataset: str, run_date: Any, sink: str | None = None, config: Any = None) -> Any:
    """The state of run ``dataset``/``run_date`` at ``sink`` (a ``Diagnosis``: ``.state``,
    ``.reason``, ``.safe_action``, ``.evidence``, ``.to_dict()``). Read-only. A run that a group of
    the configuration holds in this sink is in that group's state (RUNNING or ROLL_FORWARD)."""
    from .publishers._journal import as_groups_leave_it

    loaded = resolve_config(config)
    definition, options = loaded.sink(sink)
    return as_groups_leave_it(loaded, sink, definition.make_diagnostic(options).diagnose(Run.new(dataset, run_date)))


def recover(*, dataset: str, run_date: Any, sink: str | None = None, config: Any = None, apply: bool = False) -> Any:
    """The recovery plan of a run (``apply=False``: a ``RecoveryPlan``, read-only), or carry it out
    and return the ``RecoveryOutcome`` (``.report`` of what was removed, ``.after``: the new state)."""
    from ._groups import refuse_if_rolling_forward
    from .diagnostics import recovery

    loaded = resolve_config(config)
    refuse_if_rolling_forward(loaded, sink, Run.new(dataset, run_date))  # its plan is the group's to carry out
    definition, options = loaded.sink(sink)
    diagnostic = definition.make_diagnostic(options)
    plan = recovery.plan_recovery(diagnostic, Run.new(dataset, run_date))
    return recovery.apply_recovery(diagnostic, plan) if apply else plan


def sweep(*, dataset: str, older_than: Any, sink: str | None = None, config: Any = None, apply: bool = False) -> Any:
    """Every run date of ``dataset`` with leftovers older than ``older_than`` (a ``timedelta``): a
    ``SweepReport`` of each run's state; with ``apply=True``, their orphans are removed (the same
    rules as ``recover``: never a RUNNING or UNKNOWN run, never anything published)."""
    from .diagnostics import recovery
    from .publishers._journal import group_claim

    loaded = resolve_config(config)
    definition, options = loaded.sink(sink)
    return recovery.sweep(
        definition.make_diagnostic(options),
        dataset,
        older_than,
        apply=apply,
        skip=lambda run: group_claim(loaded, sink, run),  # a group's retained staging is not an orphan
    )
