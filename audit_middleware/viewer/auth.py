"""The standalone viewer's credential: one token, a sign-in form, a cookie, and a rate limit.

``TokenAuth`` is an ``authorize`` callable for :func:`audit_middleware.viewer.create_app`. Scripts send
``Authorization: Bearer <token>``; a browser signs in once through the form and then carries an
``HttpOnly; SameSite=Strict`` cookie holding ``HMAC-SHA256(token, COOKIE_CONTEXT)``: a value derived
from the token, never the token itself (rotating the token signs every browser out). Comparisons
are constant-time over fixed-length digests, so neither the content nor the length of the token
leaks through timing.

Failed attempts (a wrong form token, a wrong bearer token) are counted per client address: after
``max_failures`` in ``window`` seconds further attempts from that address get 429 until the window
passes, and a global ceiling (ten times that) stops a spread-out guess. Each failure is recorded as a
``viewer_login_failed`` row through an :class:`~audit_middleware.AuditWriter` on ``audit_dsn`` (a
role that may INSERT, separate from the viewer's read-only one) when one is given, and always logged
(address only: never the presented token).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from ..writer.writer import AuditWriter

__all__ = ["COOKIE_NAME", "MIN_TOKEN_LENGTH", "TokenAuth"]

logger = logging.getLogger("audit_middleware.viewer")

COOKIE_NAME = "audit_viewer"
COOKIE_CONTEXT = b"audit_middleware.viewer.cookie.v1"
MIN_TOKEN_LENGTH = 16
LOGIN_FAILED = "viewer_login_failed"
LOGIN_OK = "viewer_login"
MSG_LOGIN_FAILED = "viewer sign-in failed from %s (%s)"
MSG_RATE_LIMITED = "viewer sign-in rate-limited for %s"
MSG_SIGNED_IN = "viewer signed in from %s"


def _digest(value: str | bytes) -> bytes:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).digest()


class _Limiter:
    """Failures per address in a sliding window; bounded memory (oldest addresses forgotten first)."""

    def __init__(self, max_failures: int, window: float, max_addresses: int = 10_000) -> None:
        self.max_failures, self.window, self.max_addresses = max_failures, window, max_addresses
        self._by_address: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _trim(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def blocked(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._trim(self._all, now)
        if len(self._all) >= self.max_failures * 10:
            return True
        times = self._by_address.get(address)
        if times is None:
            return False
        self._trim(times, now)
        return len(times) >= self.max_failures

    def fail(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if address not in self._by_address and len(self._by_address) >= self.max_addresses:
            del self._by_address[next(iter(self._by_address))]
        self._by_address.setdefault(address, deque()).append(now)
        self._all.append(now)


class TokenAuth:
    """Authorize requests carrying the token (bearer header or the sign-in cookie).

    Args:
        token: the shared secret (at least ``MIN_TOKEN_LENGTH`` characters).
        audit_dsn: where sign-in events are recorded (an INSERT-capable role); None: logged only.
        schema / table: the audit table those events go to.
        max_failures / window: the rate limit of failed attempts per client address.

    Example:
        >>> app = create_app(dsn=dsn, authorize=TokenAuth(os.environ["AUDIT_VIEWER_TOKEN"]))  # doctest: +SKIP
    """

    def __init__(
        self,
        token: str,
        *,
        audit_dsn: str | None = None,
        schema: str = "public",
        table: str = "user_audit_logs",
        max_failures: int = 5,
        window: float = 60.0,
    ) -> None:
        if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_LENGTH:
            raise ConfigurationError(f"the viewer token must be at least {MIN_TOKEN_LENGTH} characters")
        self._token_digest = _digest(token.strip())
        self._cookie = hmac.new(token.strip().encode(), COOKIE_CONTEXT, hashlib.sha256).hexdigest()
        self._cookie_digest = _digest(self._cookie)
        self._limiter = _Limiter(max_failures, window)
        self._audit_dsn, self._schema, self._table = audit_dsn, schema, table
        self._writer: AuditWriter | None = None

    def __repr__(self) -> str:
        return f"TokenAuth(audit={'yes' if self._audit_dsn else 'log only'})"

    @property
    def cookie_value(self) -> str:
        """The cookie a signed-in browser carries (derived from the token)."""
        return self._cookie

    def check_token(self, presented: str) -> bool:
        """True if ``presented`` is the token (constant time)."""
        return hmac.compare_digest(_digest(presented.strip()), self._token_digest)

    def _bearer(self, conn: HTTPConnection) -> str | None:
        scheme, _, value = conn.headers.get("authorization", "").partition(" ")
        return value if scheme.lower() == "bearer" and value else None

    async def __call__(self, conn: HTTPConnection) -> bool:
        """The ``authorize`` hook: a valid bearer token or sign-in cookie."""
        bearer = self._bearer(conn)
        if bearer is not None:
            address = client_address(conn)
            if self._limiter.blocked(address):
                return False
            if self.check_token(bearer):
                return True
            await self.failed(conn, "wrong bearer token")
            return False
        cookie = conn.cookies.get(COOKIE_NAME)
        return cookie is not None and hmac.compare_digest(_digest(cookie), self._cookie_digest)

    def blocked(self, conn: HTTPConnection) -> bool:
        """True while the client's address has too many recent failures."""
        blocked = self._limiter.blocked(client_address(conn))
        if blocked:
            logger.warning(MSG_RATE_LIMITED, client_address(conn))
        return blocked

    async def failed(self, conn: HTTPConnection, reason: str) -> None:
        """Count, log and record one failed attempt (never the presented value)."""
        address = client_address(conn)
        self._limiter.fail(address)
        logger.warning(MSG_LOGIN_FAILED, address, reason)
        await self._record(LOGIN_FAILED, conn, reason)

    async def signed_in(self, conn: HTTPConnection) -> None:
        """Log and record a successful sign-in."""
        logger.info(MSG_SIGNED_IN, client_address(conn))
        await self._record(LOGIN_OK, conn, None)

    async def _record(self, action: str, conn: HTTPConnection, reason: str | None) -> None:
        if self._audit_dsn is None:
            return
        if self._writer is None:
            from ..writer.writer import AuditWriter

            self._writer = AuditWriter(self._audit_dsn, schema=self._schema, table=self._table)
        metadata: dict[str, Any] = {"ip": client_address(conn), "path": conn.url.path}
        agent = conn.headers.get("user-agent")
        if agent:
            metadata["user_agent"] = agent[:300]
        if reason:
            metadata["reason"] = reason
        # record() never waits on the database: a slow or down audit database cannot stall sign-in
        await self._writer.record(action, metadata=metadata)

    async def aclose(self) -> None:
        """Flush and stop the sign-in events' writer."""
        if self._writer is not None:
            await self._writer.aclose()


def client_address(conn: HTTPConnection) -> str:
    """The peer address (the viewer trusts no forwarding header: it binds loopback by default)."""
    return conn.client.host if conn.client is not None else "unknown"
