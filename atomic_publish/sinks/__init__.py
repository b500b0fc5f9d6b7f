"""The built-in sinks' definitions: each pairs a sink's publisher with its diagnostic.

This is the one place that may import both (``publishers/<sink>.py`` and ``diagnostics/<sink>.py``
share only ``publishers/layouts/<sink>.py``); the registry finds these by name, the way it finds a
third-party sink's definition through its entry point. Factories import their module when called,
so ``diagnose`` never imports a publisher, nor ``publish`` a diagnostic it does not use.
"""
