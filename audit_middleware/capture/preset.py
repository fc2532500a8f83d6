"""The zero-code auth preset: the usual sign-in, sign-out, sign-up and password endpoints, under any prefix.

Covers the conventions of FastAPI-Users, django-allauth (classic and headless ``/_allauth/``),
dj-rest-auth (+ SimpleJWT), Flask-Security-Too and OAuth2 token endpoints. Paths are matched after
normalisation, so ``/accounts/login/`` and ``/accounts/login`` are the same. The README has the table;
``PRESET_TABLE`` below is its source (``tests/test_routing.py`` checks every row).

A status >= 400 records ``<action>_failed`` (e.g. ``login_failed``). Login-type routes take the user
from the app's own successful response and record the attempted identifier; logout resolves the
user before the app runs.
"""

from __future__ import annotations

import re
from typing import Any

from .routing import RouteSpec

__all__ = ["AUTH_PRESET", "PRESET_TABLE"]

_LOGIN = {"user_from_response": True, "identifier": True}
_SIGNUP = {"user_from_response": True, "identifier": True}
_LOGOUT = {"user_before": True}
_IDENT = {"identifier": True}

# (route key, action, spec options, frameworks/examples) - most specific first: the first match wins.
PRESET_TABLE: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    # django-allauth headless (/_allauth/{browser|app}/v1/...): their paths reuse generic words
    ("DELETE **/_allauth/*/v1/auth/session", "logout", _LOGOUT, "allauth headless"),
    ("POST **/_allauth/*/v1/auth/password/request", "password_reset_requested", _IDENT, "allauth headless"),
    ("POST **/_allauth/*/v1/auth/password/reset", "password_reset", {}, "allauth headless"),
    ("POST **/_allauth/*/v1/auth/2fa/authenticate", "mfa_verify", _LOGIN, "allauth headless"),
    ("POST **/_allauth/*/v1/auth/code/confirm", "login", _LOGIN, "allauth headless login by code"),
    # token refresh (before the generic /token)
    ("POST **/token/refresh", "token_refresh", {}, "dj-rest-auth, SimpleJWT"),
    ("POST **/jwt/refresh", "token_refresh", {}, "JWT refresh"),
    ("POST **/refresh", "token_refresh", {}, "generic"),
    ("POST **/refresh-token", "token_refresh", {}, "generic"),
    ("POST **/refresh_token", "token_refresh", {}, "generic"),
    # sign-in and token issue
    ("POST **/login", "login", _LOGIN, "FastAPI-Users /auth/jwt/login, allauth, dj-rest-auth, Flask-Security"),
    ("POST **/signin", "login", _LOGIN, "generic"),
    ("POST **/sign-in", "login", _LOGIN, "generic"),
    ("POST **/us-signin", "login", _LOGIN, "Flask-Security unified sign-in"),
    ("POST **/token", "login", _LOGIN, "OAuth2 token endpoint (`token_refresh` for grant_type=refresh_token)"),
    ("POST **/jwt/create", "login", _LOGIN, "Djoser JWT"),
    # MFA / OTP
    ("POST **/tf-validate", "mfa_verify", _LOGIN, "Flask-Security two-factor"),
    ("POST **/2fa/authenticate", "mfa_verify", _LOGIN, "allauth MFA"),
    ("POST **/mfa/verify", "mfa_verify", _LOGIN, "generic"),
    ("POST **/2fa/verify", "mfa_verify", _LOGIN, "generic"),
    ("POST **/otp/verify", "mfa_verify", _LOGIN, "generic"),
    ("POST **/verify-otp", "mfa_verify", _LOGIN, "generic"),
    # sign-out
    ("POST|GET **/logout", "logout", _LOGOUT, "FastAPI-Users, allauth, dj-rest-auth, Flask-Security (GET too)"),
    ("POST|GET **/signout", "logout", _LOGOUT, "generic"),
    ("POST|GET **/sign-out", "logout", _LOGOUT, "generic"),
    # registration
    ("POST **/register", "signup", _SIGNUP, "FastAPI-Users /auth/register, Flask-Security"),
    ("POST **/signup", "signup", _SIGNUP, "allauth /accounts/signup/, headless"),
    ("POST **/sign-up", "signup", _SIGNUP, "generic"),
    ("POST **/registration", "signup", _SIGNUP, "dj-rest-auth /registration/"),
    # e-mail verification
    ("POST **/request-verify-token", "email_verification_requested", _IDENT, "FastAPI-Users"),
    ("POST **/auth/verify", "email_verified", {}, "FastAPI-Users"),
    ("POST **/registration/verify-email", "email_verified", {}, "dj-rest-auth"),
    # password reset: completion (more specific first), then the request
    ("POST **/password/reset/confirm", "password_reset", {}, "dj-rest-auth"),
    ("POST **/password/reset/confirm/**", "password_reset", {}, "Django-style confirm/<uid>/<token>"),
    ("POST **/password/reset/key/**", "password_reset", {}, "allauth /accounts/password/reset/key/<key>/"),
    ("POST **/reset-password", "password_reset", {}, "FastAPI-Users /auth/reset-password"),
    ("POST **/reset-password/{token}", "password_reset", {}, "generic"),
    ("POST **/reset/{token}", "password_reset", {}, "Flask-Security /reset/<token>"),
    ("POST **/forgot-password", "password_reset_requested", _IDENT, "FastAPI-Users /auth/forgot-password"),
    ("POST **/password/reset", "password_reset_requested", _IDENT, "allauth, dj-rest-auth"),
    ("POST **/password-reset", "password_reset_requested", _IDENT, "generic"),
    ("POST **/reset", "password_reset_requested", _IDENT, "Flask-Security /reset"),
    # password change
    ("POST **/password/change", "password_change", {}, "allauth, dj-rest-auth, allauth headless"),
    ("POST **/change-password", "password_change", {}, "generic"),
    ("POST **/change_password", "password_change", {}, "generic"),
    ("POST **/change", "password_change", {}, "Flask-Security /change"),
)

_GRANT = re.compile(rb'grant_type"?\s*[=:]\s*"?refresh_token')


def oauth_token_action(request: Any, response: Any) -> str:
    """``login`` for an OAuth2 token request, ``token_refresh`` when its grant_type is refresh_token."""
    return "token_refresh" if _GRANT.search(request.body) else "login"


_CALLABLE_ACTIONS: dict[str, Any] = {"POST **/token": oauth_token_action}

AUTH_PRESET: dict[str, RouteSpec] = {
    key: RouteSpec(action=_CALLABLE_ACTIONS.get(key, action), **options)
    for key, action, options, _where in PRESET_TABLE
}
"""The preset as a routes mapping (pass ``preset=False`` to the middleware to disable it)."""
