"""Processors: small callables over the final metadata dict, chained structlog style.

A processor takes the metadata and returns it (or a new dict); raising :class:`SkipAudit` drops the
record. The middleware builds its chain once with :func:`build_chain` and catches, logs and counts any
other exception a user's processor raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigurationError

__all__ = ["SkipAudit", "build_chain"]


class SkipAudit(Exception):
    """Raised by a processor to drop the record (see :func:`build_chain`)."""


def build_chain(
    processors: Sequence[Callable[[dict[str, Any]], dict[str, Any]]],
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """Compose processors over the final metadata dict, structlog style.

    Each processor takes the metadata and returns it (or a new dict). A processor that raises
    :class:`SkipAudit` or returns ``None`` drops the record: the chain returns ``None``. Any other
    exception propagates (the middleware catches, logs and counts it).

    Example:
        >>> def tag(metadata):
        ...     metadata["tenant"] = "acme"
        ...     return metadata
        >>> build_chain([tag])({"ip": "10.0.0.1"})
        {'ip': '10.0.0.1', 'tenant': 'acme'}
    """
    steps = tuple(processors)
    for index, step in enumerate(steps):
        if not callable(step):
            raise ConfigurationError(f"processors[{index}] is not callable: {step!r}")

    def run(metadata: dict[str, Any]) -> dict[str, Any] | None:
        current: dict[str, Any] | None = metadata
        try:
            for step in steps:
                current = step(current)  # type: ignore[arg-type]
                if current is None:
                    return None
        except SkipAudit:
            return None
        return current

    return run
