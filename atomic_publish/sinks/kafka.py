"""The kafka sink: Apache Kafka: one transaction per attempt (transactional.id from the run) + a ledger record."""

from __future__ import annotations

from ..publishers._protocol import Diagnostic, Publisher, SinkDefinition
from ..publishers.layouts.kafka import CAPABILITIES, KafkaSinkConfig


def make_publisher(options: KafkaSinkConfig) -> Publisher:
    from ..publishers.kafka import KafkaPublisher

    return KafkaPublisher(options)


def make_diagnostic(options: KafkaSinkConfig) -> Diagnostic:
    from ..diagnostics.kafka import KafkaDiagnostic

    return KafkaDiagnostic(options)


SINK = SinkDefinition(
    name="kafka",
    config_model=KafkaSinkConfig,
    make_publisher=make_publisher,
    make_diagnostic=make_diagnostic,
    description="Apache Kafka: one transaction per attempt (transactional.id from the run) + a ledger record",
    capabilities=CAPABILITIES,
)
