"""``audit-middleware routes module:attr``: every route of an app, the action it will record, and why.

The app is imported as a server would (``module:attr``, or ``module:factory()`` to call a factory without
arguments) and its routes are listed from the framework itself: Starlette and FastAPI ``routes`` (mounts
included), Flask's ``url_map``, Litestar's ``routes``, and Django's URLconf (``DJANGO_SETTINGS_MODULE``).
The audit configuration is the one the app was given: an ``AuditMiddleware`` / ``AuditWSGIMiddleware``
found around it (or in Starlette's ``user_middleware``), else the defaults (the preset alone). Each route is
matched exactly as the middleware matches the framework's template after a request, so the table shows
the effective map: which user route or preset row wins, and what a generic preset row needs before it
names an auth action.

Exit codes: 0 listed, 1 the app could not be imported or has no routes we can read, 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..capture.core import AuditCore, MiddlewareConfig
from ..capture.preset import PRESET_TABLE, Corroborated
from ..errors import ConfigurationError

__all__ = ["RouteLine", "add_command", "effective_routes", "find_config", "framework_routes", "load_app"]

EXIT_OK = 0
EXIT_FAILURE = 1
ANY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE")  # Django views take any method: try each
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
_FLASK_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>:]+)>")
_REGEX_GROUP = re.compile(r"\(\?P<([^>]+)>[^)]*\)")
_ROWS = {row.key: row for row in PRESET_TABLE}


@dataclass(frozen=True, slots=True)
class RouteLine:
    """One line of the map: a framework route and what the middleware records for it."""

    method: str
    path: str
    action: str  # "-" when nothing is recorded
    why: str
    conditional: bool = False  # a generic preset row: recorded only when corroborated


def load_app(target: str) -> Any:
    """Import ``module:attr`` (dotted attributes allowed; ``attr()`` calls a factory without arguments)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected module:attr, got {target!r}")
    sys.path.insert(0, os.getcwd())  # as uvicorn and gunicorn do: the app's own directory
    obj: Any = importlib.import_module(module_name)
    call = attr.endswith("()")
    for part in attr.removesuffix("()").split("."):
        obj = getattr(obj, part)
    return obj() if call else obj


def find_config(app: Any) -> tuple[MiddlewareConfig | None, Any]:
    """(the audit middleware's config, the framework app inside it); None when no middleware is found."""
    from ..capture.asgi import AuditMiddleware
    from ..capture.wsgi import AuditWSGIMiddleware

    config: MiddlewareConfig | None = None
    inner, seen = app, 0
    while seen < 32:  # wrappers expose the app they wrap as .app (pure ASGI) or .wsgi_app (Flask)
        seen += 1
        if isinstance(inner, AuditMiddleware | AuditWSGIMiddleware):
            config = config or inner.config
        for middleware in getattr(inner, "user_middleware", None) or ():  # Starlette's add_middleware
            if getattr(middleware, "cls", None) is AuditMiddleware and config is None:
                options = {k: v for k, v in getattr(middleware, "kwargs", {}).items() if k not in ("dsn", "writer")}
                config = MiddlewareConfig.from_options(**options)
        wsgi_app = getattr(inner, "wsgi_app", None)
        if isinstance(wsgi_app, AuditWSGIMiddleware) and config is None:
            config = wsgi_app.config
        if _routes_of(inner) is not None:
            return config, inner
        nxt = getattr(inner, "app", None)
        if nxt is None or nxt is inner:
            break
        inner = nxt
    return config, inner


def _routes_of(app: Any) -> Any:
    if hasattr(app, "url_map") and hasattr(app, "view_functions"):
        return app.url_map  # Flask
    routes = getattr(app, "routes", None)
    return routes if isinstance(routes, list) else None


def framework_routes(app: Any) -> Iterator[tuple[tuple[str, ...], str]]:
    """(methods, template) of every HTTP route the framework declares; methods () when any is taken."""
    if hasattr(app, "url_map") and hasattr(app, "view_functions"):  # Flask
        for rule in app.url_map.iter_rules():
            methods = tuple(sorted(set(rule.methods or ()) - _IGNORED_METHODS))
            yield methods, _FLASK_PARAM.sub(r"{\1}", rule.rule)
        return
    routes = _routes_of(app)
    if routes is not None:
        yield from _starlette_or_litestar(routes, "")
        return
    if os.environ.get("DJANGO_SETTINGS_MODULE") or type(app).__module__.startswith("django."):
        yield from _django()
        return
    raise ValueError(f"cannot read the routes of {type(app).__name__} (Starlette, FastAPI, Flask, Litestar, Django)")


def _starlette_or_litestar(routes: list[Any], prefix: str) -> Iterator[tuple[tuple[str, ...], str]]:
    for route in routes:
        inner = getattr(route, "routes", None)
        path_format = getattr(route, "path_format", None) or getattr(route, "path", None)
        if type(route).__name__ == "Mount" and isinstance(inner, list):
            yield from _starlette_or_litestar(inner, prefix + (route.path or ""))
            continue
        included = getattr(route, "original_router", None)  # FastAPI >= 0.137 keeps include_router() lazy
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from _starlette_or_litestar(included.routes, prefix + (getattr(context, "prefix", "") or ""))
            continue
        methods = getattr(route, "methods", None)
        if not isinstance(path_format, str) or methods is None:  # websockets, hosts, static files
            continue
        yield tuple(sorted(set(methods) - _IGNORED_METHODS)), prefix + path_format


