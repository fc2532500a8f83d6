"""The ``audit-middleware`` command: ``main.py`` (the parser and the schema commands), ``ops.py`` (tail,
query, export, stats, prune, partitions) and ``args.py`` (shared argument parsing)."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
