"""The viewer's data endpoints: the JSON feed (pages and the live view) and the streamed exports."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import AuditError
from ..store.export import to_json_line
from ..store.query import AuditRow, Cursor, fetch_page, iter_events
from .queries import ViewFilter, fields, parse_filter
from .views import read_filter

if TYPE_CHECKING:
    from .app import ViewerState

__all__ = ["Feeds"]

LIVE_LIMIT = 200
LIVE_LOOKBACK = dt.timedelta(seconds=10)  # rows committed late (see store.follow) still show up
EXPORT_PAGE = 1000
# Cells a spreadsheet would run as a formula (CSV injection) get a leading quote in the CSV export.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class Feeds:
    """The JSON and export endpoints."""

    def __init__(self, state: ViewerState) -> None:
        self.state = state

    # -- data ------------------------------------------------------------------------------------

    async def api_events(self, request: Request) -> Response:
        """JSON: a page newest first (``after`` cursor), or the rows since ``newer_than`` for the live view."""
        f, error = read_filter(request)
        if error is not None:
            return JSONResponse({"error": error}, status_code=400)
        pool = await self.state.pool()
        kw: dict[str, Any] = {"schema": self.state.schema, "table": self.state.table}
        try:
            newer_than = request.query_params.get("newer_than")
            if newer_than:
                start = Cursor.parse(newer_than).created_at - LIVE_LOOKBACK
                live = ViewFilter(**{**fields(f), "since": start, "until": None})
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
            pool, f, schema=self.state.schema, table=self.state.table, descending=True, page_size=EXPORT_PAGE
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
                out.writerow(["'" + v if v.startswith(FORMULA_START) else v for v in values])
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
