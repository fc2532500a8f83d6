"""The viewer app over real PostgreSQL through httpx: list, filters, paging, chart, detail, export, mounting."""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import re
import uuid
from collections.abc import Callable
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from audit_middleware.errors import ConfigurationError
from audit_middleware.viewer import create_app
from tests.conftest import PgTarget
from tests.viewer.conftest import allow, open_client
from tests.viewer.data import ALICE, ANSI, RTL, XSS_IMG, XSS_SCRIPT, XSS_URL, Dataset

pytestmark = pytest.mark.anyio

Row = tuple[uuid.UUID, uuid.UUID | None, str, dict[str, Any], dt.datetime]
DETAIL = re.compile(r'href="[^"]*/events/([0-9a-f-]{36})"')


def listed(html: str) -> list[uuid.UUID]:
    """The event ids of a list page, in page order."""
    return [uuid.UUID(i) for i in DETAIL.findall(html)]


def newest_first(rows: list[Row]) -> list[uuid.UUID]:
    return [r[0] for r in sorted(rows, key=lambda r: (r[4], r[0]), reverse=True)]


def link(html: str, rel: str) -> str | None:
    match = re.search(rf'rel="{rel}"[^>]*href="([^"]+)"', html)
    return unescape(match.group(1)) if match else None


async def all_pages(client: httpx.AsyncClient, url: str) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    next_url: str | None = url
    while next_url is not None:
        response = await client.get(next_url)
        assert response.status_code == 200
        ids += listed(response.text)
        next_url = link(response.text, "next")
    return ids


# -- authorize is required and decides --------------------------------------------------------


def test_create_app_refuses_to_run_without_authorize(pg: PgTarget) -> None:
    with pytest.raises(ConfigurationError, match="authorize is required"):
        create_app(dsn=pg.dsn, authorize=None, schema=pg.schema)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["sync", "async", "raising", "truthy-not-true"])
async def test_authorize_denies_unless_it_returns_true(pg: PgTarget, dataset: Dataset, kind: str) -> None:
    async def async_no(request: Any) -> bool:
        return False

    def raising(request: Any) -> bool:
        raise RuntimeError("identity provider down")

    hooks: dict[str, Callable[[Any], Any]] = {
        "sync": lambda request: False,
        "async": async_no,
        "raising": raising,
        "truthy-not-true": lambda request: "yes",
    }
    app = create_app(dsn=pg.dsn, authorize=hooks[kind], schema=pg.schema)
    async with await open_client(app) as client:
        for path in ("/", f"/events/{dataset.rows[0][0]}", "/export.csv", "/export.jsonl", "/api/events", "/live"):
            response = await client.get(path)
            assert response.status_code == 403, path
            assert str(dataset.rows[0][0]) not in response.text
    await app.state.viewer.aclose()


async def test_async_authorize_sees_the_request(pg: PgTarget, dataset: Dataset) -> None:
    async def only_staff(request: Any) -> bool:
        return bool(request.headers.get("x-staff") == "yes")

    app = create_app(dsn=pg.dsn, authorize=only_staff, schema=pg.schema)
    async with await open_client(app) as client:
        assert (await client.get("/")).status_code == 403
        assert (await client.get("/", headers={"x-staff": "yes"})).status_code == 200
    await app.state.viewer.aclose()


# -- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/events/not-a-uuid", "/static/viewer.css", "/export.csv", "/nope", "/live"])
async def test_every_response_carries_the_security_headers(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_pages_have_no_inline_script_or_style(client: httpx.AsyncClient, dataset: Dataset) -> None:
    for path in ("/", "/live", "/investigate", "/integrity", f"/events/{dataset.rows[0][0]}"):
        html = (await client.get(path)).text
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], path
        assert "<style" not in html and " style=" not in html and "onclick" not in html, path


# -- the list: newest first, keyset pages --------------------------------------------------------


