"""Flask glue: hands the user, the matched URL rule and the auth events Flask-Login and Flask-Security
announce to ``AuditWSGIMiddleware``.

    app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, dsn=DSN)
    install_flask(app)                      # user: flask_login.current_user, else flask.g.user

The user is read before the view (a logout destroys it) and again after (a login creates it). The
route and user are looked up on audited requests only (unaudited requests pay for no session lookup).

The user of an auth event is read when its signal fires, as an id: by the time the middleware
records the row, the view's database session has committed and expired the ORM object.

Auth events come from the frameworks' own signals (:mod:`~audit_middleware.capture.evidence`), not from
the response: Flask-Security answers a wrong password with 200 and the form again, the Flask-Login
tutorial answers both outcomes with a redirect. Flask-Login has no signal for a failed login, so on its
``login_view`` a POST that sends no ``user_logged_in`` is a failed login; on Flask-Security's views a POST
whose success signal never came failed (a wrong old password, a bad reset token, a wrong code).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from ..context import AUDITED_KEY, INSTALLED_KEY, ROUTE_KEY, audit_context
from ..evidence import EVIDENCE_KEY, LOGIN_TYPE, evidence_of, report_auth, watch
from ..identity import user_id_of
from ..preset import PRESET_TABLE
from ._common import remember_user, template_of

__all__ = ["install_flask"]

_EXPECT_KEY = "audit_middleware.flask.expect"  # the action this Flask-Security view's POST performs
_REFUSED_KEY = "audit_middleware.flask.refused"  # a protected view turned the anonymous caller away
_INSTALLED = "audit_middleware"  # app.extensions key: install_flask ran on this app

# Flask-Security's views (endpoint in its blueprint) and what their POST does. Each has a success
# signal; a POST that reached the view without it failed.
_SECURITY_VIEWS = {
    "login": "login",
    "logout": "logout",
    "register": "signup",
    "forgot_password": "password_reset_requested",
    "reset_password": "password_reset",
    "change_password": "password_change",
    "two_factor_token_validation": "mfa_verify",
}
# Every auth action a router-refused request (404, 405) must not be recorded as: no view ran.
_AUTH_ACTIONS = frozenset({row.action for row in PRESET_TABLE} | {*_SECURITY_VIEWS.values(), *LOGIN_TYPE})


def _flask_current_user() -> Any:
    """Flask-Login's ``current_user`` when this app uses Flask-Login, else ``flask.g.user``: having the
    package installed (a dependency of a dependency) does not make an app use it."""
    from flask import current_app, g

    if getattr(current_app, "login_manager", None) is None:
        return g.get("user")
    from flask_login import current_user

    return current_user


def _carrier() -> MutableMapping[str, Any] | None:
    """The running request's environ, when an audit middleware wraps this app (else None: no work)."""
    from flask import has_request_context, request

    if not has_request_context():
        return None
    environ = request.environ
    return environ if INSTALLED_KEY in environ else None


def _reported(environ: MutableMapping[str, Any]) -> set[str]:
    return {e.action for e in evidence_of(environ)}


def _redirects_to_itself(app: Any, request: Any, response: Any) -> bool:
    """A redirect back to the URL rule that answered: the form shown again (the Flask-Login tutorial's
    wrong password and duplicate sign-up), so its action did not happen. Rules, not endpoints: the
    tutorial serves ``GET /login`` and ``POST /login`` from two views."""
    location = response.headers.get("Location")
    if not location or not 300 <= response.status_code < 400 or request.url_rule is None:
        return False
    target = urlsplit(location)
    if target.netloc and target.netloc != request.host:
        return False
    path = target.path or request.path
    root = request.script_root
    if root and path.startswith(root):
        path = path[len(root) :]
    try:
        rule, _ = app.create_url_adapter(request).match(path, method="GET", return_rule=True)
    except Exception:  # not one of the app's views (a 404, a redirect): not the same form
        return False
    return bool(rule.rule == request.url_rule.rule)


def _login_rules(app: Any, manager: Any) -> set[str]:
    """The URL rules of Flask-Login's ``login_view`` (and per-blueprint login views)."""
    rules: set[str] = set()
    for endpoint in (manager.login_view, *manager.blueprint_login_views.values()):
        try:
            rules.update(rule.rule for rule in app.url_map.iter_rules(endpoint))
        except KeyError:  # a login view not registered (yet)
            continue
    return rules


