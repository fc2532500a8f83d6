"""AuditWSGIMiddleware around Flask apps: Flask's test client, install_flask glue, the example on real PostgreSQL."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from flask import Flask, g, redirect, request

from audit_middleware import AuditWriter, AuditWSGIMiddleware, audit_context, install_flask
from audit_middleware.testing import MemorySink, StoredEvent
from tests.conftest import PgTarget
from tests.wsgi_helpers import PASSWORD, UID

ROOT = Path(__file__).resolve().parents[2]


class FlaskAudit:
    def __init__(self, **options: Any) -> None:
        self.sink = MemorySink()
        self.app = app = Flask(__name__)
        app.config["PROPAGATE_EXCEPTIONS"] = False

        @app.before_request
        def load_user() -> None:
            g.user = request.headers.get("X-Session-User")  # stands in for a session lookup

        @app.post("/login")
        def login() -> tuple[dict[str, str], int]:
            body = request.get_json(force=True)
            if body.get("password") != PASSWORD:
                return {"error": "bad credentials"}, 401
            g.user = UID
            return {"status": "ok"}, 200

        @app.post("/logout")
        def logout() -> tuple[str, int]:
            g.user = None
            return "", 204

        @app.delete("/items/<int:item_id>")
        def delete_item(item_id: int) -> tuple[str, int]:
            audit_context(request).update(item=item_id)
            return "", 204

        @app.post("/forgot-password")
        def crash() -> str:
            raise RuntimeError("mail server down")

        self.middleware = AuditWSGIMiddleware(app.wsgi_app, writer=AuditWriter(sink=self.sink), **options)
        app.wsgi_app = self.middleware  # type: ignore[method-assign]
        install_flask(app)
        self.client = app.test_client()

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.open(path, method=kwargs.pop("method", "POST"), buffered=True, **kwargs)

    def events(self) -> list[StoredEvent]:
        self.middleware.flush(5)
        return self.sink.events


@pytest.fixture
def flask_audit() -> Iterator[FlaskAudit]:
    audit = FlaskAudit(routes={"DELETE /items/<int:id>": "item_deleted"})
    yield audit
    audit.middleware.close(5)


def test_login_body_is_captured_through_werkzeug_and_redacted(flask_audit: FlaskAudit) -> None:
    response = flask_audit.post("/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert response.status_code == 200
    [event] = flask_audit.events()
    assert (event.action, str(event.user_id)) == ("login", UID)  # g.user set by the view, via install_flask
    assert event.metadata["body"]["fields"]["email"] == "ann@example.com"
    assert event.metadata["identifier"] == "ann@example.com"
    flask_audit.sink.assert_no_secret(PASSWORD)


def test_failed_login_and_logout_user_taken_before_the_view(flask_audit: FlaskAudit) -> None:
    flask_audit.post("/login", json={"email": "ann@example.com", "password": "nope"})
    flask_audit.post("/logout", headers={"X-Session-User": UID})
    failed, logout = flask_audit.events()
    assert (failed.action, failed.user_id) == ("login_failed", None)
    assert (logout.action, str(logout.user_id)) == ("logout", UID)


def test_flask_url_rule_becomes_the_route_template(flask_audit: FlaskAudit) -> None:
    flask_audit.post("/items/17", method="DELETE")
    [event] = flask_audit.events()
    assert (event.action, event.metadata["http"]["route"], event.metadata["item"]) == (
        "item_deleted",
        "/items/{item_id}",
        17,
    )


def test_view_exception_handled_by_flask_is_a_500_failure(flask_audit: FlaskAudit) -> None:
    assert flask_audit.post("/forgot-password", json={"email": "ann@example.com"}).status_code == 500
    [event] = flask_audit.events()
    assert (event.action, event.metadata["http"]["status"]) == ("password_reset_requested_failed", 500)


def test_unaudited_requests_do_not_touch_the_glue(flask_audit: FlaskAudit) -> None:
    assert flask_audit.post("/nowhere", method="GET").status_code == 404
    assert flask_audit.events() == []


def test_a_user_callable_that_raises_never_breaks_the_request() -> None:
    app = Flask(__name__)

    @app.post("/login")
    def login() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    def broken_user() -> Any:
        raise LookupError("session store unreachable")

    sink = MemorySink()
    middleware = AuditWSGIMiddleware(app.wsgi_app, writer=AuditWriter(sink=sink))
    app.wsgi_app = middleware  # type: ignore[method-assign]
    install_flask(app, user=broken_user)
    try:
        response = app.test_client().post(
            "/login", json={"email": "ann@example.com", "password": PASSWORD}, buffered=True
        )
        middleware.flush(5)
    finally:
        middleware.close(5)
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
    [event] = sink.events
    assert (event.action, event.user_id) == ("login_attempt", None)  # no user, no credential: only an attempt


# -- the example app, end to end on real PostgreSQL ------------------------------------------------


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("flask_app_example", ROOT / "examples" / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_flask_example_writes_its_auth_flow_to_postgres(empty_schema: PgTarget) -> None:
    example = load_example()
    app = example.create_app(empty_schema.dsn, schema=empty_schema.schema)
    client = app.test_client()
    email, password = "ann@example.com", "correct horse battery staple"
    try:
        env = {"REMOTE_ADDR": "203.0.113.10"}
        registered = client.post("/register", json={"email": email, "password": password}, buffered=True)
        client.post("/login", json={"email": email, "password": password}, environ_base=env, buffered=True)
        client.post("/login", json={"email": email, "password": "wrong"}, environ_base=env, buffered=True)
        client.post("/logout", buffered=True)
        client.post("/reset", json={"email": email}, buffered=True)
        client.post(f"/reset/{app.config['LAST_RESET_TOKEN']}", json={"password": "new one"}, buffered=True)
    finally:
        example.shutdown(app)
    rows = anyio.run(empty_schema.rows)
    user_id = registered.get_json()["id"]
    assert [r["action"] for r in rows] == [
        "signup",
        "login",
        "login_failed",
        "logout",
        "password_reset_requested",
        "password_reset",
    ]
    assert [str(r["user_id"]) for r in rows] == [user_id] * 6  # the FK to the example's users table holds
    text = " ".join(str(r["metadata"]) for r in rows)
    assert password not in text and app.config["LAST_RESET_TOKEN"] not in text.replace("{token}", "")


def test_a_redirect_to_itself_without_flask_login_is_the_fallbacks_failure() -> None:
    """Without Flask-Login a sign-in announces nothing: the response decides, and a redirect back to the form
    is the Flask-Login tutorial's failure (docs/auth-preset.md, "How the outcome is decided")."""
    app = Flask(__name__)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        return redirect("/login")  # as the tutorial answers a wrong password (flash, then back to the form)

    sink = MemorySink()
    middleware = AuditWSGIMiddleware(app.wsgi_app, writer=AuditWriter(sink=sink))
    app.wsgi_app = middleware  # type: ignore[method-assign]
    install_flask(app)
    try:
        assert app.test_client().post("/login", data={"email": "ann@example.com"}, buffered=True).status_code == 302
        middleware.flush(5)
    finally:
        middleware.close(5)
    assert [event.action for event in sink.events] == ["login_failed"]


def test_a_post_werkzeug_redirects_to_the_canonical_url_is_recorded_once() -> None:
    """POST /register (the rule is /register/): Werkzeug answers 308 before any view; the client posts again."""
    app = Flask(__name__)

    @app.post("/register/")
    def register() -> tuple[dict[str, str], int]:
        request.get_json()  # (a sign-up reads its form: the preset's /register needs the password field seen)
        return {"id": UID}, 201

    sink = MemorySink()
    middleware = AuditWSGIMiddleware(app.wsgi_app, writer=AuditWriter(sink=sink))
    app.wsgi_app = middleware  # type: ignore[method-assign]
    install_flask(app)
    try:
        response = app.test_client().post(
            "/register", json={"email": "ann@example.com", "password": PASSWORD}, follow_redirects=True, buffered=True
        )
        middleware.flush(5)
    finally:
        middleware.close(5)
    assert response.status_code == 201
    assert [(event.action, event.metadata["http"]["status"]) for event in sink.events] == [("signup", 201)]
