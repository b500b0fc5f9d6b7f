"""The shipped contract suite's plugin: its fixtures and its crash-point parametrization."""

pytest_plugins = ["atomic_publish.testing"]
