"""Optional glue that hands a framework's user and matched route to the audit middleware.

The middleware sits outside the framework, so it cannot see ``flask_login.current_user`` or
Django's ``request.user``; these helpers copy them into the WSGI environ or, for Django under ASGI,
the ASGI scope (``USER_KEY``, ``ROUTE_KEY``) on audited requests only, so unaudited requests pay
nothing (no session lookup).

Flask::

    app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, dsn=DSN)
    install_flask(app)                      # user: flask_login.current_user, else flask.g.user

Django, under ``AuditWSGIMiddleware`` or ``AuditMiddleware`` (``settings.MIDDLEWARE``, after
``AuthenticationMiddleware``)::

    "audit_middleware.frameworks.DjangoAuditMiddleware",

The user is taken before the view runs (a logout destroys it) and again after (a login creates it);
the later one wins when it is authenticated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping
from typing import Any

from .context import AUDITED_KEY, ROUTE_KEY, USER_KEY
from .identity import user_id_of

__all__ = ["DjangoAuditMiddleware", "install_flask"]

_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>:]+)>")


def _template(rule: Any) -> str | None:
    """A framework rule (``/users/<int:id>``, Django ``users/<int:id>/``) as ``/users/{id}``."""
    if not isinstance(rule, str) or "^" in rule or "(?" in rule:  # Django regex routes: no usable template
        return None
    return _CONVERTER.sub(r"{\1}", rule if rule.startswith("/") else "/" + rule)


def _remember_user(environ: MutableMapping[str, Any], user: Any) -> None:
    try:
        user_id = user_id_of(user)
    except Exception:  # a broken user object (or session backend) must not break the request
        return
    if user_id is not None:
        environ[USER_KEY] = user_id


def _flask_current_user() -> Any:
    try:
        from flask_login import current_user  # type: ignore[import-not-found]
    except ImportError:
        from flask import g

        return g.get("user")
    return current_user


def install_flask(app: Any, *, user: Callable[[], Any] | None = None) -> None:
    """Register Flask hooks that record the user and the matched URL rule for the WSGI middleware.

    Args:
        app: the ``flask.Flask`` app (its ``wsgi_app`` wrapped by ``AuditWSGIMiddleware``).
        user: returns the current user (object or id); default ``flask_login.current_user`` if
            Flask-Login is installed, else ``flask.g.user``.

    Call it after registering your own ``before_request`` hooks that load the user: Flask runs them
    in registration order, and the user is read once before the view (for logouts) and once after.
    """
    from flask import request

    read_user = user or _flask_current_user

    def get_user() -> Any:
        try:
            return read_user()
        except Exception:  # the user's callable (or its session store) must not break the request
            return None

    def before() -> None:
        environ = request.environ
        if environ.get(AUDITED_KEY):
            rule = request.url_rule
            template = _template(rule.rule if rule is not None else None)
            if template is not None:
                environ[ROUTE_KEY] = template
            _remember_user(environ, get_user())

    def after(response: Any) -> Any:
        if request.environ.get(AUDITED_KEY):
            _remember_user(request.environ, get_user())
        return response

    app.before_request(before)
    app.after_request(after)


def _django_carrier(request: Any) -> MutableMapping[str, Any] | None:
    """Where the middleware auditing this request reads: the WSGI environ (``META``) or the ASGI scope."""
    meta = request.META
    if meta.get(AUDITED_KEY):
        return meta  # type: ignore[no-any-return]
    scope = getattr(request, "scope", None)  # ASGIRequest: the very scope AuditMiddleware passed in
    if isinstance(scope, MutableMapping) and scope.get(AUDITED_KEY):
        return scope
    return None


class DjangoAuditMiddleware:
    """Django middleware: hands ``request.user`` and the resolved route to the audit middleware.

    Works under ``AuditWSGIMiddleware`` (it writes the environ) and under ``AuditMiddleware`` around
    ``get_asgi_application()`` (it writes the ASGI scope). Place it after
    ``django.contrib.auth.middleware.AuthenticationMiddleware``.

    Sync and async capable: in an async (ASGI) stack it runs on the event loop, so it adds no
    thread switch to any request, and it never evaluates ``request.user`` there (a blocking
    database query): an unevaluated user is read with ``await request.auser()`` (Django 5+), else
    in a thread.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction
        from django.utils.functional import LazyObject, empty

        self.get_response = get_response
        self._lazy, self._empty = LazyObject, empty  # imported once, not on every request
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        carrier = _django_carrier(request)
        if carrier is None:
            return self.get_response(request)
        _remember_user(carrier, getattr(request, "user", None))
        response = self.get_response(request)
        _remember_user(carrier, getattr(request, "user", None))
        _remember_route(carrier, request)
        return response

    async def _acall(self, request: Any) -> Any:
        carrier = _django_carrier(request)
        if carrier is None:
            return await self.get_response(request)
        _remember_user(carrier, await self._safe_user(request))
        response = await self.get_response(request)
        _remember_user(carrier, await self._safe_user(request))
        _remember_route(carrier, request)
        return response

    async def _safe_user(self, request: Any) -> Any:
        try:
            return await self._user(request)
        except Exception:  # loading the user (its session, the database) must not break the request
            return None

    async def _user(self, request: Any) -> Any:
        """``request.user`` without blocking the loop: as set (``login()``, ``logout()``) or evaluated, else loaded."""
        user = getattr(request, "user", None)
        if not isinstance(user, self._lazy):
            return user
        wrapped = user._wrapped  # the only way to know whether reading the user would run a query
        if wrapped is not self._empty:
            return wrapped
        auser = getattr(request, "auser", None)  # Django 5+: cached per request
        if auser is not None:
            return await auser()
        from asgiref.sync import sync_to_async

        return await sync_to_async(lambda: user.pk)()  # Django 4.2: evaluate it in a thread


def _remember_route(carrier: MutableMapping[str, Any], request: Any) -> None:
    match = getattr(request, "resolver_match", None)
    template = _template(getattr(match, "route", None)) if match is not None else None
    if template is not None:
        carrier[ROUTE_KEY] = template
