"""Django glue: hands ``request.user``, the resolved route and Django's own auth signals to the audit core.

In ``settings.MIDDLEWARE``, after ``AuthenticationMiddleware``::

    "audit_middleware.DjangoAuditMiddleware",

Two ways to run it:

* **Settings only** (how django-auditlog is installed): ``AUDIT_MIDDLEWARE = {"dsn": ...}`` in the settings
  (any :class:`~audit_middleware.capture.config.MiddlewareConfig` option). The middleware then audits the
  requests itself, with a writer thread of its own.
* **Under** ``AuditWSGIMiddleware`` / ``AuditMiddleware`` wrapping the WSGI/ASGI application: the outer
  middleware audits, this one only hands it what Django knows. An outer middleware always wins, so both
  at once never record a request twice.

With neither, nothing can be recorded: the first request logs an error saying so, with the fix.

What Django knows, and the response alone cannot tell: ``user_logged_in``, ``user_login_failed`` and
``user_logged_out`` (sent by ``django.contrib.auth``, the admin, allauth and dj-rest-auth), allauth's
sign-up, password and e-mail signals and allauth.mfa's, reported as
:class:`~audit_middleware.capture.evidence.AuthEvidence`; and, for the known auth views (``_VIEWS``),
what their silence means: a POST to allauth's login form that announced nothing re-rendered the form
(``login_failed``, though the status is 200), a GET on a logout URL that announced nothing only showed a
confirmation page (no row).

The user is taken before the view runs (a logout destroys it) and again after (a login creates it);
the later one wins when it is authenticated.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, TypeGuard

from ..context import AUDITED_KEY, CONTEXT_KEY, INSTALLED_KEY, ROUTE_KEY, USER_KEY, AuditContext, current_carrier
from ..evidence import EVIDENCE_KEY, evidence_of, report_auth, watch, watching_of
from ._common import remember_user, template_of

__all__ = ["DjangoAuditMiddleware", "django_route_template"]

logger = logging.getLogger("audit_middleware.django")

SETTING = "AUDIT_MIDDLEWARE"
MSG_NOT_AUDITED = (
    "DjangoAuditMiddleware is in MIDDLEWARE, but nothing audits this application: no audit row is written. "
    "Fix: add %s = {'dsn': 'postgresql://...'} to the settings, or wrap the application in "
    "AuditWSGIMiddleware / AuditMiddleware"
)
MSG_OWNED = "DjangoAuditMiddleware audits this application itself (settings.%s), %s routes mapped"
MSG_GLUE_FAILED = "the Django audit glue failed (%s); the request is unaffected"
_PENDING_KEY = "audit_middleware.django.pending"  # the user whose password step passed in this request
_OWNED_KEY = "audit_middleware.django.owned"  # the request a settings-only install audits (_Owned)

# The known auth views, by (top-level package of the view, URL name): the action each performs and what
# the absence of its signal means.
_FORM = "form"  # success is announced by a signal; a POST that announced nothing failed (form re-rendered)
_REDIRECT = "redirect"  # nothing announced on success; the form redirects, a re-rendered form (200) failed
_SIGNAL = "signal"  # only the signal counts: no signal, no event (a GET showing a confirmation page)
_TOKEN = "token"  # dj-rest-auth logout: success (2xx) names the user DRF authenticated for the request
_VIEWS: dict[tuple[str, str], tuple[str, str]] = {
    ("allauth", "account_login"): ("login", _FORM),
    ("allauth", "account_confirm_login_code"): ("login", _FORM),
    ("allauth", "account_signup"): ("signup", _FORM),
    ("allauth", "account_logout"): ("logout", _SIGNAL),
    ("allauth", "account_change_password"): ("password_change", _FORM),
    ("allauth", "account_set_password"): ("password_change", _FORM),
    ("allauth", "account_reset_password"): ("password_reset_requested", _REDIRECT),
    ("allauth", "account_reset_password_from_key"): ("password_reset", _FORM),
    ("allauth", "mfa_authenticate"): ("mfa_verify", _FORM),
    ("dj_rest_auth", "rest_logout"): ("logout", _TOKEN),
    # django.contrib.auth.urls and the admin (django.contrib.admin.sites)
    ("django", "login"): ("login", _FORM),
    ("django", "logout"): ("logout", _SIGNAL),
    ("django", "password_change"): ("password_change", _REDIRECT),
    ("django", "password_reset"): ("password_reset_requested", _REDIRECT),
    ("django", "password_reset_confirm"): ("password_reset", _REDIRECT),
}
_DJANGO_AUTH_VIEWS = ("django.contrib.auth.", "django.contrib.admin.")
_LOGIN_FAMILY = frozenset({"login", "login_mfa_pending", "login_pending"})
_NO_FORM_WHEN_SIGNED_IN = frozenset({"login", "signup"})  # forms that only redirect a signed-in user


# -- where the running request's audit data goes -----------------------------------------------------


def _django_carrier(request: Any) -> MutableMapping[str, Any] | None:
    """Where the middleware auditing this request reads: the WSGI environ (``META``) or the ASGI scope.

    None when no middleware runs for this request (a management command calling ``login()``).
    """
    meta = getattr(request, "META", None)  # (a DRF Request hands out its HttpRequest's)
    if _mapping(meta) and (INSTALLED_KEY in meta or AUDITED_KEY in meta):
        return meta
    scope = getattr(request, "scope", None)  # ASGIRequest: the very scope AuditMiddleware passed in
    if _mapping(scope) and (INSTALLED_KEY in scope or AUDITED_KEY in scope):
        return scope
    return None


def _mapping(value: Any) -> TypeGuard[MutableMapping[str, Any]]:
    return type(value) is dict or isinstance(value, MutableMapping)  # (the ABC check only for the rare non-dict)


def _report(
    where: Any, action: str, succeeded: bool, user: Any = None, identifier: Any = None, source: str = ""
) -> None:
    """Report evidence on the carrier ``where`` names: the carrier itself, a request, or None (the ContextVar)."""
    if isinstance(where, MutableMapping):
        carrier: MutableMapping[str, Any] | None = where
    else:
        carrier = _django_carrier(where) if where is not None else current_carrier.get()
    if carrier is not None:
        ident = identifier if isinstance(identifier, str) and identifier else None
        report_auth(carrier, action, succeeded=succeeded, user=user, identifier=ident, source=source)


# -- the signals -----------------------------------------------------------------------------------


def _authenticated(request: Any) -> bool:
    """Whether the request already had a signed-in user (read from the HttpRequest, never through DRF:
    that would authenticate the request again)."""
    user = getattr(getattr(request, "_request", request), "user", None)
    try:
        return bool(getattr(user, "is_authenticated", False))
    except Exception:  # a lazy user that cannot load here (async context, a broken session)
        return False


def _on_logged_in(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    _report(request, "login", True, user, source="django.user_logged_in")


def _on_login_failed(sender: Any, credentials: Any = None, request: Any = None, **kwargs: Any) -> None:
    # allauth's password change and reauthentication check the password with authenticate(): a wrong old
    # password is a failed password change (the view's outcome), not a failed sign-in
    if request is not None and _authenticated(request) and _view_of(request) != "login":
        return
    name = None
    if isinstance(credentials, Mapping):
        name = credentials.get("username") or credentials.get("email") or credentials.get("login")
    _report(request, "login", False, identifier=name, source="django.user_login_failed")


def _on_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    if user is not None:
        _report(request, "logout", True, user, source="django.user_logged_out")
        return
    # logout() of an anonymous session: Django says nobody was signed out, so no logout row on any view
    carrier = _django_carrier(request) if request is not None else current_carrier.get()
    if carrier is not None:
        watch(carrier, ("logout",))


def _on_signal(action: str, succeeded: bool, source: str) -> Callable[..., None]:
    def receiver(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
        _report(request, action, succeeded, user, source=source)

    return receiver


def _on_step(sender: Any, request: Any = None, user: Any = None, method: str = "", **kwargs: Any) -> None:
    if method not in ("password", "code") or kwargs.get("reauthenticated"):
        return  # a second factor, or a signed-in user confirming their password (reauthentication)
    carrier = _django_carrier(request) if request is not None else None
    if carrier is not None:
        # a login follows, or a stage (2FA, e-mail verification) is pending; which one is asked here, in the
        # view's thread: after the view, under ASGI, the glue runs on the event loop and must not query
        carrier[_PENDING_KEY] = (_pending_action(user), user)


def _on_email_confirmed(sender: Any, request: Any = None, email_address: Any = None, **kwargs: Any) -> None:
    _report(request, "email_verified", True, getattr(email_address, "user", None), source="allauth.email_confirmed")


def _on_mfa_used(sender: Any, request: Any = None, user: Any = None, reauthenticated: bool = False, **kw: Any) -> None:
    if not reauthenticated:
        _report(request, "mfa_verify", True, user, source="allauth.mfa.authenticator_used")


def _on_mfa_failed(sender: Any, request: Any = None, reauthentication: bool = False, **kwargs: Any) -> None:
    if not reauthentication:
        _report(request, "mfa_verify", False, source="allauth.mfa.authentication_failed")


_connected: list[bool] = []
_mfa: list[bool] = []  # allauth.mfa is installed: a pending login may be waiting for a second factor


def _connect_signals() -> None:
    """Connect the receivers once per process (``dispatch_uid``: a second middleware instance adds none)."""
    if _connected:
        return
    from django.apps import apps
    from django.contrib.auth import signals

    signals.user_logged_in.connect(_on_logged_in, dispatch_uid="audit_middleware.login")
    signals.user_login_failed.connect(_on_login_failed, dispatch_uid="audit_middleware.login_failed")
    signals.user_logged_out.connect(_on_logged_out, dispatch_uid="audit_middleware.logout")
    if apps.is_installed("allauth.account"):
        from allauth.account import signals as account

        for signal, action, succeeded in (
            (account.user_signed_up, "signup", True),
            (account.password_changed, "password_change", True),
            (account.password_set, "password_change", True),
            (account.password_reset, "password_reset", True),
            (account.login_code_rejected, "login", False),
            (account.password_reset_code_rejected, "password_reset", False),
        ):
            source = "allauth." + next(k for k, v in vars(account).items() if v is signal)
            signal.connect(_on_signal(action, succeeded, source), dispatch_uid=source, weak=False)
        account.authentication_step_completed.connect(_on_step, dispatch_uid="audit_middleware.allauth.step")
        account.email_confirmed.connect(_on_email_confirmed, dispatch_uid="audit_middleware.allauth.email")
    if apps.is_installed("allauth.mfa"):
        from allauth.mfa import signals as mfa

        mfa.authenticator_used.connect(_on_mfa_used, dispatch_uid="audit_middleware.allauth.mfa_used")
        mfa.authentication_failed.connect(_on_mfa_failed, dispatch_uid="audit_middleware.allauth.mfa_failed")
        _mfa.append(True)
    _connected.append(True)


# -- the view: its route template and what its silence means -----------------------------------------


def _known_view(request: Any) -> tuple[str, str] | None:
    match = getattr(getattr(request, "_request", request), "resolver_match", None)
    if match is None:
        return None
    key = (match.func, match.url_name)
    try:
        return _known[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable view callable
        return _view_entry(*key)
    known = _view_entry(*key)
    if len(_known) < _MAX_KNOWN:
        _known[key] = known
    return known


def _view_entry(func: Any, url_name: str | None) -> tuple[str, str] | None:
    module = getattr(getattr(func, "view_class", func), "__module__", "") or ""
    package = module.partition(".")[0]
    if package == "django" and not module.startswith(_DJANGO_AUTH_VIEWS):
        return None  # a generic view (a TemplateView) the project named "login" is not Django's login
    return _VIEWS.get((package, url_name or ""))


_known: dict[tuple[Any, str | None], tuple[str, str] | None] = {}  # per view: a project has a bounded number
_MAX_KNOWN = 4096


def _view_of(request: Any) -> str | None:
    known = _known_view(request)
    return known[0] if known is not None else None


def _conclude(carrier: MutableMapping[str, Any], request: Any, response: Any) -> None:
    """After the view: turn what the known auth view did (or did not) announce into evidence."""
    pending = carrier.pop(_PENDING_KEY, None)
    if type(pending) is tuple and not {e.action for e in evidence_of(carrier)} & _LOGIN_FAMILY:
        # the password was right (allauth's form or headless API); a second factor or e-mail verification
        # stands between it and a session
        _report(carrier, pending[0], True, pending[1], source="allauth.authentication_step_completed")
        return
    known = _known_view(request)
    if known is None:
        return
    action, kind = known
    if kind == _SIGNAL:
        watch(carrier, (action,))
    reported = {e.action for e in evidence_of(carrier)}
    if request.method != "POST" or action in reported or (action == "login" and reported & _LOGIN_FAMILY):
        return
    status = getattr(response, "status_code", 500)
    if status == 403 and _csrf_refused(request):
        # the CSRF check refused the POST before the view checked anything (a cross-site page posting the form
        # with a name of its choice from its visitors' browsers): it reached no auth view, so no auth event
        _skip(carrier)
        return
    if 300 <= status < 400 and _token_moved(request):
        # a reset confirm view (Django's, allauth's) only moved the e-mailed token into the session and redirected
        # to its form, for a POST too: no password was set and none was tried, so no event at all
        watch(carrier, (action,))
        return
    if kind == _FORM and action in _NO_FORM_WHEN_SIGNED_IN and 300 <= status < 400 and _authenticated(request):
        # allauth (and LoginView(redirect_authenticated_user=True)) redirect a signed-in user away from the form
        # without checking anything, as for a double-submitted login: no attempt was made, so no row at all
        _skip(carrier)
        return
    if kind == _FORM:
        _report(carrier, action, False, identifier=_posted_name(request), source="django.view")
    elif kind == _REDIRECT:  # allauth answers an AJAX form with JSON: 200 done, 400 form errors
        ajax = "json" in str(response.get("Content-Type", "")) if hasattr(response, "get") else False
        _report(carrier, action, 300 <= status < 400 or (ajax and 200 <= status < 300), source="django.view")
    elif kind == _TOKEN and 200 <= status < 300 and _authenticated(request):
        # DRF authenticated the request (a verified token) and the view signed it out
        _report(carrier, action, True, getattr(request, "user", None), source="dj_rest_auth.logout")


def _skip(carrier: MutableMapping[str, Any]) -> None:
    context = carrier.get(CONTEXT_KEY)
    if not isinstance(context, AuditContext):
        context = carrier[CONTEXT_KEY] = AuditContext()
    context.skip()


def _csrf_refused(request: Any) -> bool:
    """Whether Django's CSRF check (middleware or ``csrf_protect``) refused the request: it marks the ones it
    accepts, and skips only views marked exempt."""
    func = getattr(getattr(request, "resolver_match", None), "func", None)
    return not getattr(request, "csrf_processing_done", False) and not getattr(func, "csrf_exempt", False)


def _token_moved(request: Any) -> bool:
    """Whether the view is a reset confirm view reached by the e-mailed token, not by its form's URL."""
    match = getattr(request, "resolver_match", None)
    view_class = getattr(getattr(match, "func", None), "view_class", None)
    kwargs = getattr(match, "kwargs", None)
    if not isinstance(kwargs, dict):
        return False
    for attr, name in (("reset_url_token", "token"), ("reset_url_key", "key")):  # Django's, allauth's
        form_token = getattr(view_class, attr, None)
        token = kwargs.get(name)
        if isinstance(form_token, str) and token is not None:
            return str(token) != form_token
    return False


