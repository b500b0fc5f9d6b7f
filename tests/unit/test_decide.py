"""The one verdict function, table-driven: evidence -> state for one sink (``decide``), and sink
states + journal -> state for a group (``decide_group``). Each row is one rule of their docstrings."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from atomic_publish.publishers.taxonomy import decide_group
from atomic_publish.sdk import Artifact, Diagnosis, Evidence, LockHolder, Run, State, decide

RUN = Run.new("refunds_settled", "2026-04-24")
ME, DEAD, LIVE, OTHER = RUN.attempt, "20260424T000000Z-dead00", "20260424T000001Z-11fe00", "20260424T000002Z-07e400"
T = dt.datetime(2026, 4, 24, 6, tzinfo=dt.UTC)


def record(attempt: str = OTHER) -> Artifact:
    return Artifact("marker", "/out/r.success", 10, T, attempt)


def staging(attempt: str) -> Artifact:
    return Artifact("staging", f"/stage/{attempt}", 10, T, attempt)


def holder(attempt: str) -> LockHolder:
    return LockHolder(attempt, 4242, "host", T.isoformat(), "/locks/r.lock")


CASES = [
    # (why, evidence, state, orphans' attempts)
    ("nothing at all", Evidence("d"), State.NOTHING_IN_FLIGHT, set()),
    ("unreadable beats everything", Evidence("d", record=record(), unreadable="timed out"), State.UNKNOWN, set()),
    ("a commit record: DONE", Evidence("d", record=record()), State.DONE, set()),
    ("a record beats a live holder", Evidence("d", record=record(), holder=holder(LIVE)), State.DONE, set()),
    (
        "a record with dead leftovers",
        Evidence("d", record=record(), leftovers=(staging(DEAD),)),
        State.PUBLISHED_WITH_ORPHANS,
        {DEAD},
    ),
    (
        "a record with a live attempt's staging: not an orphan",
        Evidence("d", record=record(), holder=holder(LIVE), leftovers=(staging(LIVE),)),
        State.DONE,
        set(),
    ),
    ("a record contradicted", Evidence("d", record=record(), problems=("checksum differs",)), State.UNKNOWN, set()),
    (
        "a live holder, not published",
        Evidence("d", holder=holder(LIVE), leftovers=(staging(LIVE),)),
        State.RUNNING,
        set(),
    ),
    ("my own holder is not RUNNING", Evidence("d", holder=holder(ME)), State.NOTHING_IN_FLIGHT, set()),
    (
        "my own holder; dead leftovers",
        Evidence("d", holder=holder(ME), leftovers=(staging(DEAD),)),
        State.ORPHANED,
        {DEAD},
    ),
    (
        "live_attempts protect staging without a holder",
        Evidence("d", live_attempts=frozenset({LIVE}), leftovers=(staging(LIVE), staging(DEAD))),
        State.ORPHANED,
        {DEAD},
    ),
    ("unexplained data, not published", Evidence("d", problems=("data without a marker",)), State.UNKNOWN, set()),
    ("the destination is missing", Evidence("d", missing="no root"), State.UNKNOWN, set()),
    ("what a first publish creates is absent", Evidence("d", absent="no table yet"), State.NOTHING_IN_FLIGHT, set()),
    ("dead leftovers only", Evidence("d", leftovers=(staging(DEAD),)), State.ORPHANED, {DEAD}),
]


@pytest.mark.parametrize(("why", "evidence", "state", "orphans"), CASES, ids=[c[0] for c in CASES])
def test_decide(why, evidence, state, orphans):
    d = decide("test", RUN, evidence, now=T)
    assert d.state is state, d.reason
    assert {a.attempt for a in d.orphans} == orphans
    assert d.published_by == (evidence.record.attempt if evidence.record is not None else None)
    assert d.exit_code == state.exit_code


def sink(state: State, by: str | None = None, orphans: int = 0) -> Diagnosis:
    found = tuple(staging(DEAD) for _ in range(orphans))
    return Diagnosis("s", RUN.dataset, RUN.run_date, state, state.value, orphans=found, published_by=by)


A = "20260424T060000Z-a00000"
DECIDED = {"attempt": A, "decided_at": T.isoformat()}
COMPLETE = {"completed_at": T.isoformat()}
GROUP = [
    # (why, sinks, decision, completion, state)
    ("nothing anywhere", [sink(State.NOTHING_IN_FLIGHT)] * 2, None, None, State.NOTHING_IN_FLIGHT),
    ("an unknown sink", [sink(State.UNKNOWN), sink(State.DONE, A)], DECIDED, COMPLETE, State.UNKNOWN),
    ("undecided, a live attempt", [sink(State.RUNNING), sink(State.NOTHING_IN_FLIGHT)], None, None, State.RUNNING),
    (
        "undecided, leftovers: roll back",
        [sink(State.ORPHANED, orphans=1), sink(State.NOTHING_IN_FLIGHT)],
        None,
        None,
        State.ORPHANED,
    ),
    (
        "undecided but published somewhere",
        [sink(State.DONE, OTHER), sink(State.NOTHING_IN_FLIGHT)],
        None,
        None,
        State.UNKNOWN,
    ),
    ("complete without a decision", [sink(State.DONE, A)] * 2, None, COMPLETE, State.UNKNOWN),
    ("decided, nothing committed yet", [sink(State.ORPHANED, orphans=1)] * 2, DECIDED, None, State.ROLL_FORWARD),
    (
        "decided, one committed",
        [sink(State.DONE, A), sink(State.ORPHANED, orphans=1)],
        DECIDED,
        None,
        State.ROLL_FORWARD,
    ),
    ("decided, all committed, not marked", [sink(State.DONE, A)] * 2, DECIDED, None, State.ROLL_FORWARD),
    ("decided, all committed, marked", [sink(State.DONE, A)] * 2, DECIDED, COMPLETE, State.DONE),
    (
        "complete, another attempt's leftovers",
        [sink(State.PUBLISHED_WITH_ORPHANS, A, 1), sink(State.DONE, A)],
        DECIDED,
        COMPLETE,
        State.PUBLISHED_WITH_ORPHANS,
    ),
    (
        "decided, published by another attempt",
        [sink(State.DONE, OTHER), sink(State.NOTHING_IN_FLIGHT)],
        DECIDED,
        None,
        State.UNKNOWN,
    ),
    ("decided, a roll-forward still running", [sink(State.DONE, A), sink(State.RUNNING)], DECIDED, None, State.RUNNING),
    (
        "marked complete over an uncommitted sink",
        [sink(State.DONE, A), sink(State.NOTHING_IN_FLIGHT)],
        DECIDED,
        COMPLETE,
        State.UNKNOWN,
    ),
]


def test_a_live_group_publish_is_running_until_complete():
    """Between a publish's last commit and its completion mark, diagnose says RUNNING, not ROLL_FORWARD."""
    named = {
        "s0": dataclasses.replace(sink(State.DONE, A), sink="s0"),
        "s1": dataclasses.replace(sink(State.DONE, A), sink="s1"),
    }
    live = holder(A)
    assert decide_group("g", RUN, named, list(named), DECIDED, None, live).state is State.RUNNING
    assert decide_group("g", RUN, named, list(named), DECIDED, COMPLETE, live).state is State.DONE
    assert (
        decide_group("g", Run(RUN.dataset, RUN.run_date, A), named, list(named), DECIDED, None, live).state
        is State.ROLL_FORWARD
    )


