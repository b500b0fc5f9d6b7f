"""What every sink's diagnostic shares, written once: a bounded diagnosis (evidence from the sink,
the verdict from ``taxonomy.decide``) and the one clean loop.

A sink's diagnostic subclasses ``SinkDiagnostic`` and supplies only:

- ``evidence(run)``: what the destination holds about the run (read-only, no verdict);
- ``run_lock(run)``: the run's lock or lease, held while cleaning (RunInProgress if a live attempt
  holds it), so nothing removed can belong to an attempt that started after the diagnosis;
- ``fence(diagnosis, attempts)``: make it impossible for a late commit of these dead attempts to
  land once their staging is gone (a no-op where the sink needs none, with the reason);
- ``recheck(diagnosis, artifact)``: None if the artifact is still exactly what was diagnosed, else
  why not;
- ``remove(diagnosis, artifact)``: remove one artifact (raise ``Gone`` if it is already gone);
- ``runs_with_leftovers(dataset)``: run dates a sweep should look at.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from atomic_publish.publishers._crash import crash_point
from atomic_publish.publishers._errors import (
    ConfigError,
    InputError,
    RecoveryNeeded,
    RunInProgress,
    SinkUnavailable,
    UnsafeLayout,
)
from atomic_publish.publishers._types import Run
from atomic_publish.publishers.taxonomy import Artifact, CleanReport, Diagnosis, Evidence, State, decide, old_enough

log = logging.getLogger("atomic_publish.diagnose")

DEFAULT_DIAGNOSE_TIMEOUT = 60.0


class Gone(Exception):
    """``remove`` found the artifact already gone."""


def _first_line(exc: BaseException) -> str:
    from atomic_publish.publishers._secrets import redact

    text = redact(str(exc).strip()) or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0]}"


class SinkDiagnostic:
    """Base of every sink's diagnostic (see the module docstring for what a sink supplies)."""

    sink_name: str = ""
    # Artifacts of one attempt are removed in this order of kind (default 0): e.g. the file sink
    # removes an output found without its marker before the pending manifest that explains it.
    removal_order: Mapping[str, int] = {}
    diagnose_timeout: float = DEFAULT_DIAGNOSE_TIMEOUT

    # -- supplied by the sink ---------------------------------------------------------------------

    def evidence(self, run: Run) -> Evidence:
        raise NotImplementedError

    def destination(self, run: Run) -> str:
        """Where this diagnostic looks, for a verdict made without evidence (a timeout)."""
        return self.sink_name

    def run_lock(self, run: Run) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def fence(self, diagnosis: Diagnosis, attempts: set[str]) -> None:
        """Make a late commit of ``attempts`` impossible before their staging is removed."""

    def recheck(self, diagnosis: Diagnosis, artifact: Artifact) -> str | None:
        return None

    def remove(self, diagnosis: Diagnosis, artifact: Artifact) -> None:
        raise NotImplementedError

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        raise NotImplementedError

    def surely_unpublished(self, run: Run) -> bool:
        """Optional, for speed: True only if one cheap read proves the run has no commit record (so
        it cannot be published), letting publish skip its early check before the lock; the full
        diagnosis under the lock still decides everything. False means "diagnose to know"."""
        return False

    # -- written once -----------------------------------------------------------------------------

    def diagnose(self, run: Run) -> Diagnosis:
        """Read-only, and bounded: a destination that does not answer within ``diagnose_timeout``
        seconds, or cannot be read at all, is UNKNOWN with the reason (never a hang, never a
        traceback)."""
        now = dt.datetime.now(dt.UTC)
        result: concurrent.futures.Future[Evidence] = concurrent.futures.Future()

        def gather() -> None:
            try:
                result.set_result(self.evidence(run))
            except BaseException as exc:
                result.set_exception(exc)

        # A daemon thread, so a destination that never answers cannot keep the process alive.
        threading.Thread(target=gather, name=f"diagnose-{self.sink_name}", daemon=True).start()
        try:
            evidence = result.result(timeout=self.diagnose_timeout)
        except concurrent.futures.TimeoutError:
            evidence = Evidence(
                destination=self.destination(run),
                unreadable=f"no answer within {self.diagnose_timeout:g} s (diagnose_timeout_seconds)",
            )
        except (ConfigError, InputError, SinkUnavailable, UnsafeLayout):
            raise  # a bad setting or name, not a fact about the destination: exit 2 says so
        except Exception as exc:
            log.debug("diagnosis of %s failed", run.run_id, exc_info=True)
            evidence = Evidence(destination=self.destination(run), unreadable=_first_line(exc))
        return decide(self.sink_name, run, evidence, now)

    def clean(self, diagnosis: Diagnosis, *, older_than: dt.timedelta | None = None) -> CleanReport:
        """Remove exactly the orphans the diagnosis names: under the run's lock, after fencing their
        attempts, each re-checked against the identity it was diagnosed with. With ``older_than``,
        only attempts whose youngest leftover is older (an attempt's evidence is never split).
        Refuses RUNNING and UNKNOWN."""
        if diagnosis.state is State.RUNNING:
            raise RunInProgress(f"run {diagnosis.run_id} is RUNNING: nothing is cleaned", diagnosis)
        if diagnosis.state is State.UNKNOWN:
            raise RecoveryNeeded(
                f"run {diagnosis.run_id} is UNKNOWN: {diagnosis.reason}; nothing is cleaned", diagnosis
            )
        report_removed: list[Artifact] = []
        skipped: list[tuple[Artifact, str]] = []
        if not diagnosis.orphans:
            return CleanReport(run_id=diagnosis.run_id, state_before=diagnosis.state)
        eligible, skipped = old_enough(diagnosis.orphans, older_than, dt.datetime.now(dt.UTC))
        operator = Run(diagnosis.dataset, diagnosis.run_date)
        if eligible:
            with self.run_lock(operator):
                self.fence(diagnosis, {a.attempt for a in eligible if a.attempt})
                for art in sorted(eligible, key=lambda a: self.removal_order.get(a.kind, 0)):
                    why = self.recheck(diagnosis, art)
                    if why is not None:
                        skipped.append((art, why))
                        continue
                    try:
                        self.remove(diagnosis, art)
                    except Gone:
                        skipped.append((art, "already gone"))
                        continue
                    report_removed.append(art)
                    if len(report_removed) == 1:
                        crash_point("mid_clean")
        return CleanReport(
            run_id=diagnosis.run_id,
            state_before=diagnosis.state,
            removed=tuple(report_removed),
            skipped=tuple(skipped),
        )