def _pending_action(user: Any) -> str:
    if not _mfa:  # never query a table that is not there: under ATOMIC_REQUESTS it would break the view's transaction
        return "login_pending"
    from allauth.mfa.utils import is_mfa_enabled

    try:
        return "login_mfa_pending" if is_mfa_enabled(user) else "login_pending"
    except Exception:  # the database failing here fails the view too; the row must not
        return "login_pending"


def _posted_name(request: Any) -> str | None:
    post = getattr(request, "_post", None)  # only when the view parsed the form: never read the body here
    if post is None:
        return None
    for name in ("username", "login", "email"):
        value = post.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def django_route_template(match: Any) -> str | None:
    """The route a ``ResolverMatch`` resolved, as a clean template (``/users/{pk}/``), or None.

    Django's ``match.route`` joins the patterns' texts, so a ``re_path`` brings regex syntax with it
    (``api/auth/password/reset/?$``); each pattern of the matched chain is converted on its own instead:
    ``path()`` converters become ``{name}``, a regex only when it is a plain path with named groups.
    """
    tried = getattr(match, "tried", None)
    chain = tried[-1] if isinstance(tried, list) and tried else None
    if not isinstance(chain, list | tuple):
        route = getattr(match, "route", None)
        return template_of(route) if isinstance(route, str) and regex_template(route) == route else None
    key = tuple(chain)  # the pattern objects live as long as the URLconf: one conversion per route
    try:
        return _templates[key]
    except (KeyError, TypeError):
        pass
    template, cacheable = _chain_template(chain)
    if cacheable and len(_templates) < _MAX_KNOWN:
        _templates[key] = template
    return template


