"""The file sink: local filesystem: staging + no-clobber rename + .success manifest."""

from __future__ import annotations

from ..publishers._protocol import Diagnostic, Publisher, SinkDefinition
from ..publishers.layouts.file import CAPABILITIES, FileSinkConfig


def make_publisher(options: FileSinkConfig) -> Publisher:
    from ..publishers.file import FilePublisher

    return FilePublisher(options)


def make_diagnostic(options: FileSinkConfig) -> Diagnostic:
    from ..diagnostics.file import FileDiagnostic

    return FileDiagnostic(options)


SINK = SinkDefinition(
    name="file",
    config_model=FileSinkConfig,
    make_publisher=make_publisher,
    make_diagnostic=make_diagnostic,
    description="local filesystem: staging + no-clobber rename + .success manifest",
    capabilities=CAPABILITIES,
)
