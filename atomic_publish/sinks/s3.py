"""The s3 sink: S3 / MinIO: attempt-owned objects + a manifest written with If-None-Match."""

from __future__ import annotations

from ..publishers._protocol import Diagnostic, Publisher, SinkDefinition
from ..publishers.layouts.s3 import CAPABILITIES, S3SinkConfig


def make_publisher(options: S3SinkConfig) -> Publisher:
    from ..publishers.s3 import S3Publisher

    return S3Publisher(options)


def make_diagnostic(options: S3SinkConfig) -> Diagnostic:
    from ..diagnostics.s3 import S3Diagnostic

    return S3Diagnostic(options)


SINK = SinkDefinition(
    name="s3",
    config_model=S3SinkConfig,
    make_publisher=make_publisher,
    make_diagnostic=make_diagnostic,
    description="S3 / MinIO: attempt-owned objects + a manifest written with If-None-Match",
    capabilities=CAPABILITIES,
)