def _chain_template(chain: Sequence[Any]) -> tuple[str | None, bool]:
    """The template of a matched chain of patterns, and whether it holds for every request."""
    parts: list[str] = []
    for entry in chain:
        pattern = getattr(entry, "pattern", None)
        text = getattr(pattern, "_route", None)  # RoutePattern: the path() text
        if isinstance(text, str):
            parts.append(text)
            continue
        regex = getattr(pattern, "_regex", None)
        if not isinstance(regex, str):
            text = str(pattern) if pattern is not None else None  # LocalePrefixPattern: "en/", per request
            if text is None or regex_template(text) != text:
                return None, False
            parts.append(text)
            return _chain_rest(parts, chain[len(parts) :]), False
        converted = regex_template(regex)
        if converted is None:
            return None, True
        parts.append(converted)
    return template_of("".join(parts)), True


def _chain_rest(parts: list[str], rest: Sequence[Any]) -> str | None:
    template, _ = _chain_template(rest)
    return None if template is None else template_of("".join(parts) + template.lstrip("/"))


_templates: dict[tuple[Any, ...], str | None] = {}


_META = frozenset("\\.^$*+?{}[]|()")


def regex_template(regex: str) -> str | None:
    """A ``re_path`` regex as a route (``^users/(?P<pk>[0-9]+)/?$`` -> ``users/{pk}/``), or None if it is
    more than a path with named groups (alternatives, optional parts, unnamed groups, classes outside groups)."""
    out: list[str] = []
    i, n = 0, len(regex)
    while i < n:
        char = regex[i]
        if (char == "^" and i == 0) or (char == "$" and i == n - 1):
            i += 1
        elif regex.startswith(r"\Z", i) and i == n - 2:
            i += 2
        elif regex.startswith("(?P<", i):
            name_end = regex.find(">", i)
            close = _group_end(regex, i)
            name = regex[i + 4 : name_end]
            if close is None or not name.isidentifier() or (close + 1 < n and regex[close + 1] in "?*+{"):
                return None  # unbalanced, or an optional / repeated group: no single template
            out.append("{" + name + "}")
            i = close + 1
        elif regex.startswith("/?", i):  # dj-rest-auth's optional trailing slash
            out.append("/")
            i += 2
        elif char == "\\" and i + 1 < n and not regex[i + 1].isalnum():
            out.append(regex[i + 1])  # an escaped literal: \. \-
            i += 2
        elif char in _META:
            return None
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _group_end(regex: str, start: int) -> int | None:
    """Index of the parenthesis closing the group opened at ``start`` (escapes and classes skipped)."""
    depth, i, in_class = 0, start, False
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _remember_route(carrier: MutableMapping[str, Any], request: Any) -> None:
    match = getattr(request, "resolver_match", None)
    template = django_route_template(match) if match is not None else None
    if template is not None:
        carrier[ROUTE_KEY] = template


