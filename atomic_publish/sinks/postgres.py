"""The postgres sink: PostgreSQL: staging table + MERGE + ledger row in one transaction."""

from __future__ import annotations

from ..publishers._protocol import Diagnostic, Publisher, SinkDefinition
from ..publishers.layouts.postgres import CAPABILITIES, PostgresSinkConfig


def make_publisher(options: PostgresSinkConfig) -> Publisher:
    from ..publishers.postgres import PostgresPublisher

    return PostgresPublisher(options)


def make_diagnostic(options: PostgresSinkConfig) -> Diagnostic:
    from ..diagnostics.postgres import PostgresDiagnostic

    return PostgresDiagnostic(options)


SINK = SinkDefinition(
    name="postgres",
    config_model=PostgresSinkConfig,
    make_publisher=make_publisher,
    make_diagnostic=make_diagnostic,
    description="PostgreSQL: staging table + MERGE + ledger row in one transaction",
    capabilities=CAPABILITIES,
)
