"""The zero-code auth preset: the usual sign-in, sign-out, sign-up and password endpoints, under any prefix.

Covers the conventions of FastAPI-Users, django-allauth (classic and headless ``/_allauth/``),
dj-rest-auth (+ SimpleJWT), Flask-Security-Too and OAuth2 token endpoints. Paths are matched after
normalisation, so ``/accounts/login/`` and ``/accounts/login`` are the same. ``docs/auth-preset.md`` has
the table; ``PRESET_TABLE`` below is its source (``tests/capture/test_preset.py`` pins every row).

A row whose last word is generic (``reset``, ``change``, ``refresh``, ``token``, ``register``, a GET
``logout``) names its action only when the request or the response backs it up (:class:`Corroborated`):
``POST /settings/change`` with ``{"theme": "dark"}`` is not a password change. Without that, the
request records nothing: a missed row is better than a false one.

A status >= 400 records ``<action>_failed`` (e.g. ``login_failed``). Login-type routes take the user
from the app's own successful response and record the attempted identifier; logout resolves the
user before the app runs. :data:`AUTH_ACTIONS` is the vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .config import RequestInfo, ResponseInfo
from .outcome import body_fields, clears_cookie, issues_token, request_cookie_names
from .routing import RouteSpec, normalize_path

__all__ = ["AUTH_ACTIONS", "AUTH_PRESET", "PRESET_TABLE", "Corroborated", "PresetRow"]

AUTH_ACTIONS: dict[str, str] = {
    "login": "signed in: the password (or code) was right and no second factor is pending",
    "login_failed": "a sign-in the app refused",
    "login_attempt": "a sign-in whose outcome the response does not tell (metadata.auth.outcome)",
    "login_mfa_pending": "the password was right; a second factor is pending (mfa_verify follows)",
    "mfa_verify": "the second factor was accepted: the sign-in is complete",
    "logout": "signed out (a session ended or a token was revoked)",
    "signup": "an account was created",
    "password_change": "a signed-in user changed their password",
    "password_reset_requested": "a reset link or code was asked for",
    "password_reset": "a password was set from a reset link or code",
    "email_verification_requested": "a verification e-mail was asked for",
    "email_verified": "an e-mail address was confirmed",
    "token_refresh": "a refresh token was exchanged for a new access token",
}
"""The preset's actions and what each means; each but the outcome variants also has ``<action>_failed``."""


class Corroborated:
    """A preset route value naming its action only when the request or the response backs it up.

    Called like any route callable, ``fn(request_info, response_info) -> action | None``; ``needs``
    says in words what counts (printed by ``audit-middleware routes``). ``peek`` asks the middleware
    to keep the response headers (and a JSON prefix) for the check.
    """

    __slots__ = ("_check", "action", "needs", "peek")

    def __init__(
        self,
        action: str,
        needs: str,
        check: Callable[[RequestInfo, ResponseInfo], str | bool | None],
        *,
        peek: bool = False,
    ) -> None:
        self.action = action
        self.needs = needs
        self.peek = peek
        self._check = check

    def __call__(self, request: RequestInfo, response: ResponseInfo) -> str | None:
        try:
            found = self._check(request, response)
        except Exception:  # a body or header we cannot read corroborates nothing
            return None
        if found is True:
            return self.action
        return found or None

    def __repr__(self) -> str:
        return f"Corroborated({self.action!r}, needs={self.needs!r})"


# Parents that make a generic last word an auth endpoint: /auth/register (FastAPI-Users), /o/token/
# (django-oauth-toolkit), /api/auth/refresh, /oauth2/token.
AUTH_PARENTS = frozenset(
    {"auth", "oauth", "oauth2", "o", "jwt", "_allauth", "dj-rest-auth", "rest-auth", "authentication", "sso"}
)
_IDENTIFIER_FIELDS = ("email", "username", "login", "identity", "identifier", "user_name", "phone")
_REFRESH_FIELDS = ("refresh", "refresh_token", "refreshToken")


