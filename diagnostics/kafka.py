"""Diagnosis of the Kafka sink, from the broker alone.

- published: the run's committed record in the ledger topic (read_committed);
- open transactions: records carrying the run's headers past the last stable offset (LSO) of a
  partition, i.e. in a transaction that is neither committed nor aborted. Live (RUNNING) if its
  producer's pid is alive on this host, or, from another host, if it is younger than the
  transaction timeout; otherwise an orphan (a hanging transaction of a dead attempt);
- ``clean`` aborts such a transaction by initialising a producer with the run's transactional.id,
  which is exactly what Kafka's fencing is for.

What it cannot see: records of aborted transactions lie below the LSO, invisible to read_committed
consumers and reclaimed by retention; finding them would mean scanning the topic, so they are not
reported (they can never become visible).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from typing import Any

from publishers._lease import pid_alive
from publishers._types import Run
from publishers.kafka import (
    CLIENT_LOG,
    H_ATTEMPT,
    H_HOST,
    H_PID,
    H_RUN,
    KafkaPublisher,
    KafkaSinkConfig,
    header,
    init_transactions,
    partition_offsets,
    read_ledger,
    read_range,
    transactional_id,
)

from .taxonomy import (
    Artifact,
    CleanReport,
    Diagnosis,
    LockHolder,
    State,
    attempts_of,
    nothing_to_clean,
    verdict_factory,
)


class KafkaDiagnostic:
    sink_name = "kafka"

    def __init__(self, config: KafkaSinkConfig) -> None:
        self.config = config
        self._topics = KafkaPublisher(config)

    def _open_transactions(self, run_id: str, dataset: str) -> list[Artifact]:
        found: dict[tuple[str, int, str], list[Any]] = {}
        for topic in (self._topics.topic(dataset), self.config.ledger_topic):
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
                    ),
                )
            )
        return artifacts

    def _alive(self, art: Artifact, now: dt.datetime) -> bool:
        _, _, pid, host = art.identity
        if host == socket.gethostname():
            return pid_alive(pid)
        age = art.age_seconds(now) or 0.0
        return age * 1000 < self.config.transaction_timeout_ms

    def diagnose(self, run: Run) -> Diagnosis:
        now = dt.datetime.now(dt.UTC)
        verdict = verdict_factory(
            self.sink_name, run, f"topic {self._topics.topic(run.dataset)}, ledger {self.config.ledger_topic}", now
        )
        ledger = read_ledger(self.config, run.run_id)
        open_txns = [a for a in self._open_transactions(run.run_id, run.dataset) if a.attempt != run.attempt]
        live = [a for a in open_txns if self._alive(a, now)]
        if live:
            art = live[0]
            return verdict(
                State.RUNNING,
                f"attempt {art.attempt} has an open transaction ({art.detail})",
                holder=LockHolder(
                    attempt=art.attempt,
                    pid=art.identity[2],
                    host=art.identity[3],
                    started_at=art.modified_at.isoformat(timespec="seconds") if art.modified_at else None,
                    location=f"transactional.id {transactional_id(run)}",
                ),
                evidence=tuple(open_txns),
            )
        if ledger is not None:
            ledger_art = Artifact(
                kind="ledger-record",
                location=f"{self.config.ledger_topic}[{run.run_id}]",
                attempt=ledger.get("attempt"),
                rows=ledger.get("rows"),
                detail=f"{ledger.get('checksum')}, published {ledger.get('published_at')}",
            )
            if open_txns:
                return verdict(
                    State.PUBLISHED_WITH_ORPHANS,
                    f"published by attempt {ledger.get('attempt')}; hanging transaction(s) of {attempts_of(open_txns)}",
                    evidence=(ledger_art, *open_txns),
                    orphans=tuple(open_txns),
                )
            return verdict(
                State.DONE,
                f"published by attempt {ledger.get('attempt')} at {ledger.get('published_at')}: {ledger.get('rows')} "
                f"records, {ledger.get('checksum')}",
                evidence=(ledger_art,),
            )
        if open_txns:
            return verdict(
                State.ORPHANED,
                f"not published; hanging transaction(s) of dead attempt(s) {attempts_of(open_txns)}",
                evidence=tuple(open_txns),
                orphans=tuple(open_txns),
            )
        return verdict(State.NOTHING_IN_FLIGHT, "no ledger record and no open transaction of the run")

    def clean(self, diagnosis: Diagnosis, *, older_than: dt.timedelta | None = None) -> CleanReport:
        from confluent_kafka import Producer

        early = nothing_to_clean(diagnosis)
        if early is not None:
            return early
        now = dt.datetime.now(dt.UTC)
        if older_than is not None and any(
            (a.age_seconds(now) or 0) < older_than.total_seconds() for a in diagnosis.orphans
        ):
            return CleanReport(
                run_id=diagnosis.run_id,
                state_before=diagnosis.state,
                skipped=tuple((a, f"younger than {older_than}") for a in diagnosis.orphans),
            )
        run = Run(diagnosis.dataset, diagnosis.run_date)
        # A producer with the run's transactional.id bumps the epoch and makes the coordinator abort
        # the hanging transaction: its records stay invisible to read_committed readers for good.
        producer = Producer(
            {
                "logger": CLIENT_LOG,
                "bootstrap.servers": self.config.bootstrap_servers,
                **self.config.properties,
                "transactional.id": transactional_id(run),
                "enable.idempotence": True,
            }
        )
        init_transactions(producer)  # fences the dead attempt's producer and aborts its transaction
        deadline = time.monotonic() + 30
        while self._open_transactions(diagnosis.run_id, diagnosis.dataset) and time.monotonic() < deadline:
            time.sleep(0.2)
        return CleanReport(run_id=diagnosis.run_id, state_before=diagnosis.state, removed=diagnosis.orphans)

    def runs_with_leftovers(self, dataset: str) -> list[dt.date]:
        dates = set()
        topic = self._topics.topic(dataset)
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
