"""The viewer's HTML pages: the list with its chart, an event, investigations, integrity, live, sign-in."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import asyncpg
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ..errors import AuditError
from ..store.query import AuditRow, Cursor, fetch_page
from ..store.stats import collect_stats
from . import charts
from .auth import COOKIE_NAME, TokenAuth
from .queries import (
    FAILED_SUFFIX,
    ViewFilter,
    chart_buckets,
    fetch_event,
    fetch_newer,
    fields,
    filter_params,
    first_seen_ips,
    format_time,
    parse_filter,
)

if TYPE_CHECKING:
    from .app import ViewerState

__all__ = ["Pages", "read_filter"]

logger = logging.getLogger("audit_middleware.viewer")

MSG_QUERY_FAILED = "viewer query failed: %s"


def read_filter(request: Request) -> tuple[ViewFilter, str | None]:
    """The request's filter, or an empty one and the message saying what could not be read."""
    try:
        return parse_filter(request.query_params), None
    except AuditError as exc:
        return ViewFilter(), str(exc)


@dataclass(frozen=True, slots=True)
class _Page:
    rows: list[AuditRow]
    older: str | None
    newer: str | None


class Pages:
    """The page endpoints (Starlette request -> response), sharing the state and the templates."""

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

    # -- pages -----------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        f, error = read_filter(request)
        params = filter_params(f)
        page = _Page([], None, None)
        chart: charts.Chart | None = None
        status = 400 if error else 200
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
            except AuditError as exc:  # a malformed cursor in after= / before=
                error, status = str(exc), 400
            except asyncpg.PostgresError as exc:
                logger.warning(MSG_QUERY_FAILED, type(exc).__name__)
                error, status = f"the query failed: {exc}", 503
        return self._render(
            request,
            "events.html",
            status=status,
            error=error,
            f=f,
            params=params,
            page=page,
            chart=chart,
            failed_suffix=FAILED_SUFFIX,
            filter_link=lambda **changes: self._link(request, "events", {**params, **changes}),
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
            rows, has_newer = await fetch_newer(pool, f, Cursor.parse(before), limit=size, **kw)
            if len(rows) < size:  # fewer than a page newer: show the (full) first page instead
                page = await fetch_page(pool, f, descending=True, page_size=size, **kw)
                rows, has_newer = page.rows, False
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
        f, error = read_filter(request)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        if f.since is None and f.until is None:  # aggregates always run over a bounded range
            f = ViewFilter(**{**fields(f), "since": now - dt.timedelta(days=1), "until": now})
        params = filter_params(f)
        stats = seen = None
        if error is None:
            pool = await self.state.pool()
            kw: dict[str, Any] = {"schema": self.state.schema, "table": self.state.table}
            try:
                stats = await collect_stats(pool, f, bucket="day", **kw)
                if f.user is not None or f.user_id is not None:
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
        f, error = read_filter(request)
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
