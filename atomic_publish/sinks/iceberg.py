"""The iceberg sink: Apache Iceberg: Parquet data files + one snapshot carrying the run_id."""

from __future__ import annotations

from ..publishers._protocol import Diagnostic, Publisher, SinkDefinition
from ..publishers.layouts.iceberg import CAPABILITIES, IcebergSinkConfig


def make_publisher(options: IcebergSinkConfig) -> Publisher:
    from ..publishers.iceberg import IcebergPublisher

    return IcebergPublisher(options)


def make_diagnostic(options: IcebergSinkConfig) -> Diagnostic:
    from ..diagnostics.iceberg import IcebergDiagnostic

    return IcebergDiagnostic(options)


SINK = SinkDefinition(
    name="iceberg",
    config_model=IcebergSinkConfig,
    make_publisher=make_publisher,
    make_diagnostic=make_diagnostic,
    description="Apache Iceberg: Parquet data files + one snapshot carrying the run_id",
    capabilities=CAPABILITIES,
)
