"""The enrichment helper works with every request object the middlewares meet."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from audit_middleware.capture.context import CONTEXT_KEY, AuditContext, audit_context, current_context


@pytest.mark.parametrize(
    "make",
    [
        lambda d: d,  # ASGI scope / WSGI environ
        lambda d: SimpleNamespace(scope=d),  # Starlette / FastAPI Request
        lambda d: SimpleNamespace(environ=d),  # Flask / Werkzeug request
        lambda d: SimpleNamespace(META=d),  # Django request
    ],
)
def test_context_is_stored_in_the_request_dict(make: Any) -> None:
    carrier: dict[str, Any] = {}
    context = audit_context(make(carrier))
    context.update(user="u1", action="export", rows=3)
    assert carrier[CONTEXT_KEY] is context
    assert audit_context(make(carrier)) is context
    assert (context.user, context.action, context.metadata) == ("u1", "export", {"rows": 3})


def test_existing_context_is_reused() -> None:
    existing = AuditContext()
    assert audit_context({CONTEXT_KEY: existing}) is existing


def test_contextvar_is_used_without_a_request() -> None:
    context = AuditContext()
    token = current_context.set(context)
    try:
        assert audit_context() is context
        assert audit_context(object()) is context  # unknown object: falls back to the ContextVar
    finally:
        current_context.reset(token)


def test_outside_a_request_a_detached_context_never_fails() -> None:
    context = audit_context()
    context.update(user="x", note="ignored")
    assert audit_context() is not context


def test_user_set_to_none_counts_as_set() -> None:
    context = AuditContext()
    assert not context.has_user
    context.set_user(None)
    assert context.has_user and context.user is None


def test_skip_marks_the_context() -> None:
    context = AuditContext()
    context.skip()
    assert context.skipped and "metadata_keys" in repr(context)


def test_carrier_contextvar_creates_the_context_lazily() -> None:
    from audit_middleware.capture.context import current_carrier

    scope: dict[str, Any] = {}
    token = current_carrier.set(scope)
    try:
        context = audit_context()
        assert scope[CONTEXT_KEY] is context and audit_context() is context
    finally:
        current_carrier.reset(token)
