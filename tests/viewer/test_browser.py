"""The viewer in a real headless chromium against the real ``audit-middleware serve`` (uvicorn, 127.0.0.1).

One server and one browser for the module; the pages are checked for console errors (CSP
violations and script errors are SEVERE entries) after every visit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from audit_middleware.store.schema import quote_ident
from tests.conftest import _create_schema, _drop_schema
from tests.viewer.browser import console_errors, serve, start_browser
from tests.viewer.data import RTL, XSS_SCRIPT, insert, standard

TOKEN = "browser-test-token-0123456789"


@pytest.fixture(scope="module")
def schema(pg_dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_schema(pg_dsn, name, users=True))

    async def fill() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await insert(conn, name, standard(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=5)))
        finally:
            await conn.close()

    asyncio.run(fill())
    try:
        yield name
    finally:
        asyncio.run(_drop_schema(pg_dsn, name))


@pytest.fixture(scope="module")
def base(pg_dsn: str, schema: str) -> Iterator[str]:
    with serve(pg_dsn, schema, TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(browser: webdriver.Chrome, base: str, token: str) -> None:
    browser.get(base + "/login")
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(field))  # the answer page loaded


@pytest.fixture
def signed_in(browser: webdriver.Chrome, base: str) -> webdriver.Chrome:
    if not browser.get_cookies():
        sign_in(browser, base, TOKEN)
    console_errors(browser)  # start each test with an empty console
    return browser


def actions(browser: webdriver.Chrome) -> list[str]:
    return [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#events tbody td.action")]


def assert_inert(browser: webdriver.Chrome) -> None:
    assert browser.execute_script("return window.__xss === undefined")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is what raises
    assert console_errors(browser) == []


def test_a_wrong_token_is_refused_and_the_right_one_signs_in(browser: webdriver.Chrome, base: str) -> None:
    browser.delete_all_cookies()
    browser.get(base + "/")
    assert urlsplit(browser.current_url).path == "/login"  # sent to sign in
    sign_in(browser, base, "wrong-token-wrong-token")
    assert "wrong token" in browser.find_element(By.CLASS_NAME, "error").text
    assert browser.get_cookies() == []
    console_errors(browser)  # the 401 response itself is logged as a failed resource load
    sign_in(browser, base, TOKEN)
    assert urlsplit(browser.current_url).path == "/"
    assert browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    cookie = browser.get_cookies()[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] != TOKEN
    assert console_errors(browser) == []


def test_the_list_loads_without_console_errors_and_the_chart_renders(signed_in: webdriver.Chrome, base: str) -> None:
    signed_in.get(base + "/")
    assert len(signed_in.find_elements(By.CSS_SELECTOR, "#events tbody tr")) == 50
    chart = signed_in.find_element(By.ID, "chart")
    assert chart.size["height"] > 100 and chart.size["width"] > 500
    assert signed_in.find_elements(By.CSS_SELECTOR, "#chart rect.failed")
    assert signed_in.find_elements(By.CSS_SELECTOR, "#chart rect.ok")
    failed = signed_in.find_element(By.CSS_SELECTOR, "#chart rect.failed")
    ok = signed_in.find_element(By.CSS_SELECTOR, "#chart rect.ok")
    assert failed.value_of_css_property("fill") != ok.value_of_css_property("fill")  # visibly apart
    assert console_errors(signed_in) == []


def test_filters_narrow_the_list(signed_in: webdriver.Chrome, base: str) -> None:
    signed_in.get(base + "/")
    field = signed_in.find_element(By.NAME, "action")
    field.send_keys("password*")
    field.submit()
    WebDriverWait(signed_in, 10).until(expected_conditions.staleness_of(field))
    assert "action=password" in signed_in.current_url
    assert set(actions(signed_in)) == {"password_reset"} and len(actions(signed_in)) == 25
    signed_in.find_element(By.NAME, "action").clear()
    box = signed_in.find_element(By.NAME, "failed")
    box.click()
    box.submit()
    WebDriverWait(signed_in, 10).until(expected_conditions.staleness_of(box))
    assert "failed=1" in signed_in.current_url
    assert set(actions(signed_in)) == {"login_failed"}
    assert console_errors(signed_in) == []


def test_clicking_a_bar_narrows_the_range(signed_in: webdriver.Chrome, base: str) -> None:
    signed_in.get(base + "/?action=login_failed")
    bar = signed_in.find_elements(By.CSS_SELECTOR, "#chart a.bar-link rect.failed")[-1]
    signed_in.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", bar)
    WebDriverWait(signed_in, 10).until(expected_conditions.staleness_of(bar))
    query = parse_qs(urlsplit(signed_in.current_url).query)
    since, until = (dt.datetime.fromisoformat(query[k][0]) for k in ("since", "until"))
    assert dt.timedelta(0) < until - since <= dt.timedelta(hours=1) and query["action"] == ["login_failed"]
    assert 0 < len(actions(signed_in)) < 40
    assert console_errors(signed_in) == []


def test_planted_rows_stay_inert_in_list_detail_and_live_view(signed_in: webdriver.Chrome, base: str) -> None:
    signed_in.get(base + "/")
    assert_inert(signed_in)
    cell = next(td for td in signed_in.find_elements(By.CSS_SELECTOR, "td.action") if td.text == XSS_SCRIPT)
    assert cell.text == XSS_SCRIPT  # shown as text
    assert any("\\u202e" in td.text for td in signed_in.find_elements(By.CSS_SELECTOR, "td.user"))
    cell.find_element(By.XPATH, "../td[@class='more']/a").click()
    WebDriverWait(signed_in, 10).until(expected_conditions.staleness_of(cell))
    assert "/events/" in signed_in.current_url
    assert "javascript:window.__xss=3" in signed_in.find_element(By.CSS_SELECTOR, "pre.json").text
    assert not signed_in.find_elements(By.CSS_SELECTOR, "a[href^='javascript']")
    assert_inert(signed_in)
    signed_in.get(base + "/live")
    WebDriverWait(signed_in, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#live tbody tr")) >= 50)
    users = [td.text for td in signed_in.find_elements(By.CSS_SELECTOR, "#live td.user")]
    assert RTL not in users and any("\\u202e" in u for u in users)
    assert_inert(signed_in)


def test_the_live_view_shows_a_new_row(signed_in: webdriver.Chrome, base: str, pg_dsn: str, schema: str) -> None:
    signed_in.get(base + "/live?action=live_probe")
    WebDriverWait(signed_in, 10).until(lambda d: d.find_element(By.ID, "live-status").text.startswith("updated"))
    assert signed_in.find_elements(By.CSS_SELECTOR, "#live tbody tr") == []

    async def add() -> Any:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return await conn.fetchval(
                f"INSERT INTO {quote_ident(schema)}.user_audit_logs (action, metadata, created_at) "
                "VALUES ('live_probe', '{\"ip\": \"10.1.2.3\"}', now() AT TIME ZONE 'utc') RETURNING id"
            )
        finally:
            await conn.close()

    new_id = asyncio.run(add())
    WebDriverWait(signed_in, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#live tbody tr"))
    row = signed_in.find_element(By.CSS_SELECTOR, "#live tbody tr")
    assert "live_probe" in row.text and "10.1.2.3" in row.text
    assert str(row.find_element(By.TAG_NAME, "a").get_attribute("href")).endswith(f"/events/{new_id}")
    assert console_errors(signed_in) == []


def test_a_missing_chromium_fails_loudly_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="run scripts/browser-deps"):
        start_browser()