# -- the middleware ----------------------------------------------------------------------------------


class DjangoAuditMiddleware:
    """Django middleware: audits the request itself (``settings.AUDIT_MIDDLEWARE``) or hands
    ``request.user``, the resolved route and Django's auth signals to the outer audit middleware.

    Place it after ``django.contrib.auth.middleware.AuthenticationMiddleware``. See the module docstring.

    Sync and async capable: in an async (ASGI) stack it runs on the event loop, so it adds no
    thread switch to any request, and it never evaluates ``request.user`` there (a blocking
    database query): an unevaluated user is read with ``await request.auser()`` (Django 5+), else
    in a thread.

    Raises:
        ConfigurationError: ``settings.AUDIT_MIDDLEWARE`` holds an invalid or unknown option.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction
        from django.conf import settings
        from django.utils.functional import LazyObject, empty

        self.get_response = get_response
        self._lazy, self._empty = LazyObject, empty  # imported once, not on every request
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
        options = getattr(settings, SETTING, None)
        self.auditor = _Auditor(options) if options is not None else None
        self._warned = False
        _connect_signals()

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        carrier = self._carrier(request)
        if carrier is None:
            return self.get_response(request)
        audited = carrier.get(AUDITED_KEY) is True
        if audited:
            remember_user(carrier, getattr(request, "user", None))
        response = self.get_response(request)
        self._settle(carrier, request, response, audited)
        if audited or EVIDENCE_KEY in carrier:  # (the view's evidence makes an unmapped request recorded)
            remember_user(carrier, getattr(request, "user", None))
        self._finish(carrier, request, response, audited)
        return response

    async def _acall(self, request: Any) -> Any:
        carrier = self._carrier(request)
        if carrier is None:
            return await self.get_response(request)
        audited = carrier.get(AUDITED_KEY) is True
        if audited:
            remember_user(carrier, await self._safe_user(request))
        response = await self.get_response(request)
        self._settle(carrier, request, response, audited)
        if audited or EVIDENCE_KEY in carrier:
            remember_user(carrier, await self._safe_user(request))
        self._finish(carrier, request, response, audited)
        return response

    def _carrier(self, request: Any) -> MutableMapping[str, Any] | None:
        """The carrier of an outer middleware, else one this middleware audits itself (or None: unaudited)."""
        carrier = _django_carrier(request)
        if carrier is not None:
            return carrier
        if self.auditor is None:
            if not self._warned:
                self._warned = True
                logger.error(MSG_NOT_AUDITED, SETTING)
            return None
        return self.auditor.start(request)

    def _settle(self, carrier: MutableMapping[str, Any], request: Any, response: Any, audited: bool) -> None:
        """After the view: the known view's outcome and the route. Never raises."""
        try:
            # an unaudited request matters only if a view announced something or may fail silently (a POST)
            if audited or request.method == "POST" or EVIDENCE_KEY in carrier or _PENDING_KEY in carrier:
                _conclude(carrier, request, response)
            if audited or EVIDENCE_KEY in carrier:  # an unmapped request with evidence is recorded too
                _remember_route(carrier, request)
        except Exception as exc:  # the glue must never break the request
            logger.warning(MSG_GLUE_FAILED, type(exc).__name__)

    def _finish(self, carrier: MutableMapping[str, Any], request: Any, response: Any, audited: bool) -> None:
        """Settings-only: record the event (an unmapped request only when a view announced something)."""
        owned = carrier.pop(_OWNED_KEY, None)
        if owned is not None:
            owned.finish(carrier, request, response, audited or EVIDENCE_KEY in carrier)

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


