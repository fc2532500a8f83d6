"""The viewer: a read-only Starlette app over the audit table (list, chart, detail, investigations,
integrity, export, live view).

It mounts anywhere (``app.mount("/audit", create_app(...))``): every link is built with
``request.url_for``, so the mount prefix (``root_path``) is kept. Every request goes through
``authorize`` first (``guard.py``; there is no open mode). The pages are in ``views.py``, the JSON
feed and the exports in ``exports.py``, the SQL in ``queries.py``.

The database pool is opened on the first request, with ``default_transaction_read_only = on``: the
viewer never writes to the audit table whatever role it is given. Mounted apps do not get their own
lifespan in Starlette, so the parent app may call ``await viewer.state.viewer.aclose()`` on shutdown;
run standalone (``audit-middleware serve``) that happens by itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..errors import ConfigurationError
from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, check_identifier, mask_dsn
from . import integrity
from .auth import TokenAuth
from .exports import Feeds
from .guard import Authorize, Guard
from .views import Pages

__all__ = ["ViewerState", "clean", "create_app"]

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
# Characters that reorder or hide text (bidi overrides, zero-width), and terminal controls (ANSI ESC):
# shown as visible \uXXXX escapes so a planted value can neither spoof nor break the page (tab and newline
# stay: HTML shows them as spaces, and the pretty JSON needs its newlines).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


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
    pages, feeds = Pages(state, templates), Feeds(state)
    routes = [
        Route("/", pages.events, name="events"),
        Route("/events/{event_id}", pages.event, name="event"),
        Route("/investigate", pages.investigate, name="investigate"),
        Route("/integrity", pages.integrity, name="integrity"),
        Route("/integrity/verify", pages.verify, methods=["POST"], name="verify"),
        Route("/live", pages.live, name="live"),
        Route("/login", pages.login, methods=["GET", "POST"], name="login"),
        Route("/logout", pages.logout, methods=["POST"], name="logout"),
        Route("/api/events", feeds.api_events, name="api_events"),
        Route("/export.csv", feeds.export_csv, name="export_csv"),
        Route("/export.jsonl", feeds.export_jsonl, name="export_jsonl"),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await state.aclose()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.viewer = state
    app.add_middleware(Guard, authorize=authorize)
    return app


@pass_context
def _url_path(context: dict[str, Any], name: str, /, **path_params: Any) -> str:
    """The path of a route (mount prefix included), not an absolute URL: right behind any proxy."""
    request: Request = context["request"]
    return request.url_for(name, **path_params).path
