"""The file sink's layout: its options, where a run's staging, lock, marker and data live, and the
names that say whose each artifact is. Shared by the publisher and the diagnostic, which never import
each other."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from .._errors import (
    UnsafeLayout,
)
from .._protocol import ALLOW_SCHEMA_CHANGE, Capabilities, SinkOptions
from .._types import Run, part_suffix

if TYPE_CHECKING:
    pass

# pyarrow is imported by the methods that write: diagnose, recover and sweep never need it.

log = logging.getLogger("atomic_publish.file")

MANIFEST_VERSION = 1
STAGING_DIR = "_staging"
LOCKS_DIR = "_locks"
MARKER_SUFFIX = ".success"
FORMATS = ("csv", "parquet")  # FileSinkConfig.format's values
PENDING_SUFFIX = ".pending.json"
MARKER_TMP_SUFFIX = ".success.tmp"


class FileSinkConfig(SinkOptions):
    """Options of a ``type = "file"`` sink."""

    type: Literal["file"] = "file"
    root: Path = Field(default=Path("data/out"), description="directory that holds every dataset")
    format: Literal["csv", "parquet"] = "csv"
    parquet_compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    parquet_row_group_rows: int = Field(default=262_144, gt=0)
    verify_checksum: bool = Field(default=True, description="diagnose re-reads published data to check its sha256")
    allow_schema_change: bool = Field(default=False, description=ALLOW_SCHEMA_CHANGE)

    @field_validator("root", mode="before")
    @classmethod
    def _root_is_a_plain_path(cls, root: Any) -> Any:
        from .. import _names

        if isinstance(root, str):  # no control character, no padding, not empty ("" would be the cwd)
            _names.common(root, "root", "a directory path")
        return root

    @field_validator("root")
    @classmethod
    def _root_is_not_a_system_dir(cls, root: Path) -> Path:
        resolved = root.expanduser().resolve()
        # Cleanup only ever works inside <root>/_staging, but a root of "/" or $HOME would still put
        # datasets beside unrelated files; refuse the two places that are never meant.
        if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
            raise ValueError(f"root {str(root)!r} resolves to {resolved}, which is not a dedicated directory")
        return root


@dataclass(frozen=True)
class StagingName:
    run_date: dt.date
    attempt: str
    kind: str  # "staging-data" | "pending-manifest" | "marker-temp"


_PART_RE = re.compile(r"^\.p\d{5,}(-[0-9a-z]+)?\.")
_STAGING_RE = re.compile(r"^(?P<date>\d{4}-\d{2}-\d{2})\.(?P<attempt>\d{8}T\d{6}Z-[0-9a-f]{6})\.(?P<rest>.+)$")


class FileLayout:
    """Every path the file sink and its diagnostic use, in one place."""

    def __init__(self, root: Path, fmt: str) -> None:
        self.root = root.expanduser().resolve()
        self.ext = fmt

    def root_problem(self) -> str | None:
        """Why the root can never hold a dataset, if it cannot: it, or the nearest of its parents
        that exists, is not a directory (no publish can create it; the config must change)."""
        path = self.root
        while not path.exists() and path != path.parent:
            path = path.parent
        if path.is_dir():
            return None
        if path == self.root:
            return f"the root {self.root} is not a directory: fix `root`"
        return f"the root {self.root} cannot be created: {path} is not a directory: fix `root`"

    def dataset_dir(self, dataset: str) -> Path:
        return self._inside(self.root / dataset)

    def final(self, run: Run, fmt: str | None = None) -> Path:
        """The run's published file, in the configured format or in ``fmt``."""
        return self.dataset_dir(run.dataset) / f"{run.run_date.isoformat()}.{fmt or self.ext}"

    def marker(self, run: Run, fmt: str | None = None) -> Path:
        final = self.final(run, fmt)
        return final.with_name(final.name + MARKER_SUFFIX)

    def formats(self) -> tuple[str, ...]:
        """Every format a run can have been published in, the configured one first: the config's
        ``format`` may have changed since (a run published as CSV is published, whatever the sink
        writes now)."""
        return (self.ext, *(f for f in FORMATS if f != self.ext))

    def staging_dir(self, dataset: str) -> Path:
        return self._inside(self.root / STAGING_DIR / dataset)

    def _attempt_prefix(self, run: Run) -> str:
        return f"{run.run_date.isoformat()}.{run.attempt}"

    def staging_data(self, run: Run) -> Path:
        return self.staging_dir(run.dataset) / f"{self._attempt_prefix(run)}.{self.ext}"

    def staging_part(self, run: Run, part: int, token: str) -> Path:
        """A part staged by one worker (a Spark task): the run, the attempt, the part and the token."""
        return self.staging_dir(run.dataset) / f"{self._attempt_prefix(run)}.{part_suffix(part, token)}.{self.ext}"

    def staged_parts(self, run: Run) -> list[Path]:
        """Every part staged under the attempt of ``run`` (committed or not)."""
        prefix = self._attempt_prefix(run)
        directory = self.staging_dir(run.dataset)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return sorted(directory / n for n in names if n.startswith(prefix) and _PART_RE.match(n[len(prefix) :]))

    def pending(self, run: Run) -> Path:
        return self.staging_dir(run.dataset) / f"{self._attempt_prefix(run)}{PENDING_SUFFIX}"

    def marker_tmp(self, run: Run) -> Path:
        return self.staging_dir(run.dataset) / f"{self._attempt_prefix(run)}{MARKER_TMP_SUFFIX}"

    def lock(self, dataset: str, run_date: dt.date) -> Path:
        return self._inside(self.root / LOCKS_DIR / dataset / f"{run_date.isoformat()}.lock")

    def parse_staging_name(self, name: str) -> StagingName | None:
        m = _STAGING_RE.match(name)
        if not m:
            return None
        rest = m.group("rest")
        if rest == PENDING_SUFFIX[1:]:
            kind = "pending-manifest"
        elif rest == MARKER_TMP_SUFFIX[1:]:
            kind = "marker-temp"
        elif rest == self.ext:
            kind = "staging-data"
        else:
            # Staging of another format (the config changed between attempts) is still this run's.
            kind = "staging-data"
        try:
            run_date = dt.date.fromisoformat(m.group("date"))
        except ValueError:
            return None
        return StagingName(run_date, m.group("attempt"), kind)

    def _inside(self, path: Path) -> Path:
        # A dataset directory that is a symlink to somewhere else would let publish and cleanup
        # act outside the root; the resolved path must stay under the resolved root.
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise UnsafeLayout(f"{path} resolves to {resolved}, outside the configured root {self.root}")
        return resolved

    def check_same_filesystem(self) -> None:
        staging = self.root / STAGING_DIR
        if staging.exists() and staging.stat().st_dev != self.root.stat().st_dev:
            raise UnsafeLayout(
                f"{staging} is on another filesystem than {self.root}: a rename between them would not be atomic"
            )


def _appears(path: Path, seconds: float) -> bool:
    """True once ``path`` exists, waiting up to ``seconds``: a winner whose data is at its final
    name writes its manifest a few milliseconds later."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


CAPABILITIES = Capabilities(max_parts=None, assembles_parts=True, reads_back=True, checks_schema=True)
