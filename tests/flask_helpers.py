"""A real Flask app behind AuditWSGIMiddleware, rows in real PostgreSQL (Flask-Security and Flask-Login tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anyio

from audit_middleware import AuditWSGIMiddleware, install_flask
from tests.conftest import PgTarget

CLIENT_IP = "203.0.113.7"


@dataclass(frozen=True)
class Row:
    """One stored row, decoded."""

    action: str
    user_id: Any
    metadata: dict[str, Any]
    text: str  # the whole row as stored, to look for secrets in

    @property
    def user(self) -> str | None:
        """The user as stored: the uuid column, else ``metadata.user_ref`` (integer ids)."""
        return str(self.user_id) if self.user_id is not None else self.metadata.get("user_ref")


class AuditedFlask:
    """``app.wsgi_app`` wrapped by ``AuditWSGIMiddleware`` (writing to ``pg``), ``install_flask`` unless
    ``glue=False``, and Flask's test client, which calls the wrapped ``wsgi_app`` like a WSGI server."""

    def __init__(self, app: Any, pg: PgTarget, *, glue: bool = True) -> None:
        self.app = app
        self.pg = pg
        self.middleware = AuditWSGIMiddleware(app.wsgi_app, dsn=pg.dsn, writer_options={"schema": pg.schema})
        app.wsgi_app = self.middleware
        if glue:
            install_flask(app)
        self.client = app.test_client()

    def open(self, method: str, path: str, **kwargs: Any) -> Any:
        environ_base = {"REMOTE_ADDR": CLIENT_IP, **kwargs.pop("environ_base", {})}
        return self.client.open(path, method=method, environ_base=environ_base, buffered=True, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.open("POST", path, data=data or {}, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.open("GET", path, **kwargs)

    def cookie(self, name: str) -> str:
        found = self.client.get_cookie(name)
        assert found is not None, f"no {name} cookie was issued"
        return str(found.value)

    def rows(self) -> list[Row]:
        """Every row written so far, oldest first."""
        self.middleware.flush(10)
        return [
            Row(r["action"], r["user_id"], json.loads(r["metadata"]), " ".join(str(v) for v in r.values()))
            for r in anyio.run(self.pg.rows)
        ]

    def close(self) -> None:
        self.middleware.close(10)


def assert_rows(rows: list[Row], expected: list[tuple[str, str | None]], *secrets: str) -> None:
    """Each row has the expected (action, user), the client's IP, and none of ``secrets``."""
    actual = [(r.action, r.user) for r in rows]
    assert actual == expected, f"{actual} != {expected}"
    assert {r.metadata["ip"] for r in rows} == {CLIENT_IP}
    for row in rows:
        for secret in secrets:
            assert secret not in row.text, f"a secret is stored in the {row.action} row"