def _django() -> Iterator[tuple[tuple[str, ...], str]]:
    import django
    from django.urls import URLPattern, URLResolver, get_resolver

    django.setup()

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[tuple[str, ...], str]]:
        for entry in patterns:
            piece = _django_piece(str(entry.pattern))
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, prefix + piece)
            elif isinstance(entry, URLPattern):
                yield (), "/" + (prefix + piece).lstrip("/")

    yield from walk(get_resolver().url_patterns, "")


def _django_piece(pattern: str) -> str:
    """A Django route (``users/<int:pk>/``) or simple regex (``^password/reset/?$``) as a template piece."""
    pattern = _FLASK_PARAM.sub(r"{\1}", pattern)
    pattern = _REGEX_GROUP.sub(r"{\1}", pattern)
    return pattern.lstrip("^").removesuffix("$").replace("/?", "/").replace("\\", "")


def _explain(core: AuditCore, method: str, template: str, user_keys: set[str]) -> RouteLine:
    match = core.match(method, template)
    unmapped = core.config.audit_unmapped
    if match is None:
        if unmapped:
            return RouteLine(method, template, core.config.unmapped_action, "no route matches: audit_unmapped")
        return RouteLine(method, template, "-", "not audited")
    if match.spec is None:
        return RouteLine(method, template, "-", f"not audited: routes maps {match.key!r} to None")
    action = match.spec.action
    if match.key in user_keys:
        named = action if isinstance(action, str) else f"({getattr(action, '__name__', 'callable')}(request, response))"
        return RouteLine(method, template, named, f"user route {match.key!r}")
    row = _ROWS[match.key]
    why = f"preset {row.key!r} ({row.source})"
    if isinstance(action, Corroborated):
        return RouteLine(method, template, action.action, f"{why}; only with {action.needs}, else no row", True)
    return RouteLine(method, template, row.action, why)


def effective_routes(app: Any) -> tuple[list[RouteLine], str]:
    """(every route with what it records, a line saying where the audit configuration came from)."""
    config, inner = find_config(app)
    origin = "the middleware found around the app"
    if config is None:
        config, origin = MiddlewareConfig(), "no audit middleware found: the defaults (the preset)"
    core = AuditCore(config)
    user_keys = set(config.routes or ())  # (a user key equal to a preset one is the user's: it comes first)
    lines: list[RouteLine] = []
    for methods, template in framework_routes(inner):
        tried = methods or ANY_METHOD
        found = [_explain(core, method, template, user_keys) for method in tried]
        if not methods and all(line.action == "-" for line in found):  # any method, none audited: one line
            found = [RouteLine("*", template, "-", found[0].why)]
        elif not methods:
            found = [line for line in found if line.action != "-"]
        lines.extend(found)
    return lines, origin


def _print(lines: list[RouteLine], origin: str, audited_only: bool) -> None:
    shown = [line for line in lines if not audited_only or line.action != "-"]
    widths = [max([len(h), *(len(getattr(line, f)) for line in shown)]) for h, f in _COLUMNS]
    print("  ".join(h.ljust(w) for (h, _f), w in zip(_COLUMNS, widths, strict=True)).rstrip())
    for line in shown:
        print("  ".join(getattr(line, f).ljust(w) for (_h, f), w in zip(_COLUMNS, widths, strict=True)).rstrip())
    audited = sum(1 for line in lines if line.action != "-")
    conditional = sum(1 for line in lines if line.conditional)
    print(f"\n{audited} of {len(lines)} routes audited, {conditional} of them only when corroborated ({origin}).")


_COLUMNS = (("METHOD", "method"), ("PATH", "path"), ("ACTION", "action"), ("WHY", "why"))


def _run(args: argparse.Namespace, dsn: str) -> int:
    try:
        app = load_app(args.app)
        lines, origin = effective_routes(app)
    except (ImportError, AttributeError, ValueError, ConfigurationError) as exc:
        print(f"error: {args.app}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    _print(lines, origin, args.audited)
    return EXIT_OK


def add_command(commands: Any) -> None:
    """Register ``routes`` on ``commands`` (argparse sub-parsers); it needs no database."""
    routes = commands.add_parser(
        "routes",
        help="print every route of an app with the action it will record, and why",
        description="Import an app (module:attr, or module:factory() to call a factory) and print each of its "
        "routes (Starlette, FastAPI, Flask, Litestar, Django via DJANGO_SETTINGS_MODULE) with the action the "
        "audit middleware records and which user route or preset row decides it. "
        f"Exit codes: {EXIT_OK} listed, {EXIT_FAILURE} the app could not be read, 2 usage.",
    )
    routes.add_argument("app", metavar="module:attr", help="the app, as given to uvicorn or gunicorn")
    routes.add_argument("--audited", action="store_true", help="only the routes that are recorded")
    routes.set_defaults(run=_run)
