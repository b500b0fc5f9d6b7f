"""The small frozen values that flow between the pipeline, publishers and diagnostics."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import secrets
import socket
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
    """What one writer staged, small and serialisable so a driver can commit several workers' parts."""

    sink: str
    run_id: str
    attempt: str
    location: str
    rows: int
    bytes: int
    checksum: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
