"""Sinks: where the writer sends batches of rows."""

from __future__ import annotations

from .postgres import PostgresSink, Rejected

__all__ = ["PostgresSink", "Rejected"]
