"""How the Kafka sink reads a client error out of what confluent-kafka raises.

confluent-kafka 2.16 sometimes reports an error raised inside one of its callbacks as a SystemError
("<built-in function isinstance> returned a result with an exception set") whose cause is the real
KafkaException: seen from flush() of a producer fenced by a racing attempt, about 1 race in 10, which
made the loser exit 1 (unexpected error) instead of 13 (fenced). The sink reads the cause.
"""

from __future__ import annotations

import pytest

pytest.importorskip("confluent_kafka")

from confluent_kafka import KafkaError, KafkaException

from atomic_publish.publishers.kafka import _kafka_error, _wrapped_client_error


def _system_error_from(cause: BaseException) -> SystemError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise SystemError("<built-in function isinstance> returned a result with an exception set") from inner
    except SystemError as outer:
        return outer


def test_the_fencing_error_is_read_through_the_system_error():
    fenced = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    wrapped = _system_error_from(KafkaException(fenced))
    assert _wrapped_client_error(wrapped)
    error = _kafka_error(wrapped)
    assert error is not None and error.code() == KafkaError._FENCED and error.fatal()


def test_a_plain_client_error_is_read_as_it_is():
    error = KafkaError(KafkaError._TIMED_OUT, "timed out")
    assert _kafka_error(KafkaException(error)).code() == KafkaError._TIMED_OUT


def test_a_system_error_without_a_client_error_is_not_taken_for_one():
    assert _kafka_error(_system_error_from(ValueError("x"))) is None
    assert not _wrapped_client_error(_system_error_from(ValueError("x")))
    assert not _wrapped_client_error(SystemError("bare"))
    assert _kafka_error(ValueError("x")) is None
