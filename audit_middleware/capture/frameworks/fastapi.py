"""FastAPI glue: name the user from a dependency, and turn fastapi-users' ``UserManager`` hooks into evidence.

The middleware sits outside FastAPI: it never sees what a dependency resolved, and it never decodes a
token itself (a token the app did not verify names nobody). Two helpers hand over what the app knows:

* :func:`audit_user` wraps the app's own "current user" dependency; when the app authenticated the
  request, that user is the actor of its audit event (a token logout, ``GET /users/me``)::

      current_user = fastapi_users.current_user(optional=True)
      app.include_router(
          fastapi_users.get_auth_router(jwt_backend),
          prefix="/auth/jwt",
          dependencies=[Depends(audit_user(current_user))],
      )

* :class:`AuditedUserManager` (a mixin for fastapi-users' ``UserManager``) reports every ``on_after_*``
  hook fastapi-users calls as auth evidence (:mod:`audit_middleware.capture.evidence`): the event and its
  user come from fastapi-users itself, not from the response. Hooks the app overrides are reported too,
  whether or not they call ``super()``::

      class UserManager(AuditedUserManager, UUIDIDMixin, BaseUserManager[User, uuid.UUID]): ...

Both do nothing on requests the middleware does not audit.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection, Request

from ...errors import ConfigurationError
from ..context import AUDITED_KEY
from ..evidence import EVIDENCE_KEY, report_auth
from ._common import remember_user

__all__ = ["HOOK_ACTIONS", "AuditedUserManager", "audit_user"]

HOOK_ACTIONS: dict[str, str] = {
    "on_after_register": "signup",
    "on_after_login": "login",
    "on_after_forgot_password": "password_reset_requested",
    "on_after_reset_password": "password_reset",
    "on_after_request_verify": "email_verification_requested",
    "on_after_verify": "email_verified",
    "on_after_update": "password_change",  # only when the update set a password (PATCH /users/me)
}
"""fastapi-users ``UserManager`` hook -> the action it proves (in the preset's vocabulary)."""
_WRAPPED = "__audit_middleware_hook__"
# Hooks of requests anyone can make for any e-mail: their user is the subject, not who performed the action
# (the user_id column); the e-mail is the row's identifier, an authenticated requester is still named.
_SUBJECT_ONLY = frozenset({"on_after_forgot_password", "on_after_request_verify"})


def audit_user(
    dependency: Callable[..., Any], *, user_id: Callable[[Any], Any] | None = None
) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that names the user ``dependency`` resolves as the actor of the audit event.

    Args:
        dependency: the app's own current-user dependency, e.g. ``fastapi_users.current_user(optional=True)``
            or the OAuth2 tutorial's ``get_current_active_user``. It verifies the credential; a dependency
            that raises (401) still answers the request as before. Use an optional one on routers whose
            routes also serve anonymous requests (the login route).
        user_id: reads the id from what ``dependency`` returns, when that has no ``id`` (or ``pk``,
            ``user_id``, ``identity``): ``lambda user: user.username`` for the OAuth2 tutorial's ``User``.
            An id that is neither a UUID nor an integer is stored as ``metadata.user_ref``.

    Raises:
        ConfigurationError: ``dependency`` is a security scheme (``OAuth2PasswordBearer``, ``APIKeyHeader``...):
            it returns the credential, not the user.

    Returns:
        A dependency for ``Depends(...)`` (in ``dependencies=[...]`` of a route, router or the app). It
        costs nothing beyond ``dependency`` itself (which FastAPI caches per request) and touches only
        requests the middleware audits, which it does not make audited.

    Example:
        >>> app = FastAPI(dependencies=[Depends(audit_user(current_user_optional))])  # doctest: +SKIP
    """

    if isinstance(dependency, SecurityBase):
        # OAuth2PasswordBearer, APIKey*: they return the credential itself, and an opaque token named as the user
        # would be stored as metadata.user_ref (the redactor knows JWTs, not random tokens)
        raise ConfigurationError(
            f"audit_user() takes the dependency that returns the user (the tutorial's get_current_user), "
            f"not the security scheme {type(dependency).__name__}, which returns the credential"
        )

    # A default, not Annotated[...]: under postponed annotations FastAPI resolves an annotation in the module's
    # globals, where this closure's ``dependency`` does not exist.
    async def name_the_audited_user(connection: HTTPConnection, user: Any = Depends(dependency)) -> None:  # noqa: B008
        scope = connection.scope
        if user is None or not scope.get(AUDITED_KEY):
            return
        try:
            named = user if user_id is None else user_id(user)
        except Exception:  # the app's own callable must not break its request
            return
        remember_user(scope, named)

    return name_the_audited_user


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Request):
            return value
    return None  # fastapi-users called the hook without a request: report_auth uses the running request


def _already_reported(request: Request | None, action: str) -> bool:
    """A hook that calls ``super()`` into another reporting hook must not report the same event twice."""
    if request is None:
        return False
    found = request.scope.get(EVIDENCE_KEY)
    return isinstance(found, list) and bool(found) and getattr(found[-1], "action", None) == action


def _reporting(hook: Callable[..., Awaitable[Any]], name: str, action: str) -> Callable[..., Awaitable[Any]]:
    source = f"fastapi_users.{name}"

    @functools.wraps(hook)
    async def reported(self: Any, user: Any, *args: Any, **kwargs: Any) -> Any:
        request = _request_of(args, kwargs)
        # Reported before the app's own hook runs: the event has happened (fastapi-users calls the hook
        # afterwards), even if sending the e-mail then fails.
        if name == "on_after_update":
            changes = args[0] if args else kwargs.get("update_dict")
            # a password set to null is in update_dict too, yet fastapi-users leaves the password alone
            wanted = isinstance(changes, dict) and changes.get("password") is not None
        else:
            wanted = True
        named = user
        if name == "on_after_update" and request is not None and "id" in request.path_params:
            # PATCH /users/{id}: a superuser acting on another account. The row names who performed the action
            # (the authenticated actor, from audit_user), never the account acted upon.
            named = None
        if wanted and not _already_reported(request, action):
            report_auth(request, action, succeeded=True, user=None if name in _SUBJECT_ONLY else named, source=source)
        return await hook(self, user, *args, **kwargs)

    setattr(reported, _WRAPPED, True)
    return reported


class AuditedUserManager:
    """Mixin for a fastapi-users ``UserManager``: every hook in :data:`HOOK_ACTIONS` reports its event.

    Put it first among the bases. Registration, login, a reset request and a reset, a verification
    request and a verification, and a password set through ``PATCH /users/me`` are then recorded with
    the user fastapi-users names, and as ``source`` ``fastapi_users.<hook>`` in ``metadata.auth``.
    fastapi-users has no logout hook: name the logout's user with :func:`audit_user`.

    Example:
        >>> class UserManager(AuditedUserManager, UUIDIDMixin, BaseUserManager[User, uuid.UUID]):  # doctest: +SKIP
        ...     reset_password_token_secret = SECRET
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, action in HOOK_ACTIONS.items():
            hook = getattr(cls, name, None)
            if hook is not None and not getattr(hook, _WRAPPED, False):
                setattr(cls, name, _reporting(hook, name, action))
