"""Hostile inputs: names, files, configurations and secrets thrown at the real config path and CLI."""
