"""``python -m atomic_publish`` is ``atomic-publish``."""

from .cli import run

run()