@pytest.mark.parametrize(("why", "sinks", "decision", "completion", "state"), GROUP, ids=[g[0] for g in GROUP])
def test_decide_group(why, sinks, decision, completion, state):
    named = {f"s{i}": dataclasses.replace(d, sink=f"s{i}") for i, d in enumerate(sinks)}
    g = decide_group("g", RUN, named, list(named), decision, completion)
    assert g.state is state, g.reason
    assert g.exit_code == state.exit_code
    assert g.to_dict()["sinks"].keys() == named.keys()


def test_a_missing_destination_does_not_hide_a_sink_published_outside_the_group():
    """Found from outside: the reason named only a file sink's root not created yet (which a first
    publish creates) and hid the real cause, a sink published outside the group."""
    missing = dataclasses.replace(
        sink(State.UNKNOWN), reason="the root /out does not exist", missing_destination="the root /out"
    )
    named = {
        "files": dataclasses.replace(missing, sink="files"),
        "pg": dataclasses.replace(sink(State.DONE, OTHER), sink="pg"),
    }
    g = decide_group("g", RUN, named, list(named), None, None)
    assert g.state is State.UNKNOWN
    assert g.reason.startswith(f"published (pg by attempt {OTHER}) with no decision"), g.reason
    assert "also files: the root /out does not exist" in g.reason and "?" not in g.reason
    alone = {"files": named["files"], "pg": dataclasses.replace(sink(State.NOTHING_IN_FLIGHT), sink="pg")}
    assert decide_group("g", RUN, alone, list(alone), None, None).reason == "files: the root /out does not exist"


def test_a_run_a_recover_holds_is_running_and_says_a_recover_holds_it():
    by_recover = dataclasses.replace(holder(LIVE), purpose="recover")
    d = decide("file", RUN, Evidence(destination="/out", holder=by_recover))
    assert d.state is State.RUNNING and d.reason.startswith(f"a recover {LIVE} "), d.reason
    assert d.to_dict()["holder"]["purpose"] == "recover"
