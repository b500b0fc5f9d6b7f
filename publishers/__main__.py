"""``python -m publishers`` is ``atomic-publish``."""

from .cli import main

main()