class _Auditor:
    """The audit machinery a settings-only install owns: the core compiled from ``settings.AUDIT_MIDDLEWARE``
    and a writer thread (started on the first audited request, after a pre-fork server forked)."""

    def __init__(self, options: Any) -> None:
        from ...errors import ConfigurationError
        from ..core import AuditCore
        from ..wsgi import _background

        if not isinstance(options, Mapping):
            raise ConfigurationError(f"settings.{SETTING} must be a dict of AuditMiddleware options, got {options!r}")
        options = dict(options)
        writer = options.pop("writer", None)
        self.core = AuditCore(_config(options))
        strict = [r.key for r in self.core.routes.routes if r.spec is not None and r.spec.strict]
        if strict:  # failing closed needs the whole response held: only the wrapper can do that
            raise ConfigurationError(
                f"settings.{SETTING}: strict routes ({', '.join(strict)}) need AuditWSGIMiddleware or "
                "AuditMiddleware around the application"
            )
        self.writer = _background(writer, self.core)
        self._unmapped = self.core.config.audit_unmapped
        logger.info(MSG_OWNED, SETTING, len(self.core.routes.routes))

    def start(self, request: Any) -> MutableMapping[str, Any] | None:
        """Mark the request as audited when it is (its carrier), else None."""
        scope = getattr(request, "scope", None)
        carrier: MutableMapping[str, Any] = scope if isinstance(scope, MutableMapping) else request.META
        if INSTALLED_KEY in carrier:
            return None
        carrier[INSTALLED_KEY] = True
        method = request.method or "GET"
        root_path = request.META.get("SCRIPT_NAME", "") or ""
        match = self.core.match(method, request.path, root_path)
        if match is not None or self._unmapped:
            carrier[AUDITED_KEY] = True
        # an unmapped request stays the glue's carrier: a view announcing an auth event gets it recorded
        carrier[_OWNED_KEY] = _Owned(self, match, method, root_path, current_carrier.set(carrier))
        return carrier


