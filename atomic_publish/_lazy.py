"""Public names resolved on first use (PEP 562): ``atomic-publish --help`` imports no pyarrow,
pydantic or sink, and a program that needs only an exception class pays for nothing else.

A module lists its public names once, as imports under ``if TYPE_CHECKING:`` (what type checkers,
IDEs and readers see) and in ``__all__``; ``exports`` reads where each name lives from those imports.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any


def exports(package: str, public: Sequence[str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of module ``package``: each name of ``public`` is imported, on first use,
    from the module its ``if TYPE_CHECKING:`` import names. A name in one list and not the other
    fails at import, not at a user's first use of it."""
    module = sys.modules[package]
    anchor = module.__package__ or package  # relative imports resolve in the module's package
    source = module.__file__ or ""
    with open(source, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    home: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom):
                    for alias in imp.names:
                        home[alias.asname or alias.name] = "." * imp.level + (imp.module or "")
    if set(home) != set(public):
        raise ImportError(f"{package}: __all__ and the TYPE_CHECKING imports differ: {sorted(set(home) ^ set(public))}")

    def __getattr__(name: str) -> Any:
        where = home.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where, anchor), name)
        module.__dict__[name] = value  # once: later lookups do not come here
        return value

    return __getattr__