def _segments(request: RequestInfo) -> list[str]:
    return normalize_path(request.path).lower().split("/")


def _parent(request: RequestInfo, word_from_end: int = 1) -> bool:
    """Whether the segment before the generic word (``word_from_end`` segments from the end) is an auth one."""
    segments = _segments(request)
    return len(segments) > word_from_end + 1 and segments[-word_from_end - 1] in AUTH_PARENTS


def _has_password(fields: dict[str, Any]) -> bool:
    return any("password" in name.lower() or name.lower() in ("passwd", "pwd") for name in fields)


def _grant(fields: dict[str, Any]) -> str | None:
    grant = fields.get("grant_type")
    return grant if isinstance(grant, str) else None


def _token(request: RequestInfo, response: ResponseInfo) -> str | None:
    fields = body_fields(request)
    grant = _grant(fields)
    if grant == "refresh_token":
        return "token_refresh"
    if grant is not None or _has_password(fields) or _parent(request):
        return "login"
    return None


def _refresh(request: RequestInfo, response: ResponseInfo) -> bool:
    fields = body_fields(request)
    return (
        _parent(request)
        or any(fields.get(name) for name in _REFRESH_FIELDS)
        or _grant(fields) == "refresh_token"
        or any("refresh" in name for name in request_cookie_names(request))
        or issues_token(response)
    )


def _register(request: RequestInfo, response: ResponseInfo) -> bool:
    return _parent(request) or _has_password(body_fields(request))


def _reset_request(request: RequestInfo, response: ResponseInfo) -> bool:
    fields = body_fields(request)
    return _parent(request) or any(fields.get(name) for name in _IDENTIFIER_FIELDS)


def _password(request: RequestInfo, response: ResponseInfo) -> bool:
    return _has_password(body_fields(request))


def _get_logout(request: RequestInfo, response: ResponseInfo) -> bool:
    status = response.status
    if status is None or status >= 400:
        return False  # refused (Flask-Security 5 answers GET /logout with 405): nobody was logged out
    return 300 <= status < 400 or clears_cookie(response)  # a confirmation page (allauth) is neither


_NEEDS_PASSWORD = "a password field in the body"
_TOKEN = Corroborated(
    "login", "grant_type (refresh_token: token_refresh) or a password field in the body, or an auth parent", _token
)
_REFRESH = Corroborated(
    "token_refresh",
    "a refresh token in the body or a cookie, an auth parent, or a response issuing a token",
    _refresh,
    peek=True,
)
_GET_LOGOUT = Corroborated(
    "logout",
    "a redirect or a deleted cookie in the response (a confirmation page is no logout)",
    _get_logout,
    peek=True,
)
_REGISTER = Corroborated("signup", f"{_NEEDS_PASSWORD}, or an auth parent (/auth/register)", _register)
_RESET_REQUEST = Corroborated(
    "password_reset_requested", "an e-mail or username field in the body, or an auth parent", _reset_request
)
_RESET = Corroborated("password_reset", _NEEDS_PASSWORD, _password)
_CHANGE = Corroborated("password_change", _NEEDS_PASSWORD, _password)


class PresetRow(NamedTuple):
    """One row of the preset: route key, action, spec options, the convention it serves, and its corroboration."""

    key: str
    action: str
    options: dict[str, Any]
    source: str
    corroborated: Corroborated | None = None


_LOGIN = {"user_from_response": True, "identifier": True}
_SIGNUP = {"user_from_response": True, "identifier": True}
_LOGOUT = {"user_before": True}
_IDENT = {"identifier": True}

