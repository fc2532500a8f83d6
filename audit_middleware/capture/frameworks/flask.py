"""Flask glue: hands ``flask_login.current_user`` (or ``flask.g.user``) and the matched URL rule to
``AuditWSGIMiddleware``, on audited requests only (unaudited requests pay for no session lookup).

    app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, dsn=DSN)
    install_flask(app)                      # user: flask_login.current_user, else flask.g.user

The user is read before the view (a logout destroys it) and again after (a login creates it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..context import AUDITED_KEY, ROUTE_KEY
from ._common import remember_user, template_of

__all__ = ["install_flask"]


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
            template = template_of(rule.rule if rule is not None else None)
            if template is not None:
                environ[ROUTE_KEY] = template
            remember_user(environ, get_user())

    def after(response: Any) -> Any:
        if request.environ.get(AUDITED_KEY):
            remember_user(request.environ, get_user())
        return response

    app.before_request(before)
    app.after_request(after)
