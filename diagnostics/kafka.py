"""Evidence of the Kafka sink, from the broker alone.

- commit record: the run's committed record in the ledger topic (read_committed);
- open transactions: records carrying the run's header past the last stable offset (LSO) of a
  partition, i.e. in a transaction that is neither committed nor aborted. Live (the holder) if its
  producer's pid is alive on this host, or, from another host, if it is younger than the
  transaction timeout; otherwise a leftover (a hanging transaction of a dead attempt);
- ``clean`` fences and aborts such a transaction by initialising a producer with the run's
  transactional.id, which is exactly what Kafka's fencing is for: a late EndTxn of the dead
  producer then carries an old epoch and is refused. Kafka has no run lock to hold while doing so;
  instead the open transactions are read again right before fencing, and a live one stops it.

What it cannot see: records of aborted transactions lie below the LSO, invisible to read_committed
consumers and reclaimed by retention; finding them would mean scanning the topic, so they are not
reported (they can never become visible).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

from atomic_publish.publishers._errors import RunInProgress
from atomic_publish.publishers._lease import is_this_scope, pid_alive
from atomic_publish.publishers._types import Run
from atomic_publish.publishers.layouts.kafka import (
    CLIENT_LOG,
    H_ATTEMPT,
    H_HOST,
    H_PID,
    H_RUN,
    H_SCOPE,
    KafkaSinkConfig,
    broker_errors,
    header,
    init_transactions,
    partition_offsets,
    read_ledger,
    read_range,
    topic_name,
    transactional_id,
)
from atomic_publish.publishers.taxonomy import Artifact, Diagnosis, Evidence, LockHolder

from .engine import Gone, SinkDiagnostic


class KafkaDiagnostic(SinkDiagnostic):
    sink_name = "kafka"

    def __init__(self, config: KafkaSinkConfig) -> None:
        self.config = config
        self.diagnose_timeout = config.diagnose_timeout_seconds

    def destination(self, run: Run) -> str:
        return f"topic {topic_name(self.config, run.dataset)}, ledger {self.config.ledger_topic}"

    def _open_transactions(self, run_id: str, dataset: str) -> list[Artifact]:
        found: dict[tuple[str, int, str], list[Any]] = {}
        for topic in (topic_name(self.config, dataset), self.config.ledger_topic):
            for partition, (_, lso, high) in partition_offsets(self.config, topic).items():
                if high <= lso:
                    continue
                for msg in read_range(self.config, topic, partition, lso, high, committed=False):
                    if header(msg, H_RUN) == run_id:
                        found.setdefault((topic, partition, header(msg, H_ATTEMPT) or "?"), []).append(msg)
        artifacts = []
        for (topic, partition, attempt), msgs in sorted(found.items()):
            first = msgs[0]
            pid_text = header(first, H_PID)
            artifacts.append(
                Artifact(
                    kind="open-transaction",
                    location=f"{topic}[{partition}]@{msgs[0].offset()}-{msgs[-1].offset()}",
                    modified_at=dt.datetime.fromtimestamp(first.timestamp()[1] / 1000, dt.UTC),
                    attempt=attempt,
                    rows=len(msgs),
                    detail=f"past the last stable offset; producer pid {pid_text} on {header(first, H_HOST)}",
                    identity=(
                        "txn",
                        attempt,
                        int(pid_text) if pid_text and pid_text.isdigit() else None,
                        header(first, H_HOST),
                        header(first, H_SCOPE),
                    ),
                )
            )
        return artifacts

    def _alive(self, art: Artifact, now: dt.datetime) -> bool:
        _, _, pid, _host, scope = art.identity
        if is_this_scope(scope):  # its pid names a process here (not only the same hostname)
            return pid_alive(pid)
        age = art.age_seconds(now) or 0.0
        return age * 1000 < self.config.transaction_timeout_ms

    def evidence(self, run: Run) -> Evidence:
        with broker_errors(self.config, "reading the ledger and the open transactions"):
            now = dt.datetime.now(dt.UTC)
            ledger_offsets = partition_offsets(self.config, self.config.ledger_topic)  # empty: no topic
            ledger = read_ledger(self.config, run.run_id, ledger_offsets)
            absent = None if ledger_offsets else f"the ledger topic {self.config.ledger_topic} does not exist yet"
            open_txns = [a for a in self._open_transactions(run.run_id, run.dataset) if a.attempt != run.attempt]
            problems: tuple[str, ...] = ()
            published_to = str(ledger.get("topic") or "") if ledger is not None else ""
            if published_to and not partition_offsets(self.config, published_to):
                # A record that references something missing is UNKNOWN (as a file sink's marker
                # whose data file is gone): records aged out by retention leave the topic; a deleted
                # topic is for a person to look at, and the ledger still refuses a re-run.
                problems = (
                    f"the ledger record says the run was published to topic {published_to}, which does not exist",
                )
        live = [a for a in open_txns if self._alive(a, now)]
        holder = None
        if live:
            art = live[0]
            holder = LockHolder(
                attempt=art.attempt,
                pid=art.identity[2],
                host=art.identity[3],
                started_at=art.modified_at.isoformat(timespec="seconds") if art.modified_at else None,
                location=f"an open transaction of transactional.id {transactional_id(run)} ({art.detail})",
            )
        record = None
        if ledger is not None:
            record = Artifact(
                kind="ledger-record",
                location=f"{self.config.ledger_topic}[{run.run_id}]",
                attempt=ledger.get("attempt"),
                rows=ledger.get("rows"),
                detail=f"at {ledger.get('published_at')}: {ledger.get('rows')} records, {ledger.get('checksum')}",
            )
        return Evidence(
            self.destination(run),
            absent=absent,
            record=record,
            holder=holder,
            live_attempts=frozenset(a.attempt for a in live if a.attempt),
            leftovers=tuple(a for a in open_txns if a not in live),
            problems=problems,
        )

    # -- clean (the loop is SinkDiagnostic.clean) -------------------------------------------------

    @contextlib.contextmanager
    def run_lock(self, run: Run) -> Iterator[None]:
        """Kafka has no lock an operator could hold: fencing is the lock (see fence)."""
        yield

    def fence(self, diagnosis: Diagnosis, attempts: set[str]) -> None:
        """Read the run's open transactions again: a live one (an attempt that started after the
        diagnosis) stops the clean. Otherwise initialise a producer with the run's transactional.id:
        the coordinator bumps the epoch and aborts the hanging transaction, and a late commit of the
        dead producer is refused (its epoch is old)."""
        from confluent_kafka import Producer

        self._fenced_at: float | None = None
        now = dt.datetime.now(dt.UTC)
        with broker_errors(self.config, "re-reading the open transactions"):
            current = self._open_transactions(diagnosis.run_id, diagnosis.dataset)
        live = [a for a in current if self._alive(a, now) or a.attempt not in attempts]
        if live:
            raise RunInProgress(
                f"run {diagnosis.run_id} has an open transaction of attempt {live[0].attempt} that the diagnosis did "
                "not name as dead; nothing was fenced: diagnose again",
                diagnosis,
            )
        if not current:
            return
        producer = Producer(
            {
                "logger": CLIENT_LOG,
                "bootstrap.servers": self.config.bootstrap_servers,
                **self.config.client_properties(),
                "transactional.id": transactional_id(Run(diagnosis.dataset, diagnosis.run_date)),
                "enable.idempotence": True,
            }
        )
        with broker_errors(self.config, "fencing the dead producer"):
            init_transactions(producer, self.config.timeout_seconds)
        self._fenced_at = time.monotonic()

    def recheck(self, diagnosis: Diagnosis, artifact: Artifact) -> str | None:
        """Nothing to re-check one by one: ``fence`` re-read every open transaction of the run just
        before (and stopped the clean if one was not the dead attempts' the diagnosis named), and the
        only removal is the fence's abort."""
        return None

    def remove(self, diagnosis: Diagnosis, artifact: Artifact) -> None:
        """The fence aborted the transaction; wait until its records are below the LSO."""
        deadline = time.monotonic() + self.config.timeout_seconds
        while True:
            with broker_errors(self.config, "waiting for the abort"):
                still = [
                    a
                    for a in self._open_transactions(diagnosis.run_id, diagnosis.dataset)
                    if a.attempt == artifact.attempt
                ]
            if not still:
                if not getattr(self, "_fenced_at", None):
                    raise Gone(artifact.location)  # it ended on its own before the fence: not ours to count
                return
            if time.monotonic() >= deadline:
                raise RunInProgress(
                    f"the transaction of attempt {artifact.attempt} was fenced but is still open after "
                    f"{self.config.timeout_seconds:g} s; diagnose again",
                    diagnosis,
                )
            time.sleep(0.2)

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        dates = set()
        topic = topic_name(self.config, dataset)
        with broker_errors(self.config, "listing open transactions"):
            for partition, (_, lso, high) in partition_offsets(self.config, topic).items():
                for msg in read_range(self.config, topic, partition, lso, high, committed=False):
                    run_id = header(msg, H_RUN) or ""
                    name, _, date = run_id.rpartition("/")
                    if name == dataset:
                        try:
                            dates.add(dt.date.fromisoformat(date))
                        except ValueError:
                            continue
        return sorted(dates)
