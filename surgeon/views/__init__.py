"""Read-only views of models for people: ``inspect`` and ``diff``."""
