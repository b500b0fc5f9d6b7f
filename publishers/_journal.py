"""A group's journal: where the decision to commit a run to every sink of a group is recorded, once.

A file journal is a directory. Each record is a JSON file written whole and published under its
final name with ``link()``, which never replaces a file: the first attempt to record a run's
decision wins, and a reader sees a record complete or not at all. Records are never rewritten:

    <journal>/<group>/<dataset>/<run_date>.decision.json   the decided attempt and what each sink staged
    <journal>/<group>/<dataset>/<run_date>.complete.json   every sink committed (a downstream job waits for it)
    <journal>/<group>/<dataset>/<run_date>.lock            held (flock) by the group's publish or recover

The journal's directory must exist: a journal that is not mounted is an error, never a fresh empty
one (which would say "not decided" about a decided run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from ._errors import DestinationUnavailable
from ._fs import fsync_dir
from ._lock import hold_flock, probe_flock
from ._types import AttemptInfo, Run
from .taxonomy import Diagnosis, GroupDiagnosis, State

KINDS = ("decision", "complete")


class FileJournal:
    def __init__(self, root: str | Path, group: str) -> None:
        self.root = Path(root)
        self.group = group

    def path(self, run: Run, kind: str) -> Path:
        assert kind in KINDS, kind
        return self.root / self.group / run.dataset / f"{run.run_date.isoformat()}.{kind}.json"

    def _root(self) -> Path:
        if not self.root.is_dir():
            raise DestinationUnavailable(f"the group journal's directory {self.root} does not exist (not mounted?)")
        return self.root

    def read(self, run: Run, kind: str) -> dict[str, Any] | None:
        self._root()
        path = self.path(run, kind)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DestinationUnavailable(f"cannot read the group journal {path}: {exc}") from exc
        if not isinstance(doc, dict):
            raise DestinationUnavailable(f"the group journal {path} is not a JSON object")
        return doc

    def record(self, run: Run, kind: str, doc: dict[str, Any]) -> bool:
        """Record ``doc`` durably unless the run already has a record of this kind; True if this
        call recorded it. Raises DestinationUnavailable when the journal cannot be written."""
        path = self.path(run, kind)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            self._dirs(path.parent)
            with open(tmp, "x", encoding="utf-8") as fh:
                fh.write(json.dumps(doc, sort_keys=True, indent=1) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # never replaces: the first record wins
            except FileExistsError:
                return False
            fsync_dir(path.parent)
            return True
        except OSError as exc:
            raise DestinationUnavailable(f"cannot write the group journal {path}: {exc.strerror or exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _dirs(self, directory: Path) -> None:
        """Create ``directory`` under the journal's root, each new level made durable in its parent."""
        root = self._root()
        missing = []
        while directory != root and not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            with contextlib.suppress(FileExistsError):
                new.mkdir()
            fsync_dir(new.parent)

    @contextlib.contextmanager
    def lock(self, run: Run) -> Iterator[None]:
        """The group's run lock (flock): one publish or recover of the group's run at a time."""
        path = self.path(run, "decision").with_name(f"{run.run_date.isoformat()}.lock")
        try:
            self._dirs(path.parent)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
        with hold_flock(path, AttemptInfo.current(run.attempt), f"{self.group}:{run.run_id}"):
            yield

    def holder(self, run: Run) -> Any:
        """The live holder of the group's run lock, or None."""
        return probe_flock(self.path(run, "decision").with_name(f"{run.run_date.isoformat()}.lock"))

    def describe(self) -> str:
        return str(self.root / self.group)


def rolling_forward(config: Any, sink: str | None, run: Run, *, other_than: str | None = None) -> str | None:
    """Why one sink's own publish, recover or sweep must not touch ``run`` (None: it may): see
    ``group_claim``."""
    claim = group_claim(config, sink, run, other_than=other_than)
    return None if claim is None else claim[1]


def group_claim(config: Any, sink: str | None, run: Run, *, other_than: str | None = None) -> tuple[State, str] | None:
    """The group that holds ``run`` in ``sink``, as the state it puts the run in and why (None: no
    group does): RUNNING while the group's run is being published or recovered, ROLL_FORWARD while
    it is decided and not complete (its retained staging is what the group's roll-forward commits).
    A sink belongs to a group when the group names it, or names another sink of the same type at
    the same destination (an alias must not clean what the group commits). ``other_than``: a group
    asking about its own sinks (the other groups that share one must not lose what they commit
    either)."""
    name = sink or config.settings.defaults.sink
    if not config.settings.groups:
        return None
    mine = _destination(config, name, run)
    for group, settings in config.settings.groups.items():
        if group == other_than:
            continue
        if name not in settings.sinks and (
            mine is None or all(_destination(config, m, run) != mine for m in settings.sinks)
        ):
            continue
        journal = config.journal(group)
        if journal.holder(run) is not None:
            return (
                State.RUNNING,
                f"sink {name} belongs to group {group}, whose run {run.run_id} is being published or recovered",
            )
        if journal.read(run, "decision") and not journal.read(run, "complete"):
            return (
                State.ROLL_FORWARD,
                f"sink {name} belongs to group {group}, whose run {run.run_id} is decided and not complete: "
                f"recover --group {group} --apply (this sink on its own would touch what the group commits)",
            )
    return None


def as_groups_leave_it(config: Any, sink: str | None, diagnosis: Diagnosis) -> Diagnosis:
    """One sink's diagnosis as the groups of ``config`` (a LoadedConfig) leave it: a run a group is
    publishing, or has decided and not completed, is that group's (``group_claim``)."""
    run = Run.new(diagnosis.dataset, diagnosis.run_date)
    return as_claimed(diagnosis, group_claim(config, sink, run))


_Verdict = TypeVar("_Verdict", Diagnosis, GroupDiagnosis)


def as_claimed(verdict: _Verdict, claim: tuple[State, str] | None) -> _Verdict:
    """``verdict`` as an operator must read it when a group holds the run (``group_claim``): that
    group's state and why, so that diagnose says what publish, recover and sweep do (found from
    outside: a sink's diagnosis said ORPHANED, "clean the orphans", and recover --apply refused
    with exit 15). A run published there already stays DONE."""
    if claim is None or verdict.state is State.DONE:
        return verdict
    changes: dict[str, Any] = {"state": claim[0], "reason": claim[1]}
    if isinstance(verdict, Diagnosis):  # what looked like orphans is what the group commits
        # (a verdict's evidence holds its orphans already: found from outside, each was shown twice)
        also = tuple(a for a in verdict.orphans if a not in verdict.evidence)
        changes.update(evidence=verdict.evidence + also, orphans=())
    return dataclasses.replace(verdict, **changes)


def _destination(config: Any, name: str, run: Run) -> tuple[str, str] | None:
    """(sink type, where its diagnostic looks for ``run``), or None when the sink cannot be resolved."""
    try:
        definition, options = config.sink(name)
        return definition.name, definition.make_diagnostic(options).destination(run)
    except Exception:  # an unknown or invalid sink: its own command reports that
        return None
