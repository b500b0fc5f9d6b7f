"""Each sink's layout (options, names, shared reads), imported by its publisher and its diagnostic."""
