"""Publishers: each sink's publisher (stage, then commit in one atomic step), the contract every
sink implements, and the machinery they share. The public API is ``atomic_publish``; this package
is imported as ``atomic_publish.publishers`` (the repository keeps the folder at its top level)."""

if __name__ != "atomic_publish.publishers":  # the same files under two names would be two modules
    raise ImportError(f"import atomic_publish.publishers, not {__name__} (the repository's top-level folder)")
