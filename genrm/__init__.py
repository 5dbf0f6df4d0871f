"""Generative reward model service (issue 7)."""
