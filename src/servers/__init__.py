"""Composition roots: one per process, plus configuration, logging and the CLI."""
