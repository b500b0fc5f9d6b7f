import datetime as dt

import pytest

from atomic_publish import InputError, Run
from atomic_publish.publishers._types import is_attempt_id, new_attempt_id
from atomic_publish.publishers.taxonomy import State


def test_run_id_is_deterministic_and_attempts_are_fresh():
    a = Run.new("refunds_settled", "2026-04-24")
    b = Run.new("refunds_settled", dt.date(2026, 4, 24))
    assert a.run_id == b.run_id == "refunds_settled/2026-04-24"
    assert a.attempt != b.attempt
    assert is_attempt_id(a.attempt) and is_attempt_id(b.attempt)
    assert a.next_attempt().run_id == a.run_id and a.next_attempt().attempt != a.attempt


def test_attempt_ids_sort_by_time():
    early = new_attempt_id(dt.datetime(2026, 4, 24, 6, 0, 1, tzinfo=dt.UTC))
    late = new_attempt_id(dt.datetime(2026, 4, 24, 6, 9, 43, tzinfo=dt.UTC))
    assert early < late


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "empty"),
        ("a/b", "path separator"),
        ("/etc", "path separator"),
        ("..", ".."),
        ("a..b", ".."),
        ("_staging", "is refused"),
        ("x" * 101, "is refused"),
        ("sp ace", "is refused"),
    ],
)
def test_bad_dataset_names_are_refused(name, fragment):
    with pytest.raises(InputError, match=fragment):
        Run.new(name, "2026-04-24")


@pytest.mark.parametrize("value", ["2026-13-01", "2026-02-30", "yesterday", "2026/04/24", "20260424", ""])
def test_bad_run_dates_are_refused(value):
    with pytest.raises(InputError, match="run date"):
        Run.new("refunds_settled", value)


def test_every_state_has_a_distinct_exit_code_that_is_not_error_or_usage():
    codes = [s.exit_code for s in State]
    assert len(set(codes)) == len(codes)
    assert not {1, 2} & set(codes)
    assert State.DONE.exit_code == 0
    for state in State:
        assert state.safe_action and state.meaning


def test_published_states():
    assert {s for s in State if s.published} == {State.DONE, State.PUBLISHED_WITH_ORPHANS}