def install_flask(app: Any, *, user: Callable[[], Any] | None = None) -> None:
    """Register Flask hooks and signal receivers that hand the user, the matched URL rule and the auth
    events to the WSGI middleware.

    Connects Flask-Login's ``user_logged_in``, ``user_logged_out`` and ``user_login_confirmed`` and,
    when Flask-Security-Too is installed, its ``user_authenticated``, ``user_failed_authn``, ``user_registered``,
    ``reset_password_instructions_sent``, ``password_reset``, ``password_changed``, ``tf_code_confirmed``,
    ``tf_profile_changed`` and ``tf_disabled`` signals (for this app only). Calling it twice on one app
    does nothing more.

    Args:
        app: the ``flask.Flask`` app (its ``wsgi_app`` wrapped by ``AuditWSGIMiddleware``).
        user: returns the current user (object or id); default ``flask_login.current_user`` if
            the app uses Flask-Login (has a ``login_manager``), else ``flask.g.user``.

    Call it after registering your own ``before_request`` hooks that load the user: Flask runs them
    in registration order, and the user is read once before the view (for logouts) and once after.
    """
    from flask import request

    if _INSTALLED in app.extensions:
        return
    app.extensions[_INSTALLED] = True
    read_user = user or _flask_current_user
    security_blueprint = app.config.get("SECURITY_BLUEPRINT_NAME", "security")

    def get_user() -> Any:
        try:
            return read_user()
        except Exception:  # the user's callable (or its session store) must not break the request
            return None

    def security_view() -> str | None:
        """The Flask-Security view answering this request (``login``, ``change_password``...), if any."""
        if "security" not in app.extensions or request.blueprint != security_blueprint or not request.endpoint:
            return None
        return request.endpoint.rpartition(".")[2]

    def before() -> None:
        environ = request.environ
        if environ.get(AUDITED_KEY):
            try:
                look_before(environ)
            except Exception:  # never break the request (a broken login_manager, url_map)
                return

    def look_before(environ: MutableMapping[str, Any]) -> None:
        rule = request.url_rule
        if rule is None:  # the router matched no view (404, 405): whatever the path says, no auth event
            watch(environ, _AUTH_ACTIONS)
            return
        template = template_of(rule.rule)
        if template is not None:
            environ[ROUTE_KEY] = template
        current = get_user()
        remember_user(environ, current)
        watched: set[str] = set()
        manager = getattr(app, "login_manager", None)
        if manager is not None:  # every Flask-Login logout goes through logout_user (user_logged_out)
            watched.add("logout")
            if rule.rule in _login_rules(app, manager):  # login_user sends user_logged_in: no signal, no login
                watched.add("login")
        action = _SECURITY_VIEWS.get(security_view() or "")
        if action in ("login", "signup") and request.method == "POST" and user_id_of(current) is not None:
            # Flask-Security turns a signed-in caller away from these views without reading the form (a double
            # submit, a cross-site POST): no password was checked, nobody signed up. Not a failed attempt either.
            audit_context(environ).skip()
            return
        if action == "mfa_verify" and user_id_of(current) is not None:
            action = "mfa_changed"  # a signed-in user confirming a new second factor: a change, not a sign-in
        if action is not None:
            environ[_EXPECT_KEY] = action
            watched.add(action)
        if watched:
            watch(environ, watched)

    def after(response: Any) -> Any:
        environ = request.environ
        if environ.get(AUDITED_KEY):
            with contextlib.suppress(Exception):  # never break the request (a broken session or response)
                look_after(environ, response)
        return response

    def look_after(environ: MutableMapping[str, Any], response: Any) -> None:
        remember_user(environ, get_user())
        if request.method != "POST":
            return
        expected = environ.get(_EXPECT_KEY)
        if expected is not None:
            _conclude_security_view(environ, expected)
        elif (
            EVIDENCE_KEY not in environ
            and getattr(app, "login_manager", None) is not None  # a sign-in here would have announced itself
            and _redirects_to_itself(app, request, response)
        ):
            watch(environ, LOGIN_TYPE)  # the form again: a login or sign-up POST here failed

    def _conclude_security_view(environ: MutableMapping[str, Any], expected: str) -> None:
        """A Flask-Security POST whose success signal never came failed, unless the view never ran."""
        if expected == "logout" or environ.get(_REFUSED_KEY) or expected in _reported(environ):
            return  # (a logout that did not happen is no event at all: nobody was signed in)
        source = f"flask_security.{security_view()}"
        if expected == "login":
            pending = _pending_second_factor(app)
            if pending is not None:  # the password was right; the sign-in waits for the second factor
                report_auth(environ, "login_mfa_pending", succeeded=True, user=pending, source=source)
                return
        report_auth(environ, expected, succeeded=False, source=source)

    app.before_request(before)
    app.after_request(after)
    _connect_flask_login(app)
    _connect_flask_security(app)


