"""What a request and its response say about an auth action, when no framework evidence is known.

Two questions are answered here from plain values (:class:`~.config.RequestInfo`,
:class:`~.config.ResponseInfo`), never from the client's say-so alone:

* **corroboration** (:func:`body_fields`, :func:`request_cookie_names`, :func:`issues_token`,
  :func:`clears_cookie`): does a generic route (``POST /reset``, ``POST /token``) look like the
  auth endpoint the preset guesses it is? The body's shape, a cookie, or what the app answered.
* **outcome** (:func:`response_outcome`): did a login-type request succeed? The status alone does
  not tell: form stacks answer a wrong password with ``200`` and the re-rendered form, tutorial apps
  with a redirect back to the form. The rules are listed in ``docs/auth-preset.md``.

Everything here runs after the app returned, on audited requests only, and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from .config import RequestInfo, ResponseInfo
from .routing import normalize_path

__all__ = [
    "FAILED",
    "MFA_PENDING",
    "SUCCEEDED",
    "UNKNOWN",
    "body_fields",
    "clears_cookie",
    "header",
    "issues_token",
    "mfa_hint",
    "request_cookie_names",
    "response_outcome",
]

SUCCEEDED = "succeeded"
FAILED = "failed"
UNKNOWN = "unknown"
MFA_PENDING = "mfa_pending"

# Login-type actions: success needs a sign from the app (a user, a token, a session cookie).
TOKEN_ACTIONS = frozenset({"login", "mfa_verify"})
# Actions whose failure the form stacks (allauth, Flask-Security, Django admin, tutorials) answer with the
# form again. Not password_reset_requested: Flask-Security re-renders its form after a successful request too.
FORM_ACTIONS = frozenset({"login", "mfa_verify", "signup", "password_change", "password_reset"})
_TOKEN_KEYS = ("access_token", "access", "token", "id_token", "key", "jwt", "auth_token", "refresh")
_USER_KEYS = ("user_id", "userId", "id", "sub", "pk", "user")
_MFA_KEYS = ("tf_required", "mfa_required", "two_factor_required", "otp_required", "requires_mfa", "mfa_pending")
_MFA_PATH = re.compile(r"(?:^|[/_-])(?:2fa|mfa|tf|otp|two[-_]?factor|totp)(?:[/_-]|$)", re.IGNORECASE)
_MULTIPART_NAME = re.compile(rb'name="([^"\r\n]{1,100})"')
_EXPIRED = re.compile(r"(?:^|;)\s*(?:max-age\s*=\s*0|expires\s*=\s*[^;]*19[67][0-9])", re.IGNORECASE)
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_MAX_FIELDS = 200


def header(headers: Sequence[tuple[Any, Any]], name: str) -> str | None:
    """The first value of header ``name`` (lower-case) among ASGI bytes or WSGI str pairs."""
    raw = name.encode()
    for key, value in headers:
        if type(key) is bytes:
            if key == raw or key.lower() == raw:  # (ASGI names are lower-case already: one compare)
                return value.decode("latin-1")  # type: ignore[no-any-return]
        elif key.lower() == name:
            return str(value)
    return None


def _all(headers: Sequence[tuple[Any, Any]], name: str) -> list[str]:
    found: list[str] = []
    for key, value in headers:
        text = key.decode("latin-1") if type(key) is bytes else str(key)
        if text.lower() == name:
            found.append(value.decode("latin-1") if type(value) is bytes else str(value))
    return found


def _media_type(value: str | None) -> str:
    return (value or "").partition(";")[0].strip().lower()


def body_fields(request: RequestInfo) -> dict[str, Any]:
    """The top-level fields of the captured request body (JSON object, form or multipart names); {} if none."""
    body = request.body
    if not body:
        return {}
    ctype = _media_type(header(request.headers, "content-type"))
    try:
        if ctype == "application/json" or ctype.endswith("+json"):
            data = orjson.loads(body)
            return data if isinstance(data, dict) else {}
        if ctype == "application/x-www-form-urlencoded":
            return dict(parse_qsl(body.decode("utf-8", "replace"), max_num_fields=_MAX_FIELDS))
        if ctype == "multipart/form-data":  # names only: the values (files) are never parsed here
            return {m.decode("utf-8", "replace"): "" for m in _MULTIPART_NAME.findall(body)[:_MAX_FIELDS]}
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return {}


def is_form_post(request: RequestInfo) -> bool:
    """Whether the request was an HTML form submission (urlencoded or multipart body)."""
    return _media_type(header(request.headers, "content-type")) in _FORM_TYPES


def request_cookie_names(request: RequestInfo) -> list[str]:
    """The names of the cookies the client sent (lower-case); never their values."""
    names: list[str] = []
    for line in _all(request.headers, "cookie"):
        for pair in line.split(";"):
            name = pair.partition("=")[0].strip().lower()
            if name:
                names.append(name)
    return names


def _json(response: ResponseInfo) -> Any:
    if not response.body or "json" not in (header(response.headers, "content-type") or ""):
        return None
    try:
        return orjson.loads(response.body)
    except ValueError:  # a prefix of a longer body, or not JSON after all
        return None


def _objects(data: Any) -> list[dict[str, Any]]:
    """The JSON object and the envelopes APIs wrap their answer in (``data``, ``response``, ``meta``)."""
    if not isinstance(data, dict):
        return []
    found = [data]
    for key in ("data", "response", "meta", "result"):
        inner = data.get(key)
        if isinstance(inner, dict):
            found.append(inner)
    return found


def issues_token(response: ResponseInfo) -> bool:
    """Whether a successful response hands out a credential: a token in its JSON, or an auth-looking cookie."""
    if response.status is None or not 200 <= response.status < 300:
        return False
    for obj in _objects(_json(response)):
        if any(isinstance(obj.get(k), str) and obj.get(k) for k in _TOKEN_KEYS):
            return True
    for line in _all(response.headers, "set-cookie"):
        name = line.partition("=")[0].strip().lower()
        if any(word in name for word in ("access", "refresh", "token", "jwt", "auth")):
            return True
    return False


def clears_cookie(response: ResponseInfo) -> bool:
    """Whether the response deletes a cookie (``Max-Age=0`` or an expiry in the past), as a logout does."""
    return any(_EXPIRED.search(line) for line in _all(response.headers, "set-cookie"))


def _mfa_pending(data: Any) -> bool:
    for obj in _objects(data):
        if any(obj.get(k) is True for k in _MFA_KEYS):
            return True
        flows = obj.get("flows")  # allauth headless: {"flows": [{"id": "mfa_authenticate", "is_pending": true}]}
        if isinstance(flows, list):
            for flow in flows:
                if isinstance(flow, dict) and flow.get("is_pending") is True and "mfa" in str(flow.get("id", "")):
                    return True
    return False


def mfa_hint(body: bytes) -> bool:
    """Whether a response body may announce a pending second factor (a bytes scan before any JSON parse)."""
    # One scan per key shape (each costs ~0.2 us on a login answer, and this runs on every successful JSON
    # login): b"_required" covers tf/mfa/two_factor/otp_required, b"_pending" covers is_pending and mfa_pending,
    # b"requires_" covers requires_mfa. A hint that fires more often only costs the exact check that follows.
    return bool(body) and (b"_required" in body or b"_pending" in body or b"requires_" in body)


def _location_path(response: ResponseInfo) -> str | None:
    location = header(response.headers, "location")
    if location is None:
        return None
    try:
        return normalize_path(urlsplit(location.strip()).path or "/")
    except ValueError:
        return None


def _names_user(data: Any) -> bool:
    """Whether a JSON answer names a user or carries a token (``{"user_id": ...}``, ``{"access_token": ...}``)."""
    for obj in _objects(data):
        for key in _USER_KEYS:
            if obj.get(key) not in (None, "", False):
                return True
        for key in _TOKEN_KEYS:
            value = obj.get(key)
            if isinstance(value, str) and value:
                return True
    return False


def response_outcome(
    action: str, request: RequestInfo, response: ResponseInfo, failure_status: int = 400, signed_in: bool = False
) -> tuple[str, str]:
    """(verdict, reason): what the response says about a form-type action (:data:`FORM_ACTIONS`).

    ``signed_in``: a user is known after the app ran and was not before (glue, resolver), or the
    response names one (the caller looked already: this saves a second JSON parse).

    The verdict is :data:`SUCCEEDED`, :data:`FAILED`, :data:`MFA_PENDING` or :data:`UNKNOWN` (the
    response cannot tell); the reason names the rule (``docs/auth-preset.md`` lists them). Needs the
    response headers (and, for JSON, a prefix of the body) that the middleware keeps on these routes.
    """
    status = response.status
    if status is None:
        return UNKNOWN, "no_response"
    if action == "login" and mfa_hint(response.body) and _mfa_pending(_json(response)):
        return MFA_PENDING, "second_factor_required"  # (allauth headless answers it with 401: before the status)
    if status >= failure_status:
        return FAILED, "status"
    if 300 <= status < 400:
        target = _location_path(response)
        if target is None:
            return UNKNOWN, "redirect_without_location"
        path = normalize_path(request.path)
        if target == path:
            return FAILED, "redirect_back"  # back to the form (Flask-Login tutorial: flash, redirect to /login)
        if action == "password_reset" and target != "/" and target == path.rpartition("/")[0]:
            return FAILED, "redirect_back"  # Flask-Security sends a bad /reset/<token> back to /reset
        if action == "login" and _MFA_PATH.search(target):
            return MFA_PENDING, "redirect_to_second_factor"
        return SUCCEEDED, "redirect"
    if signed_in:  # a user named after the view is a success, whatever page came with it
        return SUCCEEDED, "signed_in"
    ctype = _media_type(header(response.headers, "content-type"))
    if ctype == "text/html" and is_form_post(request):
        return FAILED, "form_rerendered"  # a form POST answered with a page, not a redirect: the form again
    if action not in TOKEN_ACTIONS:
        return SUCCEEDED, "status"
    if _names_user(_json(response)) or _all(response.headers, "set-cookie") or issues_token(response):
        return SUCCEEDED, "credential"
    return UNKNOWN, "no_credential"
