"""Auth evidence: what the framework itself announced about a sign-in, sign-out or password event.

A status code says little about an auth form: allauth and Flask-Security answer a wrong password with
200 and the form again, the Flask-Login tutorial answers both outcomes with a redirect, and a GET on
allauth's logout URL only shows a confirmation page. The frameworks do announce what happened: Django's
``user_logged_in`` / ``user_login_failed`` / ``user_logged_out`` signals, allauth's, Flask-Login's and
Flask-Security's signals, fastapi-users' ``UserManager`` hooks. Framework glue turns those into
:class:`AuthEvidence` on the request's carrier (the ASGI scope or WSGI environ), and the core prefers it
over anything the response suggests:

* evidence present: it decides the action (``<action>_failed`` when it did not succeed), the user and
  the attempted identifier, on any route (a custom view that calls ``login()`` records a login);
* no evidence, but the glue :func:`watch`-es the matched route's action and the request reached a view:
  the action did not happen. A login-type POST records ``<action>_failed``; anything else (a logout
  confirmation page) records no row;
* otherwise the response decides, as without glue.

Both functions never raise and cost nothing outside an audited request's carrier.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from .context import current_carrier

__all__ = [
    "EVIDENCE_KEY",
    "LOGIN_TYPE",
    "WATCHING_KEY",
    "AuthEvidence",
    "evidence_of",
    "report_auth",
    "watch",
    "watching_of",
]

EVIDENCE_KEY = "audit_middleware.evidence"
"""Carrier key: the list of :class:`AuthEvidence` reported during this request, in order."""
WATCHING_KEY = "audit_middleware.watching"
"""Carrier key: the set of actions whose framework signals the glue has connected for this request."""
LOGIN_TYPE = frozenset({"login", "mfa_verify", "signup"})
"""Actions whose watched absence is a failed attempt (a form POST that signed nobody in)."""


@dataclass(frozen=True, slots=True)
class AuthEvidence:
    """One auth event the framework announced.

    Attributes:
        action: the preset's vocabulary: ``login``, ``logout``, ``signup``, ``password_change``,
            ``password_reset``, ``password_reset_requested``, ``mfa_verify``, ``login_mfa_pending``,
            ``email_verified``, ``token_refresh``.
        succeeded: False records ``<action>_failed``.
        user: the framework's user object or id (read like any user: ``id``/``pk``), kept only on success.
        identifier: the attempted login name; redacted like the body's identifier.
        source: who said so (``"django.user_login_failed"``), stored as ``metadata.auth.source``.
    """

    action: str
    succeeded: bool
    user: Any = None
    identifier: str | None = None
    source: str = ""


def _carrier(where: Any) -> MutableMapping[str, Any] | None:
    if where is None:
        return current_carrier.get()
    if isinstance(where, MutableMapping):
        return where
    for attr in ("scope", "environ", "META"):  # Starlette/Django-ASGI, Werkzeug, Django-WSGI requests
        value = getattr(where, attr, None)
        if isinstance(value, MutableMapping):
            return value
    return None


def report_auth(
    where: Any,
    action: str,
    *,
    succeeded: bool,
    user: Any = None,
    identifier: str | None = None,
    source: str = "",
) -> None:
    """Record that ``action`` happened (or failed) during the running request. Never raises.

    Args:
        where: an ASGI scope, a WSGI environ, a request object (``.scope``, ``.environ``, ``.META``), or
            None for the request the middleware is running (a ContextVar).
        action: what happened, in the preset's vocabulary (see :class:`AuthEvidence`).
        succeeded: whether it succeeded.
        user: the user it concerns (object or id); kept only when it succeeded.
        identifier: the attempted login name, for failures.
        source: who announced it, e.g. ``"django.user_logged_in"``.
    """
    try:
        carrier = _carrier(where)
        if carrier is None:
            return
        evidence = AuthEvidence(action, succeeded, user if succeeded else None, identifier, source)
        found = carrier.get(EVIDENCE_KEY)
        if isinstance(found, list):
            found.append(evidence)
        else:
            carrier[EVIDENCE_KEY] = [evidence]
    except Exception:  # a read-only or odd carrier: the request must not notice
        return


def watch(where: Any, actions: Iterable[str]) -> None:
    """Declare that the glue's signals for ``actions`` are connected for the running request, so that
    their absence means the action did not happen. Never raises."""
    try:
        carrier = _carrier(where)
        if carrier is None:
            return
        found = carrier.get(WATCHING_KEY)
        if isinstance(found, set):
            found.update(actions)
        else:
            carrier[WATCHING_KEY] = set(actions)
    except Exception:
        return


def evidence_of(carrier: MutableMapping[str, Any]) -> tuple[AuthEvidence, ...]:
    """The evidence reported on ``carrier`` (for the middlewares, after the app returned)."""
    found = carrier.get(EVIDENCE_KEY)
    if type(found) is not list:  # nothing reported (the common case), or not ours
        return ()
    return tuple(e for e in found if type(e) is AuthEvidence)


def watching_of(carrier: MutableMapping[str, Any]) -> frozenset[str]:
    """The actions the glue watched on ``carrier``."""
    found = carrier.get(WATCHING_KEY)
    return frozenset(a for a in found if type(a) is str) if type(found) is set else frozenset()
