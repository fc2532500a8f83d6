"""Per-request enrichment: handlers set the user, action or extra metadata of their own audit event.

The middleware stores an :class:`AuditContext` under ``"audit_middleware.context"`` in the ASGI scope
or WSGI environ (the same dict the framework's request object wraps) and in a ContextVar. Handlers
reach it with :func:`audit_context`, passing whatever request object they have::

    from audit_middleware import audit_context

    @app.post("/password/reset")
    async def reset(request: Request):
        ...
        audit_context(request).update(user=user.id, method="email_link")

Works with an ASGI scope, a Starlette/FastAPI ``Request`` (``.scope``), a WSGI environ, a
Flask/Werkzeug request (``.environ``) and a Django request (``.META``); with no argument it uses the
ContextVar. Outside an audited request it returns a detached context, so calling it never fails.
A context created by a handler on an unmapped route makes that request audited (with its action).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import MutableMapping
from typing import Any

__all__ = [
    "AUDITED_KEY",
    "CONTEXT_KEY",
    "INSTALLED_KEY",
    "ROUTE_KEY",
    "USER_KEY",
    "AuditContext",
    "audit_context",
    "current_carrier",
    "current_context",
]

CONTEXT_KEY = "audit_middleware.context"
INSTALLED_KEY = "audit_middleware.installed"
AUDITED_KEY = "audit_middleware.audited"
"""Set (True) in the scope or environ of requests a middleware audits, for framework glue to check cheaply."""
USER_KEY = "audit_middleware.user"
"""Scope or environ key where framework glue (or the app) leaves the request's user (object or id)."""
ROUTE_KEY = "audit_middleware.route"
"""Scope or environ key where framework glue leaves the matched route template (``/users/{id}``)."""
_UNSET: Any = object()

current_context: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "audit_middleware.context", default=None
)
current_carrier: contextvars.ContextVar[MutableMapping[str, Any] | None] = contextvars.ContextVar(
    "audit_middleware.carrier", default=None
)
"""The running request's scope/environ: set by the middleware on every request, so ``audit_context()``
without an argument creates the context lazily (unaudited requests pay for no context object)."""


class AuditContext:
    """The handler's additions to this request's audit event.

    Attributes:
        action: replaces the mapped action (final: no ``_failed`` suffix is added).
        metadata: extra metadata merged into the event (redacted like everything else).
        skipped: True after :meth:`skip`; no event is recorded.
    """

    __slots__ = ("_user", "action", "metadata", "skipped")

    def __init__(self) -> None:
        self._user: Any = _UNSET
        self.action: str | None = None
        self.metadata: dict[str, Any] = {}
        self.skipped = False

    @property
    def user(self) -> Any:
        """The user set by the handler, or None."""
        return None if self._user is _UNSET else self._user

    @property
    def has_user(self) -> bool:
        """True if the handler set the user (even to None)."""
        return self._user is not _UNSET

    def set_user(self, user: Any) -> None:
        """Record ``user`` (an id or a user object with ``id``) as the actor."""
        self._user = user

    def update(self, *, user: Any = _UNSET, action: str | None = None, **metadata: Any) -> AuditContext:
        """Set the user and/or action and merge ``metadata``; returns self."""
        if user is not _UNSET:
            self._user = user
        if action is not None:
            self.action = action
        self.metadata.update(metadata)
        return self

    def skip(self) -> None:
        """Record nothing for this request."""
        self.skipped = True

    def __repr__(self) -> str:
        return f"AuditContext(action={self.action!r}, user={self.user!r}, metadata_keys={sorted(self.metadata)})"


def _carrier(obj: Any) -> MutableMapping[str, Any] | None:
    if isinstance(obj, MutableMapping):
        return obj
    for attr in ("scope", "environ", "META"):
        value = getattr(obj, attr, None)
        if isinstance(value, MutableMapping):
            return value
    return None


def audit_context(request: Any = None) -> AuditContext:
    """Return this request's :class:`AuditContext` (see the module docstring). Never raises.

    Args:
        request: an ASGI scope, WSGI environ, or a framework request object; None uses the ContextVar.
    """
    carrier = _carrier(request) if request is not None else None
    if carrier is None:
        context = current_context.get()
        if context is not None:
            return context
        carrier = current_carrier.get()
        if carrier is None:
            return AuditContext()
    context = carrier.get(CONTEXT_KEY)
    if not isinstance(context, AuditContext):
        context = AuditContext()
        with contextlib.suppress(Exception):  # a read-only mapping: the context stays detached
            carrier[CONTEXT_KEY] = context
    return context
