"""The token sign-in: bearer, form and cookie, constant-time checks, rate limit, audited failures."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from audit_middleware.errors import ConfigurationError
from audit_middleware.viewer import TokenAuth, create_app
from audit_middleware.viewer.auth import COOKIE_NAME
from tests.conftest import PgTarget
from tests.viewer.conftest import open_client
from tests.viewer.data import Dataset

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-viewer-token-0123456789"
HTML = {"accept": "text/html"}


@pytest.fixture
async def auth(pg: PgTarget) -> AsyncIterator[TokenAuth]:
    """TokenAuth recording sign-ins into the test schema's audit table (a writer DSN of its own)."""
    token_auth = TokenAuth(TOKEN, audit_dsn=pg.dsn, schema=pg.schema, max_failures=3, window=60)
    yield token_auth
    await token_auth.aclose()


@pytest.fixture
async def client(pg: PgTarget, dataset: Dataset, auth: TokenAuth) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(dsn=pg.dsn, authorize=auth, schema=pg.schema)
    async with await open_client(app) as c:
        yield c
    await app.state.viewer.aclose()


@pytest.mark.parametrize("token", ["", "short", " " * 20])
def test_token_auth_refuses_a_weak_token(token: str) -> None:
    with pytest.raises(ConfigurationError, match="at least 16"):
        TokenAuth(token)


async def test_no_credential_gets_401_and_a_browser_is_sent_to_sign_in(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/events")).status_code == 401
    response = await client.get("/", headers=HTML)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert (await client.get("/login")).status_code == 200
    assert (await client.get("/static/viewer.css")).status_code == 200


async def test_bearer_token_lets_scripts_in_and_a_wrong_one_does_not(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/events", headers={"authorization": f"Bearer {TOKEN}"})).status_code == 200
    assert (await client.get("/api/events", headers={"authorization": f"Bearer {TOKEN}x"})).status_code == 401
    assert (await client.get("/api/events", headers={"authorization": f"Basic {TOKEN}"})).status_code == 401


async def test_sign_in_sets_a_strict_httponly_cookie_that_is_not_the_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/login", data={"token": TOKEN})
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert TOKEN not in cookie
    assert (await client.get("/", headers=HTML)).status_code == 200  # the client keeps the cookie
    out = await client.post("/logout")
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    assert (await client.get("/api/events")).status_code == 401


async def test_a_forged_cookie_is_refused(client: httpx.AsyncClient) -> None:
    client.cookies.set(COOKIE_NAME, TOKEN)  # the token itself is not the cookie value
    assert (await client.get("/api/events")).status_code == 401


async def test_wrong_token_is_refused_and_recorded_without_the_token(
    client: httpx.AsyncClient, auth: TokenAuth, pg: PgTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await client.post("/login", data={"token": "not-the-token-but-long"})
    assert response.status_code == 401 and "wrong token" in response.text
    assert "set-cookie" not in response.headers
    await client.get("/api/events", headers={"authorization": "Bearer guessed-token-123456"})
    await client.post("/login", data={"token": TOKEN})
    await auth.aclose()  # flush the writer
    rows = await pg.fetch(
        "SELECT action, metadata::text AS m FROM {t} WHERE action LIKE 'viewer_%' ORDER BY created_at"
    )
    assert [r["action"] for r in rows] == ["viewer_login_failed", "viewer_login_failed", "viewer_login"]
    assert all('"ip": "10.9.8.7"' in r["m"] for r in rows)
    for text in [r["m"] for r in rows] + [rec.getMessage() for rec in caplog.records]:
        assert "not-the-token" not in text and "guessed-token" not in text and TOKEN not in text


async def test_failed_sign_ins_are_rate_limited_per_address(pg: PgTarget, dataset: Dataset, auth: TokenAuth) -> None:
    app = create_app(dsn=pg.dsn, authorize=auth, schema=pg.schema)
    async with await open_client(app) as attacker:
        for _ in range(3):
            assert (await attacker.post("/login", data={"token": "wrong-token-xxxxxxxx"})).status_code == 401
        blocked = await attacker.post("/login", data={"token": TOKEN})  # even the right token, for the window
        assert blocked.status_code == 429 and "set-cookie" not in blocked.headers
        bearer = await attacker.get("/api/events", headers={"authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 401
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.1.1.1", 1)), base_url="http://v")
    async with other:
        assert (await other.post("/login", data={"token": TOKEN})).status_code == 303
    await app.state.viewer.aclose()


async def test_without_a_writer_dsn_failures_are_only_logged(
    pg: PgTarget, dataset: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    auth = TokenAuth(TOKEN)
    app = create_app(dsn=pg.dsn, authorize=auth, schema=pg.schema)
    async with await open_client(app) as client:
        assert (await client.post("/login", data={"token": "nope-nope-nope-nope"})).status_code == 401
    await app.state.viewer.aclose()
    assert any("sign-in failed from 10.9.8.7" in r.getMessage() for r in caplog.records)
    assert await pg.fetch("SELECT 1 FROM {t} WHERE action LIKE 'viewer_%'") == []
