"""The viewer: a read-only Starlette app over the audit table (list, chart, detail, investigations,
integrity, export, live view).

It mounts anywhere (``app.mount("/audit", create_app(...))``): every link is built with
``request.url_for``, so the mount prefix (``root_path``) is kept. Every request goes through
``authorize`` first (there is no open mode); the static files (CSS, the live view's script) are
the only exception, and hold nothing from the table.

The database pool is opened on the first request, with ``default_transaction_read_only = on``: the
viewer never writes to the audit table whatever role it is given. Mounted apps do not get their own
lifespan in Starlette, so the parent app may call ``await viewer.state.viewer.aclose()`` on shutdown;
run standalone (``audit-middleware serve``) that happens by itself.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import inspect
import io
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import AuditError, ConfigurationError
from ..store.export import to_json_line
from ..store.query import AuditRow, Cursor, fetch_page, iter_events
from ..store.stats import collect_stats
from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, check_identifier, mask_dsn
from . import charts, integrity
from .auth import COOKIE_NAME, TokenAuth
from .queries import (
    FAILED_SUFFIX,
    FIELDS,
    ViewFilter,
    chart_buckets,
    fetch_event,
    fetch_newer,
    filter_params,
    first_seen_ips,
    format_time,
    parse_filter,
)

__all__ = ["Authorize", "ViewerState", "create_app"]

logger = logging.getLogger("audit_middleware.viewer")

Authorize = Callable[[HTTPConnection], bool | Awaitable[bool]]
"""``authorize(request) -> bool`` (sync or async): True lets the request in."""

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
LIVE_LIMIT = 200
LIVE_LOOKBACK = dt.timedelta(seconds=10)  # rows committed late (see store.follow) still show up
MSG_AUTHORIZE_FAILED = "viewer authorize hook failed: %s"
MSG_QUERY_FAILED = "viewer query failed: %s"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}
# Characters that reorder or hide text (bidi overrides, zero-width), and terminal controls (ANSI ESC):
# shown as visible \uXXXX escapes so a planted value can neither spoof nor break the page (tab and newline
# stay: HTML shows them as spaces, and the pretty JSON needs its newlines).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
# Cells a spreadsheet would run as a formula (CSV injection) get a leading quote in the CSV export.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def clean(value: object) -> Markup:
    """Escape ``value`` for HTML and make control and bidi characters visible (a Jinja filter)."""
    text = "" if value is None else str(value)
    out: list[str] = []
    last = 0
    for match in _CONTROL.finditer(text):
        out.append(str(escape(text[last : match.start()])))
        out.append(f'<span class="ctl">\\u{ord(match.group()):04x}</span>')
        last = match.end()
    out.append(str(escape(text[last:])))
    return Markup("".join(out))


def _time(value: dt.datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


class ViewerState:
    """What the viewer's routes share: the settings and the lazily opened read-only pool."""

    def __init__(
        self,
        *,
        dsn: str,
        authorize: Authorize,
        schema: str,
        table: str,
        digest_key: str | None,
        checkpoint: str | None,
        page_size: int,
    ) -> None:
        self.dsn, self.authorize, self.schema, self.table = dsn, authorize, schema, table
        self.page_size = page_size
        self.integrity = integrity.Integrity(digest_key=digest_key, checkpoint=checkpoint)
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ViewerState(dsn={mask_dsn(self.dsn)!r}, table={self.schema}.{self.table})"

    async def pool(self) -> asyncpg.Pool:
        """The read-only pool, opened on first use."""
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=1,
                        max_size=4,
                        server_settings={
                            "default_transaction_read_only": "on",
                            "application_name": "audit_middleware.viewer",
                            "statement_timeout": "30s",
                        },
                    )
        return self._pool

    async def aclose(self) -> None:
        """Close the pool and the sign-in writer."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if isinstance(self.authorize, TokenAuth):
            await self.authorize.aclose()


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class _Guard:
    """Pure ASGI: security headers on every response, and ``authorize`` before every route."""

    def __init__(self, app: ASGIApp, state: ViewerState) -> None:
        self.app, self.state = app, state
        self.token = state.authorize if isinstance(state.authorize, TokenAuth) else None
        self.open_paths = ("/static/", "/login") if self.token is not None else ("/static/",)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        path = _route_path(scope)
        if not any(path == p.rstrip("/") or path.startswith(p) for p in self.open_paths):
            conn = HTTPConnection(scope)
            if not await self._allowed(conn):
                await self._deny(conn)(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)

    async def _allowed(self, conn: HTTPConnection) -> bool:
        try:
            result = self.state.authorize(conn)
            if inspect.isawaitable(result):
                result = await result
            return result is True
        except Exception as exc:  # a failing hook denies: never an open door
            logger.error(MSG_AUTHORIZE_FAILED, type(exc).__name__)
            return False

    def _deny(self, conn: HTTPConnection) -> Response:
        if self.token is not None:
            if conn.scope["method"] == "GET" and "text/html" in conn.headers.get("accept", ""):
                login = conn.url_for("login").path
                return RedirectResponse(login, status_code=303)
            return Response(
                "sign in or send Authorization: Bearer <token>\n",
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        return Response("forbidden\n", status_code=403)


@dataclass(frozen=True, slots=True)
class _Page:
    rows: list[AuditRow]
    older: str | None
    newer: str | None


def create_app(
    *,
    dsn: str,
    authorize: Authorize,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    digest_key: str | None = None,
    checkpoint: str | None = None,
    page_size: int = PAGE_SIZE,
) -> Starlette:
    """Build the viewer as an ASGI app.

    Args:
        dsn: PostgreSQL connection string; SELECT on the audit table (and its digests table) is enough.
        authorize: ``authorize(request) -> bool``, sync or async; called for every request. Required.
            Pass a :class:`~audit_middleware.viewer.auth.TokenAuth` for the token sign-in of ``serve``.
        schema / table: the audit table.
        digest_key: the tamper-evidence HMAC key; enables "verify now" on the integrity page.
        checkpoint: an exported checkpoint file that verify compares the chain head with.
        page_size: rows per list page.

    Example:
        >>> async def staff_only(request):                                            # doctest: +SKIP
        ...     return request.user.is_authenticated and request.user.is_staff
        >>> app.mount("/audit", create_app(dsn=READER_DSN, authorize=staff_only))   # doctest: +SKIP
    """
    if authorize is None or not callable(authorize):
        raise ConfigurationError("authorize is required: a callable(request) -> bool (there is no open mode)")
    check_identifier("schema", schema)
    check_identifier("table", table)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
        raise ConfigurationError(f"page_size must be an integer in 1..1000, got {page_size!r}")
    state = ViewerState(
        dsn=dsn,
        authorize=authorize,
        schema=schema,
        table=table,
        digest_key=digest_key,
        checkpoint=checkpoint,
        page_size=page_size,
    )
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["clean"] = clean
    env.filters["time"] = _time
    templates = Jinja2Templates(env=env)
    env.globals["url_for"] = _url_path  # after Jinja2Templates, which sets an absolute-URL url_for
    views = _Views(state, templates)
    routes = [
        Route("/", views.events, name="events"),
        Route("/events/{event_id}", views.event, name="event"),
        Route("/investigate", views.investigate, name="investigate"),
        Route("/integrity", views.integrity, name="integrity"),
        Route("/integrity/verify", views.verify, methods=["POST"], name="verify"),
        Route("/export.csv", views.export_csv, name="export_csv"),
        Route("/export.jsonl", views.export_jsonl, name="export_jsonl"),
        Route("/live", views.live, name="live"),
        Route("/api/events", views.api_events, name="api_events"),
        Route("/login", views.login, methods=["GET", "POST"], name="login"),
        Route("/logout", views.logout, methods=["POST"], name="logout"),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await state.aclose()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.viewer = state
    app.add_middleware(_Guard, state=state)
    return app


@pass_context
def _url_path(context: dict[str, Any], name: str, /, **path_params: Any) -> str:
    """The path of a route (mount prefix included), not an absolute URL: right behind any proxy."""
    request: Request = context["request"]
    return request.url_for(name, **path_params).path


class _Views:
    def __init__(self, state: ViewerState, templates: Jinja2Templates) -> None:
        self.state, self.templates = state, templates

    # -- helpers ---------------------------------------------------------------------------------

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("error", None)
        context["signed_in"] = isinstance(self.state.authorize, TokenAuth) and COOKIE_NAME in request.cookies
        context["table"] = f"{self.state.schema}.{self.state.table}"
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def _link(self, request: Request, route: str, params: dict[str, str], **path: str) -> str:
        url = request.url_for(route, **path).path
        query = urlencode({k: v for k, v in params.items() if v != ""})
        return f"{url}?{query}" if query else url

    def _filter(self, request: Request) -> tuple[ViewFilter, str | None]:
        try:
            return parse_filter(request.query_params), None
        except AuditError as exc:
            return ViewFilter(), str(exc)

    # -- pages -----------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        f, error = self._filter(request)
        params = filter_params(f)
        page = _Page([], None, None)
        buckets: list[Any] = []
        chart: charts.Chart | None = None
        if error is None:
            try:
                page = await self._page(request, f, params)
                now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
                buckets, width = await chart_buckets(
                    await self.state.pool(), f, schema=self.state.schema, table=self.state.table, now=now
                )
                chart = charts.build(
                    buckets,
                    width,
                    lambda b: self._link(
                        request, "events", {**params, "since": format_time(b.start), "until": format_time(b.end)}
                    ),
                )
            except (asyncpg.PostgresError, AuditError) as exc:
                logger.warning(MSG_QUERY_FAILED, type(exc).__name__)
                error = f"the query failed: {exc}"
        return self._render(
            request,
            "events.html",
            status=400 if error and page.rows == [] and chart is None else 200,
            error=error,
            f=f,
            params=params,
            page=page,
            chart=chart,
            failed_suffix=FAILED_SUFFIX,
            link=lambda route, extra=None, **kw: self._link(request, route, {**(extra or {})}, **kw),
            filter_link=lambda **changes: self._link(request, "events", {**params, **changes}),
            only=lambda **values: self._link(request, "events", values),
            export_csv=self._link(request, "export_csv", params),
            export_jsonl=self._link(request, "export_jsonl", params),
            live=self._link(request, "live", {k: v for k, v in params.items() if k not in ("since", "until")}),
            investigate=self._link(request, "investigate", params),
            ranges=self._ranges(request, params),
        )

    def _ranges(self, request: Request, params: dict[str, str]) -> list[tuple[str, str]]:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0) + dt.timedelta(minutes=1)
        out = []
        for label, delta in (
            ("1 h", dt.timedelta(hours=1)),
            ("24 h", dt.timedelta(days=1)),
            ("7 d", dt.timedelta(days=7)),
            ("30 d", dt.timedelta(days=30)),
        ):
            out.append(
                (
                    label,
                    self._link(
                        request, "events", {**params, "since": format_time(now - delta), "until": format_time(now)}
                    ),
                )
            )
        rest = {k: v for k, v in params.items() if k not in ("since", "until")}
        out.append(("all", self._link(request, "events", rest)))
        return out

    async def _page(self, request: Request, f: ViewFilter, params: dict[str, str]) -> _Page:
        pool = await self.state.pool()
        size = self.state.page_size
        kw: dict[str, Any] = {"schema": self.state.schema, "table": self.state.table}
        before = request.query_params.get("before")
        after = request.query_params.get("after")
        if before:
            rows = await fetch_newer(pool, f, Cursor.parse(before), limit=size, **kw)
            if len(rows) < size:  # reached the newest rows: show the first page instead
                page = await fetch_page(pool, f, descending=True, page_size=size, **kw)
                rows, has_newer = page.rows, False
            else:
                has_newer = True
        else:
            page = await fetch_page(
                pool, f, descending=True, after=Cursor.parse(after) if after else None, page_size=size, **kw
            )
            rows, has_newer = page.rows, after is not None
        older = newer = None
        if rows and len(rows) == size:
            older = self._link(request, "events", {**params, "after": str(rows[-1].cursor)})
        if rows and has_newer:
            newer = self._link(request, "events", {**params, "before": str(rows[0].cursor)})
        return _Page(rows, older, newer)

    async def event(self, request: Request) -> Response:
        try:
            event_id = uuid.UUID(request.path_params["event_id"])
        except ValueError:
            return self._render(request, "message.html", status=404, title="Not found", message="no such event id")
        row = await fetch_event(await self.state.pool(), event_id, schema=self.state.schema, table=self.state.table)
        if row is None:
            return self._render(request, "message.html", status=404, title="Not found", message="no such event")
        metadata = row.metadata
        ip = metadata.get("ip") if isinstance(metadata, dict) else None
        user_ref = metadata.get("user_ref") if isinstance(metadata, dict) else None
        user = str(row.user_id) if row.user_id is not None else (user_ref if isinstance(user_ref, str) else None)
        events = request.url_for("events").path
        return self._render(
            request,
            "event.html",
            row=row,
            pretty=json.dumps(metadata, indent=2, ensure_ascii=False, sort_keys=True),
            user=user,
            ip=ip if isinstance(ip, str) else None,
            user_link=f"{events}?{urlencode({'user': user})}" if user else None,
            ip_link=f"{events}?{urlencode({'ip': ip})}" if isinstance(ip, str) else None,
            seen_link=self._link(request, "investigate", {"user": user}) if user else None,
            failed=bool(row.action and row.action.endswith(FAILED_SUFFIX)),
        )

    async def investigate(self, request: Request) -> Response:
        f, error = self._filter(request)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        if f.since is None and f.until is None:  # aggregates always run over a bounded range
            f = ViewFilter(**{**_fields(f), "since": now - dt.timedelta(days=1), "until": now})
        params = filter_params(f)
        stats = seen = None
        if error is None:
            pool = await self.state.pool()
            kw: dict[str, Any] = {"schema": self.state.schema, "table": self.state.table}
            try:
                stats = await collect_stats(pool, f, bucket="day", **kw)
                if f.user_id is not None or f.ref is not None:
                    seen = await first_seen_ips(pool, f.unbounded(), **kw)
            except asyncpg.PostgresError as exc:
                error = f"the query failed: {exc}"
        return self._render(
            request,
            "investigate.html",
            error=error,
            f=f,
            params=params,
            stats=stats,
            seen=seen,
            only=lambda **values: self._link(
                request, "events", {**values, "since": params.get("since", ""), "until": params.get("until", "")}
            ),
            here=request.url_for("investigate").path,
        )

    async def integrity(self, request: Request) -> Response:
        status = await self.state.integrity.status(
            await self.state.pool(), schema=self.state.schema, table=self.state.table
        )
        return self._render(
            request, "integrity.html", status=200, report=status, can_verify=self.state.integrity.can_verify
        )

    async def verify(self, request: Request) -> Response:
        await self.state.integrity.run_verify(await self.state.pool(), schema=self.state.schema, table=self.state.table)
        return RedirectResponse(request.url_for("integrity").path, status_code=303)

    async def live(self, request: Request) -> Response:
        f, error = self._filter(request)
        params = {k: v for k, v in filter_params(f).items() if k not in ("since", "until")}
        return self._render(
            request,
            "live.html",
            error=error,
            f=f,
            params=params,
            feed=self._link(request, "api_events", params),
            event_base=request.url_for("events").path.rstrip("/") + "/events/",
        )

    # -- data ------------------------------------------------------------------------------------

    async def api_events(self, request: Request) -> Response:
        """JSON: a page newest first (``after`` cursor), or the rows since ``newer_than`` for the live view."""
        f, error = self._filter(request)
        if error is not None:
            return JSONResponse({"error": error}, status_code=400)
        pool = await self.state.pool()
        kw: dict[str, Any] = {"schema": self.state.schema, "table": self.state.table}
        try:
            newer_than = request.query_params.get("newer_than")
            if newer_than:
                start = Cursor.parse(newer_than).created_at - LIVE_LOOKBACK
                live = ViewFilter(**{**_fields(f), "since": start, "until": None})
                page = await fetch_page(pool, live, page_size=LIVE_LIMIT, **kw)
                rows, nxt = page.rows, None
            else:
                after = request.query_params.get("after")
                page = await fetch_page(
                    pool,
                    f,
                    descending=True,
                    after=Cursor.parse(after) if after else None,
                    page_size=self.state.page_size,
                    **kw,
                )
                rows, nxt = page.rows, (str(page.next) if page.next else None)
        except AuditError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        newest = max((r.cursor for r in rows), key=lambda c: (c.created_at, c.id), default=None)
        return JSONResponse(
            {
                "rows": [r.to_dict() | {"cursor": str(r.cursor)} for r in rows],
                "next": nxt,
                "newest": None if newest is None else str(newest),
            }
        )

    async def _rows(self, request: Request) -> AsyncIterator[AuditRow]:
        f = parse_filter(request.query_params)
        pool = await self.state.pool()
        async for row in iter_events(
            pool, f, schema=self.state.schema, table=self.state.table, descending=True, page_size=1000
        ):
            yield row

    async def export_csv(self, request: Request) -> Response:
        try:
            parse_filter(request.query_params)
        except AuditError as exc:
            return Response(f"{exc}\n", status_code=400)

        async def body() -> AsyncIterator[str]:
            buffer = io.StringIO()
            out = csv.writer(buffer)
            out.writerow(("id", "user_id", "action", "metadata", "created_at"))
            async for row in self._rows(request):
                values = (
                    str(row.id),
                    "" if row.user_id is None else str(row.user_id),
                    row.action or "",
                    row.metadata_json or "",
                    row.created_at.isoformat() + "Z",
                )
                out.writerow(["'" + v if v.startswith(_FORMULA_START) else v for v in values])
                if buffer.tell() > 64_000:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

        return StreamingResponse(
            body(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="audit.csv"'},
        )

    async def export_jsonl(self, request: Request) -> Response:
        try:
            parse_filter(request.query_params)
        except AuditError as exc:
            return Response(f"{exc}\n", status_code=400)

        async def body() -> AsyncIterator[str]:
            lines: list[str] = []
            async for row in self._rows(request):
                lines.append(to_json_line(row) + "\n")
                if len(lines) >= 1000:
                    yield "".join(lines)
                    lines = []
            yield "".join(lines)

        return StreamingResponse(
            body(),
            media_type="application/x-ndjson",
            headers={"content-disposition": 'attachment; filename="audit.jsonl"'},
        )

    # -- sign-in (TokenAuth only) ----------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        auth = self.state.authorize
        if not isinstance(auth, TokenAuth):
            return Response("not found\n", status_code=404)
        if request.method == "GET":
            return self._render(request, "login.html")
        if auth.blocked(request):
            return self._render(request, "login.html", status=429, error="too many failed attempts: wait a minute")
        form = await request.form()
        token = form.get("token")
        if not isinstance(token, str) or not auth.check_token(token):
            await auth.failed(request, "wrong token in the sign-in form")
            return self._render(request, "login.html", status=401, error="wrong token")
        await auth.signed_in(request)
        response = RedirectResponse(request.url_for("events").path, status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            auth.cookie_value,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=request.scope.get("root_path") or "/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(request.url_for("login").path, status_code=303)
        response.delete_cookie(COOKIE_NAME, path=request.scope.get("root_path") or "/")
        return response


def _fields(f: ViewFilter) -> dict[str, Any]:
    return {name: getattr(f, name) for name in FIELDS}