# (route key, action, spec options, frameworks/examples) - most specific first: the first match wins.
PRESET_TABLE: tuple[PresetRow, ...] = tuple(
    PresetRow(*row)
    for row in (
        # django-allauth headless (/_allauth/{browser|app}/v1/...): their paths reuse generic words
        ("DELETE **/_allauth/*/v1/auth/session", "logout", _LOGOUT, "allauth headless"),
        ("POST **/_allauth/*/v1/auth/password/request", "password_reset_requested", _IDENT, "allauth headless"),
        ("POST **/_allauth/*/v1/auth/password/reset", "password_reset", {}, "allauth headless"),
        ("POST **/_allauth/*/v1/auth/2fa/authenticate", "mfa_verify", _LOGIN, "allauth headless"),
        ("POST **/_allauth/*/v1/auth/code/confirm", "login", _LOGIN, "allauth headless login by code"),
        # token refresh (before the generic /token)
        ("POST **/token/refresh", "token_refresh", {}, "dj-rest-auth, SimpleJWT"),
        ("POST **/jwt/refresh", "token_refresh", {}, "JWT refresh"),
        ("POST **/refresh", "token_refresh", {}, "generic", _REFRESH),
        ("POST **/refresh-token", "token_refresh", {}, "generic", _REFRESH),
        ("POST **/refresh_token", "token_refresh", {}, "generic", _REFRESH),
        # sign-in and token issue
        ("POST **/login", "login", _LOGIN, "FastAPI-Users /auth/jwt/login, allauth, dj-rest-auth, Flask-Security"),
        ("POST **/signin", "login", _LOGIN, "generic"),
        ("POST **/sign-in", "login", _LOGIN, "generic"),
        ("POST **/us-signin", "login", _LOGIN, "Flask-Security unified sign-in"),
        ("POST **/token", "login", _LOGIN, "OAuth2 token endpoint, SimpleJWT /api/token/", _TOKEN),
        ("POST **/jwt/create", "login", _LOGIN, "Djoser JWT"),
        # MFA / OTP
        ("POST **/tf-validate", "mfa_verify", _LOGIN, "Flask-Security two-factor"),
        ("POST **/2fa/authenticate", "mfa_verify", _LOGIN, "allauth MFA"),
        ("POST **/mfa/verify", "mfa_verify", _LOGIN, "generic"),
        ("POST **/2fa/verify", "mfa_verify", _LOGIN, "generic"),
        ("POST **/otp/verify", "mfa_verify", _LOGIN, "generic"),
        ("POST **/verify-otp", "mfa_verify", _LOGIN, "generic"),
        # sign-out
        ("POST **/logout", "logout", _LOGOUT, "FastAPI-Users, allauth, dj-rest-auth, Flask-Security"),
        ("POST **/signout", "logout", _LOGOUT, "generic"),
        ("POST **/sign-out", "logout", _LOGOUT, "generic"),
        ("GET **/logout", "logout", _LOGOUT, "Flask-Login tutorial, Flask-Security (if allowed)", _GET_LOGOUT),
        ("GET **/signout", "logout", _LOGOUT, "generic", _GET_LOGOUT),
        ("GET **/sign-out", "logout", _LOGOUT, "generic", _GET_LOGOUT),
        # registration
        ("POST **/register", "signup", _SIGNUP, "FastAPI-Users /auth/register, Flask-Security", _REGISTER),
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
        ("POST **/reset/{token}", "password_reset", {}, "Flask-Security /reset/<token>", _RESET),
        ("POST **/forgot-password", "password_reset_requested", _IDENT, "FastAPI-Users /auth/forgot-password"),
        ("POST **/password/reset", "password_reset_requested", _IDENT, "allauth, dj-rest-auth"),
        ("POST **/password-reset", "password_reset_requested", _IDENT, "generic"),
        ("POST **/reset", "password_reset_requested", _IDENT, "Flask-Security /reset", _RESET_REQUEST),
        # password change
        ("POST **/password/change", "password_change", {}, "allauth, dj-rest-auth, allauth headless"),
        ("POST **/change-password", "password_change", {}, "generic"),
        ("POST **/change_password", "password_change", {}, "generic"),
        ("POST **/change", "password_change", {}, "Flask-Security /change", _CHANGE),
    )
)


AUTH_PRESET: dict[str, RouteSpec] = {
    row.key: RouteSpec(action=row.corroborated or row.action, **row.options) for row in PRESET_TABLE
}
"""The preset as a routes mapping (pass ``preset=False`` to the middleware to disable it)."""
