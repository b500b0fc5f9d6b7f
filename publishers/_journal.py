"""A group's journal: where the decision to commit a run to every sink of a group is recorded, once.

A file journal is a directory. Each record is a JSON file written whole and published under its
final name with ``link()``, which never replaces a file: the first attempt to record a run's
decision wins, and a reader sees a record complete or not at all. Records are never rewritten:

    <journal>/<group>/<dataset>/<run_date>.decision.json   the decided attempt and what each sink staged
    <journal>/<group>/<dataset>/<run_date>.complete.json   every sink committed (a downstream job waits for it)
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from ._errors import DestinationUnavailable
from ._fs import fsync_dir
from ._types import Run

KINDS = ("decision", "complete")


class FileJournal:
    def __init__(self, root: str | Path, group: str) -> None:
        self.root = Path(root)
        self.group = group

    def path(self, run: Run, kind: str) -> Path:
        assert kind in KINDS, kind
        return self.root / self.group / run.dataset / f"{run.run_date.isoformat()}.{kind}.json"

    def read(self, run: Run, kind: str) -> dict[str, Any] | None:
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
            path.parent.mkdir(parents=True, exist_ok=True)
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

    def describe(self) -> str:
        return str(self.root / self.group)