async def test_list_pages_newest_first_without_gaps_or_repeats(client: httpx.AsyncClient, dataset: Dataset) -> None:
    ids = await all_pages(client, "/")
    assert ids == newest_first(dataset.rows)


async def test_newer_link_returns_to_the_previous_page(client: httpx.AsyncClient) -> None:
    first = await client.get("/")
    older_url = link(first.text, "next")
    assert older_url is not None and "after=" in older_url
    second = await client.get(older_url)
    newer_url = link(second.text, "prev")
    assert newer_url is not None and "before=" in newer_url
    assert listed((await client.get(newer_url)).text) == listed(first.text)


async def test_rows_with_the_same_time_page_both_ways_without_gaps_or_repeats(pg: PgTarget, dataset: Dataset) -> None:
    tied = dataset.rows[0][4] - dt.timedelta(minutes=30)  # 25 rows share one created_at, across page edges
    conn = await pg.connect()
    try:
        await conn.executemany(
            f"INSERT INTO {pg.qualified} (id, action, metadata, created_at) VALUES ($1, 'tied', '{{}}', $2)",
            [(uuid.uuid4(), tied) for _ in range(25)],
        )
    finally:
        await conn.close()
    expected = [r[0] for r in await pg.fetch("SELECT id FROM {t} ORDER BY created_at DESC, id DESC")]
    app = create_app(dsn=pg.dsn, authorize=allow, schema=pg.schema, page_size=7)
    async with await open_client(app) as client:
        pages: list[list[uuid.UUID]] = []
        url: str | None = "/"
        while url is not None:  # older, to the end
            html = (await client.get(url)).text
            pages.append(listed(html))
            url = link(html, "next")
        assert [i for page in pages for i in page] == expected
        back: list[list[uuid.UUID]] = [listed(html)]
        url = link(html, "prev")
        while url is not None:  # newer, back to the first page
            html = (await client.get(url)).text
            back.append(listed(html))
            url = link(html, "prev")
        assert back[-1] == pages[0] and [i for page in reversed(back) for i in page][:21] == expected[:21]
        assert sorted({i for page in back for i in page}) == sorted(expected)
    await app.state.viewer.aclose()


# -- filters -------------------------------------------------------------------------------------


def _in(network: str, meta: dict[str, Any]) -> bool:
    try:
        return ipaddress.ip_address(meta.get("ip", "")) in ipaddress.ip_network(network)
    except ValueError:
        return False


FILTERS: list[tuple[dict[str, str], Callable[[Row], bool]]] = [
    ({"user": str(ALICE)}, lambda r: r[1] == ALICE),
    ({"user": "github|octocat"}, lambda r: r[3].get("user_ref") == "github|octocat"),
    ({"action": "login"}, lambda r: r[2] == "login"),
    ({"action": "login*"}, lambda r: r[2].startswith("login")),
    ({"failed": "1"}, lambda r: r[2].endswith("_failed")),
    ({"ip": "203.0.113.7"}, lambda r: r[3].get("ip") == "203.0.113.7"),
    ({"ip": "10.0.0.0/30"}, lambda r: _in("10.0.0.0/30", r[3])),
    ({"ip": "2001:db8::/32"}, lambda r: _in("2001:db8::/32", r[3])),
    ({"q": "VICTIM1@"}, lambda r: "victim1@" in json.dumps(r[3])),
    ({"q": "100%_"}, lambda r: "100%_" in json.dumps(r[3])),  # LIKE wildcards are literal
    (
        {"action": "login*", "failed": "1", "ip": "203.0.113.0/24"},
        lambda r: r[2] == "login_failed" and _in("203.0.113.0/24", r[3]),
    ),
]


@pytest.mark.parametrize(("params", "keep"), FILTERS, ids=[json.dumps(p) for p, _ in FILTERS])
async def test_each_filter_narrows_the_list_to_exactly_its_rows(
    client: httpx.AsyncClient, dataset: Dataset, params: dict[str, str], keep: Callable[[Row], bool]
) -> None:
    expected = newest_first([r for r in dataset.rows if keep(r)])
    assert 0 < len(expected) < len(dataset.rows)
    assert await all_pages(client, f"/?{httpx.QueryParams(params)}") == expected