def _pending_second_factor(app: Any) -> Any:
    """The user a Flask-Security login left waiting for the second factor (``tf_user_id`` in the session:
    its login view clears it first and sets it only after a correct password), else None.

    Only when the session was written during this request: a POST turned away before the view ran (a
    missing CSRF token under ``unauth_csrf``) leaves an earlier attempt's ``tf_user_id`` in place, and
    that is no correct password now."""
    from flask import session

    try:
        uniquifier = session.get("tf_user_id")
        if not uniquifier or not session.modified:
            return None
        found = app.extensions["security"].datastore.find_user(fs_uniquifier=uniquifier)
        return user_id_of(found)
    except Exception:  # the datastore failing must not break the request
        return None


def _connect_flask_login(app: Any) -> None:
    try:
        from flask_login import signals
    except ImportError:
        return

    def logged_in(sender: Any, user: Any = None, **extra: Any) -> None:
        if "security" in app.extensions:
            return  # Flask-Security's user_authenticated says more (a re-sign-in after a password change)
        environ = _carrier()
        if environ is not None:
            report_auth(environ, "login", succeeded=True, user=user_id_of(user), source="flask_login.user_logged_in")

    def logged_out(sender: Any, user: Any = None, **extra: Any) -> None:
        try:
            anonymous = user is None or getattr(user, "is_authenticated", True) is False
        except Exception:  # a broken user object must not break the logout
            anonymous = False
        if anonymous:  # logout_user() with nobody signed in (a view without @login_required) signs nobody out
            return
        environ = _carrier()
        if environ is not None:
            report_auth(environ, "logout", succeeded=True, user=user_id_of(user), source="flask_login.user_logged_out")

    def confirmed(sender: Any, **extra: Any) -> None:  # confirm_login(): the user proved it again (fresh)
        environ = _carrier()
        if environ is not None:
            from flask_login import current_user

            source = "flask_login.user_login_confirmed"
            report_auth(environ, "reauthenticate", succeeded=True, user=user_id_of(current_user), source=source)

    signals.user_logged_in.connect(logged_in, sender=app, weak=False)
    signals.user_logged_out.connect(logged_out, sender=app, weak=False)
    signals.user_login_confirmed.connect(confirmed, sender=app, weak=False)


def _connect_flask_security(app: Any) -> None:
    try:
        from flask_security import signals
    except ImportError:
        return

    def reporter(action: str, signal: str, *, succeeded: bool = True, actor: bool = True) -> Callable[..., None]:
        source = f"flask_security.{signal}"

        def receive(sender: Any, user: Any = None, **extra: Any) -> None:
            environ = _carrier()
            if environ is not None:
                named = user_id_of(user) if actor else None
                report_auth(environ, action, succeeded=succeeded, user=named, source=source)

        return receive

    def authenticated(sender: Any, user: Any = None, authn_via: Any = None, **extra: Any) -> None:
        if authn_via == ["change"]:
            return  # a password change signs the user in again to refresh the session: not a sign-in
        environ = _carrier()
        if environ is not None:
            report_auth(
                environ, "login", succeeded=True, user=user_id_of(user), source="flask_security.user_authenticated"
            )

    def failed(sender: Any, user: Any = None, tfa: bool = False, **extra: Any) -> None:
        from flask import request

        environ = _carrier()
        if environ is None or (request.endpoint or "").endswith(".verify"):
            return  # a wrong password on /verify is a failed re-authentication of a signed-in user, not a login
        action = "mfa_verify" if tfa else "login"
        report_auth(environ, action, succeeded=False, source="flask_security.user_failed_authn")

    def refused(sender: Any, **extra: Any) -> None:
        environ = _carrier()
        if environ is not None:
            environ[_REFUSED_KEY] = True

    receivers: list[tuple[Any, Callable[..., None]]] = [
        (signals.user_authenticated, authenticated),
        (signals.user_failed_authn, failed),
        (signals.user_unauthenticated, refused),
        (signals.user_registered, reporter("signup", "user_registered")),
        (signals.user_not_registered, reporter("signup", "user_not_registered", succeeded=False)),
        # anyone can ask for any e-mail's reset: its user is the subject, not who performed the action
        (
            signals.reset_password_instructions_sent,
            reporter("password_reset_requested", "reset_instructions_sent", actor=False),
        ),
        (signals.password_reset, reporter("password_reset", "password_reset")),
        (signals.password_changed, reporter("password_change", "password_changed")),
        (signals.tf_code_confirmed, reporter("mfa_verify", "tf_code_confirmed")),
        (signals.tf_profile_changed, reporter("mfa_changed", "tf_profile_changed")),
        (signals.tf_disabled, reporter("mfa_disabled", "tf_disabled")),
    ]
    for signal, receiver in receivers:
        signal.connect(receiver, sender=app, weak=False)