class _Owned:
    """One request a settings-only install audits (per-request state, never on the middleware)."""

    __slots__ = ("auditor", "match", "method", "root_path", "started", "token")

    def __init__(self, auditor: _Auditor, match: Any, method: str, root_path: str, token: Any) -> None:
        self.auditor, self.match, self.method, self.root_path, self.token = auditor, match, method, root_path, token
        self.started = time.perf_counter()

    def finish(self, carrier: MutableMapping[str, Any], request: Any, response: Any, record: bool) -> None:
        """Build and submit the event when ``record`` (never raises)."""
        from ..config import RequestInfo, ResponseInfo
        from ..wsgi_io import request_headers

        core = self.auditor.core
        with contextlib.suppress(ValueError):  # set in another context: nothing of ours to restore
            current_carrier.reset(self.token)
        if not record:
            return
        try:
            meta = request.META
            template = carrier.get(ROUTE_KEY)
            template = template if isinstance(template, str) and template.startswith("/") else None
            match = core.rematch(self.method, template, self.match)
            body = getattr(request, "_body", b"")  # only what the view read: the body is never read for us
            body = body if isinstance(body, bytes) else b""
            size = _int(meta.get("CONTENT_LENGTH")) or len(body)
            streaming = getattr(response, "streaming", True)
            content = b"" if streaming else response.content
            peek = self.auditor.core.config.max_response_peek if core.wants_response_body(match) else 0
            info = RequestInfo(
                method=self.method,
                path=request.path,
                root_path=self.root_path,
                query_string=meta.get("QUERY_STRING", ""),
                headers=request_headers(meta),
                client=meta.get("REMOTE_ADDR") or None,
                body=body[: core.body_cap] if core.wants_body(match) else b"",
                body_complete=len(body) == size and len(body) <= core.body_cap,
                body_size=size,
                user=carrier.get(USER_KEY),
            )
            result = ResponseInfo(
                status=response.status_code,
                headers=[(str(k), str(v)) for k, v in response.items()]
                + [("set-cookie", c.output(header="").strip()) for c in response.cookies.values()],
                body=content[:peek],
                bytes_sent=len(content),
                duration=time.perf_counter() - self.started,
                completed=True,
                route_template=template,
                user=carrier.get(USER_KEY),
                evidence=evidence_of(carrier),
                watching=watching_of(carrier),
            )
            context = carrier.get(CONTEXT_KEY)
            event = core.build_event(info, result, match, context if isinstance(context, AuditContext) else None)
            if event is not None:
                self.auditor.writer.submit(event)
        except Exception as exc:
            core.note_error("recording", exc)


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def _config(options: dict[str, Any]) -> Any:
    from ..config import MiddlewareConfig

    if "trusted_proxies" in options and not isinstance(options["trusted_proxies"], str):
        options["trusted_proxies"] = tuple(options["trusted_proxies"])
    options.setdefault("trusted_proxies", ("127.0.0.1", "::1"))
    return MiddlewareConfig.from_options(**options)