async def test_time_range_filter_is_since_inclusive_until_exclusive(
    client: httpx.AsyncClient, dataset: Dataset
) -> None:
    times = sorted({r[4] for r in dataset.rows})
    since, until = times[10], times[40]
    expected = newest_first([r for r in dataset.rows if since <= r[4] < until])
    params = httpx.QueryParams({"since": since.isoformat(), "until": until.isoformat()})
    assert await all_pages(client, f"/?{params}") == expected


async def test_filters_are_kept_in_the_links(client: httpx.AsyncClient) -> None:
    html = (await client.get("/?action=login*&failed=1&ip=203.0.113.0/24")).text
    older = link(html, "next")
    assert older is not None
    query = parse_qs(urlsplit(older).query)
    assert query["action"] == ["login*"] and query["failed"] == ["1"] and query["ip"] == ["203.0.113.0/24"]
    assert 'value="login*"' in html and 'value="203.0.113.0/24"' in html


@pytest.mark.parametrize(
    "query",
    ["ip=10.0.0.0/99", "since=yesterday", "until=2026-13-01", "since=2026-02-01&until=2026-01-01", "after=x|y"],
)
async def test_a_bad_filter_is_explained_not_a_server_error(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/?{query}")
    assert response.status_code == 400
    assert 'class="error"' in response.text
    assert listed(response.text) == []


async def test_a_malformed_stored_ip_does_not_break_the_cidr_filter(client: httpx.AsyncClient) -> None:
    # the dataset has a row with metadata.ip = "not-an-ip" and one with markup in it
    response = await client.get("/?ip=0.0.0.0/0")
    assert response.status_code == 200
    assert 'class="error"' not in response.text


# -- chart -------------------------------------------------------------------------------------


def bars(html: str) -> list[tuple[str, int, int]]:
    """(href, total, failed) of every bar, read from the bar's title."""
    found = re.findall(r'<a class="bar-link" href="([^"]+)"><title>[^<]*: (\d+) events, (\d+) failed</title>', html)
    return [(unescape(h), int(total), int(failed)) for h, total, failed in found]


async def test_chart_counts_every_row_of_the_range_split_failed_and_succeeded(
    client: httpx.AsyncClient, dataset: Dataset
) -> None:
    since = min(r[4] for r in dataset.rows).replace(second=0)
    until = max(r[4] for r in dataset.rows) + dt.timedelta(minutes=1)
    params = httpx.QueryParams({"since": since.isoformat(), "until": until.isoformat()})
    html = (await client.get(f"/?{params}")).text
    found = bars(html)
    assert len(found) > 5
    assert sum(total for _, total, _ in found) == len(dataset.rows)
    assert sum(failed for _, _, failed in found) == sum(1 for r in dataset.rows if r[2].endswith("_failed"))
    assert '<rect class="failed"' in html and '<rect class="ok"' in html


async def test_clicking_a_bar_narrows_the_list_to_the_bar(client: httpx.AsyncClient, dataset: Dataset) -> None:
    since = min(r[4] for r in dataset.rows).replace(second=0)
    until = max(r[4] for r in dataset.rows) + dt.timedelta(minutes=1)
    html = (await client.get(f"/?{httpx.QueryParams({'since': since.isoformat(), 'until': until.isoformat()})}")).text
    href, total, _ = max(bars(html), key=lambda b: b[1])
    query = parse_qs(urlsplit(href).query)
    start, end = dt.datetime.fromisoformat(query["since"][0]), dt.datetime.fromisoformat(query["until"][0])
    assert since <= start < end <= until
    assert len(await all_pages(client, href)) == total == sum(1 for r in dataset.rows if start <= r[4] < end)


async def test_chart_keeps_the_other_filters(client: httpx.AsyncClient) -> None:
    html = (await client.get("/?action=password_reset")).text
    found = bars(html)
    assert sum(total for _, total, _ in found) == 25
    assert all(parse_qs(urlsplit(h).query)["action"] == ["password_reset"] for h, _, _ in found)


# -- detail --------------------------------------------------------------------------------------


async def test_event_detail_shows_every_column_and_related_links(client: httpx.AsyncClient, dataset: Dataset) -> None:
    event_id, user, action, _meta, created = next(r for r in dataset.rows if r[2] == "password_reset")
    html = (await client.get(f"/events/{event_id}")).text
    assert str(event_id) in html and str(user) in html and action in html
    assert created.strftime("%Y-%m-%d %H:%M:%S") in html
    assert "&#34;ip&#34;: &#34;192.168.1.20&#34;" in html or '"ip": "192.168.1.20"' in unescape(html)
    assert f"?user={user}" in html and "?ip=192.168.1.20" in html


async def test_the_request_column_reads_metadata_http_and_the_older_top_level_keys(client: httpx.AsyncClient) -> None:
    reset = (await client.get("/?action=password_reset")).text
    assert '<span class="method">POST</span> /reset <span class="status">200</span>' in reset
    assert "email_link" not in reset  # metadata.method is the reset's method, not the request's
    logout = (await client.get("/?action=logout")).text
    assert '<span class="method">POST</span> /logout <span class="status">204</span>' in logout


@pytest.mark.parametrize("path", ["/events/not-a-uuid", f"/events/{uuid.UUID(int=7)}"])
async def test_unknown_event_is_404(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


# -- hostile values ------------------------------------------------------------------------------


async def test_planted_markup_urls_bidi_and_ansi_are_inert_in_every_page(
    client: httpx.AsyncClient, dataset: Dataset
) -> None:
    planted = next(r[0] for r in dataset.rows if r[2] == XSS_SCRIPT)
    pages = ["/", f"/events/{planted}", "/investigate", f"/?user={httpx.QueryParams({'u': XSS_IMG})['u']}"]
    for path in pages:
        html = (await client.get(path)).text
        for raw in (XSS_SCRIPT, XSS_IMG, "<img", 'onerror="', "\u202e", "\x1b", "\x07"):
            assert raw not in html, (path, raw)
        assert not re.search(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", html, re.I), path
    detail = (await client.get(f"/events/{planted}")).text
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in detail
    assert '<span class="ctl">\\u202e</span>' in detail  # the override is shown, not applied
    assert "\\u001b[31mred" in detail  # json escapes ESC; the page shows the escape


async def test_planted_values_stay_exact_in_the_json_api(client: httpx.AsyncClient, dataset: Dataset) -> None:
    body = (await client.get("/api/events", params={"action": XSS_SCRIPT})).json()
    assert [r["metadata"]["identifier"] for r in body["rows"]] == [RTL]
    assert body["rows"][0]["metadata"]["note"] == ANSI and body["rows"][0]["metadata"]["path"] == XSS_URL


# -- export and API ------------------------------------------------------------------------------


async def test_csv_export_streams_the_filtered_rows_newest_first(client: httpx.AsyncClient, dataset: Dataset) -> None:
    response = await client.get("/export.csv?action=login_failed")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["id", "user_id", "action", "metadata", "created_at"]
    expected = newest_first([r for r in dataset.rows if r[2] == "login_failed"])
    assert [uuid.UUID(r[0]) for r in rows[1:]] == expected


async def test_csv_export_defuses_spreadsheet_formulas(pg: PgTarget, client: httpx.AsyncClient) -> None:
    conn = await pg.connect()
    try:
        await conn.execute(f"INSERT INTO {pg.qualified} (action, metadata) VALUES ('=HYPERLINK(\"x\")', '{{}}')")
    finally:
        await conn.close()
    rows = list(csv.reader(io.StringIO((await client.get("/export.csv?action=*")).text)))
    assert [r[2] for r in rows if "HYPERLINK" in r[2]] == ['\'=HYPERLINK("x")']


async def test_jsonl_export_is_the_stored_values(client: httpx.AsyncClient, dataset: Dataset) -> None:
    response = await client.get("/export.jsonl?user=" + str(ALICE))
    lines = [json.loads(line) for line in response.text.splitlines()]
    expected = [r for r in dataset.rows if r[1] == ALICE]
    assert [uuid.UUID(x["id"]) for x in lines] == newest_first(expected)
    by_id = {r[0]: r for r in expected}
    assert all(x["metadata"] == by_id[uuid.UUID(x["id"])][3] for x in lines)


async def test_api_pages_with_cursor_and_returns_rows_newer_than_a_cursor(
    client: httpx.AsyncClient, dataset: Dataset
) -> None:
    first = (await client.get("/api/events")).json()
    second = (await client.get("/api/events", params={"after": first["next"]})).json()
    ids = [uuid.UUID(r["id"]) for r in first["rows"] + second["rows"]]
    assert ids == newest_first(dataset.rows)[:40]
    oldest_of_first = first["rows"][-1]["cursor"]
    since = dt.datetime.fromisoformat(oldest_of_first.split("|")[0]) - dt.timedelta(seconds=10)
    live = (await client.get("/api/events", params={"newer_than": oldest_of_first})).json()
    assert [uuid.UUID(r["id"]) for r in live["rows"]] == list(
        reversed(newest_first([r for r in dataset.rows if r[4] >= since]))
    )
    assert live["newest"] == first["rows"][0]["cursor"]


# -- mounting ------------------------------------------------------------------------------------


async def test_mounted_under_a_prefix_every_link_keeps_it(pg: PgTarget, dataset: Dataset) -> None:
    viewer = create_app(dsn=pg.dsn, authorize=allow, schema=pg.schema, page_size=20)
    parent = Starlette(routes=[Mount("/audit", app=viewer)])
    async with await open_client(parent) as client:
        html = (await client.get("/audit/")).text
        hrefs = re.findall(r'(?:href|src|action)="([^"]+)"', html)
        local = [h for h in hrefs if not h.startswith("data:")]
        assert local and all(h.startswith("/audit/") for h in local), [h for h in local if not h.startswith("/audit")]
        for href in {unescape(h) for h in local}:
            assert (await client.get(href)).status_code == 200, href
    await viewer.state.viewer.aclose()


# -- investigations and integrity ----------------------------------------------------------------


async def test_investigate_shows_failed_login_bursts_and_actions(client: httpx.AsyncClient) -> None:
    html = unescape((await client.get("/investigate")).text)
    burst = re.search(r">203\.0\.113\.7</a></td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)<", html)
    assert burst is not None and burst.groups() == ("40", "3")  # 40 failures, 3 identifiers tried
    victim = re.search(r">victim0@example\.com</a></td><td class=\"num\">(\d+)<", html)
    assert victim is not None and victim.group(1) == "14"
    assert re.search(r">password_reset</a></td><td class=\"num\">25<", html)


async def test_investigate_lists_a_users_ips_by_first_seen(client: httpx.AsyncClient, dataset: Dataset) -> None:
    html = unescape((await client.get(f"/investigate?user={ALICE}")).text)
    section = html.split("This user's IPs", 1)[1]
    seen = re.findall(r">([0-9.]+)</a></td><td>([0-9: -]+)</td>", section)
    firsts: dict[str, dt.datetime] = {}
    for r in dataset.rows:
        if r[1] == ALICE:
            firsts[r[3]["ip"]] = min(firsts.get(r[3]["ip"], r[4]), r[4])
    expected = sorted(firsts, key=lambda ip: firsts[ip], reverse=True)
    assert [ip for ip, _ in seen] == expected


async def test_integrity_page_says_when_digests_are_not_enabled(client: httpx.AsyncClient) -> None:
    html = (await client.get("/integrity")).text
    assert "No digests table" in html
