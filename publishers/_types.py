"""The small frozen values that flow between the pipeline, publishers and diagnostics."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import InputError

# A dataset name becomes a path segment, a table-name part and a topic-name part, so it is held
# to the intersection of what all of those accept (publishers._names.dataset).
_ATTEMPT_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")


def validate_dataset(name: str) -> str:
    """Return ``name`` if it is a safe dataset name, else raise InputError naming the problem (the
    whole string is checked: no trailing newline, no control character; see publishers._names)."""
    from . import _names

    try:
        return _names.dataset(name)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def parse_run_date(value: str | dt.date) -> dt.date:
    """Parse a run date (YYYY-MM-DD) or raise InputError naming the value."""
    if isinstance(value, dt.datetime):
        raise InputError(f"run date must be a date, not a timestamp: {value!r}")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value, re.ASCII):
        raise InputError(f"run date {value!r} is not a date in the form YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"run date {value!r} is not a valid date: {exc}") from None


def new_attempt_id(now: dt.datetime | None = None) -> str:
    """A fresh, time-sortable attempt id such as ``20260424T060001Z-9f2c1a``.

    Short enough to fit inside a Postgres identifier or a Kafka transactional.id together with the
    run, and sortable so an operator sees at a glance which attempt came first.
    """
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def is_attempt_id(value: str) -> bool:
    return isinstance(value, str) and bool(_ATTEMPT_RE.fullmatch(value))


@dataclass(frozen=True)
class Run:
    """One run of a dataset for one run date, as tried by one attempt.

    ``run_id`` is deterministic (dataset + run date): every attempt of the same run lands on the same
    names, so a re-run is bit-identical. ``attempt`` is fresh per try, and every staged artifact
    carries both, so ownership is explicit and a crashed attempt's leftovers are attributable.
    """

    dataset: str
    run_date: dt.date
    attempt: str = field(default_factory=new_attempt_id)

    def __post_init__(self) -> None:
        validate_dataset(self.dataset)
        object.__setattr__(self, "run_date", parse_run_date(self.run_date))
        if not is_attempt_id(self.attempt):
            raise InputError(f"attempt id {self.attempt!r} is not of the form YYYYMMDDTHHMMSSZ-xxxxxx")

    @classmethod
    def new(cls, dataset: str, run_date: str | dt.date) -> Run:
        return cls(dataset=dataset, run_date=parse_run_date(run_date))

    @property
    def run_id(self) -> str:
        return f"{self.dataset}/{self.run_date.isoformat()}"

    def next_attempt(self) -> Run:
        """The same run, tried again by a new attempt (a retry never reuses staging)."""
        return Run(self.dataset, self.run_date)


@dataclass(frozen=True)
class AttemptInfo:
    """Who an attempt is, as written into lock files and manifests for the operator."""

    attempt: str
    pid: int
    host: str
    started_at: str

    @classmethod
    def current(cls, attempt: str) -> AttemptInfo:
        return cls(
            attempt=attempt,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "pid": self.pid, "host": self.host, "started_at": self.started_at}


@dataclass(frozen=True)
class Staged:
    """What one writer staged: a small JSON value (``to_json`` / ``from_json``), so that workers
    (processes, hosts, Spark executors) each stage a part of a run and send it to the one driver that
    commits them all.

    ``part`` numbers the part within the run (0 for a run staged in one piece); ``token`` tells two
    stagings of the same part apart (a task retried or speculated stages its part again under a new
    token), so they never share a name and only the one the driver commits is published. Every name
    a sink stages under carries the run, the attempt, the part and the token.
    """

    sink: str
    run_id: str
    attempt: str
    location: str
    rows: int
    bytes: int
    checksum: str
    details: dict[str, Any] = field(default_factory=dict)
    part: int = 0
    token: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Staged:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise InputError("a staged part is a JSON object")
        return cls(**doc)


def new_part_token() -> str:
    """A fresh token for one staging of a part (4 hex digits: unique enough among a part's retries)."""
    return secrets.token_hex(2)


def part_suffix(part: int, token: str) -> str:
    """The part and token in a staged name: empty for a run staged in one piece (part 0, no token)."""
    if part == 0 and not token:
        return ""
    return f"p{part:05d}" + (f"-{token}" if token else "")


def combine_checksums(staged: Sequence[Staged]) -> str:
    """The run's checksum, one rule for every sink: a run staged in one piece keeps its part's
    checksum; several parts give ``sha256-of-parts:<sha256 of the parts' checksums, one per line,
    in part order>``."""
    if len(staged) == 1:
        return staged[0].checksum
    ordered = sorted(staged, key=lambda s: (s.part, s.token))
    joined = "\n".join(s.checksum for s in ordered).encode()
    return "sha256-of-parts:" + hashlib.sha256(joined).hexdigest()


def check_parts(run: Run, staged: Sequence[Staged]) -> None:
    """What a driver may commit: at least one part, all of this run, no part twice (one staging of
    each part: a retried part's other stagings stay behind as leftovers, never a second copy)."""
    from ._errors import CommitRejected

    if not staged:
        raise CommitRejected(f"nothing staged for {run.run_id}")
    foreign = [s for s in staged if s.run_id != run.run_id]
    if foreign:
        raise CommitRejected(f"a staged part belongs to run {foreign[0].run_id}, not {run.run_id}")
    others = [s for s in staged if s.attempt != run.attempt]
    if others:
        raise CommitRejected(f"a staged part of {run.run_id} belongs to attempt {others[0].attempt}, not {run.attempt}")
    parts = [s.part for s in staged]
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:
        raise CommitRejected(f"part(s) {twice} of {run.run_id} given more than once: commit one staging of each part")


@dataclass(frozen=True)
class Receipt:
    """Proof of a commit: where the run is published and what was published."""

    sink: str
    run_id: str
    attempt: str
    location: str
    rows: int
    bytes: int
    checksum: str
    published_at: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
