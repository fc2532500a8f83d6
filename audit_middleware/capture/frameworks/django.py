"""Django glue: hands ``request.user`` and the resolved route to the audit middleware.

Under ``AuditWSGIMiddleware`` or ``AuditMiddleware``, in ``settings.MIDDLEWARE`` after
``AuthenticationMiddleware``::

    "audit_middleware.DjangoAuditMiddleware",

The user is taken before the view runs (a logout destroys it) and again after (a login creates it);
the later one wins when it is authenticated.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from ..context import AUDITED_KEY, ROUTE_KEY
from ._common import remember_user, template_of

__all__ = ["DjangoAuditMiddleware"]


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
        remember_user(carrier, getattr(request, "user", None))
        response = self.get_response(request)
        remember_user(carrier, getattr(request, "user", None))
        _remember_route(carrier, request)
        return response

    async def _acall(self, request: Any) -> Any:
        carrier = _django_carrier(request)
        if carrier is None:
            return await self.get_response(request)
        remember_user(carrier, await self._safe_user(request))
        response = await self.get_response(request)
        remember_user(carrier, await self._safe_user(request))
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
    template = template_of(getattr(match, "route", None)) if match is not None else None
    if template is not None:
        carrier[ROUTE_KEY] = template
