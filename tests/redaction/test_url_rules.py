"""URL and path-template rules one at a time (found by mutation testing, issue 15)."""

from __future__ import annotations

import pytest

from audit_middleware.redaction.redactor import REDACTED, Redactor

TOKEN = "Ab1Ab1Ab1Ab1Ab1Ab1Ab"  # 20 characters of mixed case and digits: token-looking


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # userinfo goes, up to the last "@" of the authority, even with an "X" or an "@" in the password
        ("https://Xavier:pw@host.example/", "https://host.example/"),
        ("https://u:p@ss@host.example/a", "https://host.example/a"),
        ("https://u:p@h.example/?next=https://x.example/", "https://h.example/?next=https://x.example/"),
        # a query value holding "=" is still under its key
        ("https://h.example/cb?code=abc=def&state=1", f"https://h.example/cb?code={REDACTED}&state=1"),
        # a key that is not UTF-8 never raises
        ("https://h.example/cb?%FF=1&code=2", f"https://h.example/cb?%FF=1&code={REDACTED}"),
        # the fragment starts at the first "#": an implicit-flow token after it is masked, a plain one is kept
        ("https://h.example/cb?state=1#access_token=abc#x", f"https://h.example/cb?state=1#access_token={REDACTED}"),
        ("https://h.example/cb?state=1#section", "https://h.example/cb?state=1#section"),
        # token-looking path segments go; the host is never one of them
        (
            f"https://Tenant42AbcDefGhij.example.com/reset/{TOKEN}",
            f"https://Tenant42AbcDefGhij.example.com/reset/{REDACTED}",
        ),
        (f"https://h.example/{TOKEN}", f"https://h.example/{REDACTED}"),
    ],
)
def test_url_rules(redactor: Redactor, url: str, expected: str) -> None:
    assert redactor.url(url) == expected


@pytest.mark.parametrize(
    ("path", "template", "expected"),
    [
        ("/reset/a/b/c", "/reset/{token:path}", f"/reset/{REDACTED}"),
        ("/t/a/b/v/c", "/t/{secret:path}/v/{token}", f"/t/{REDACTED}/v/{REDACTED}"),
        ("/api/t/a/b/v/c/x", "/t/{secret:path}/v/{token}/{page}", f"/api/t/{REDACTED}/v/{REDACTED}/x"),
        ("/api/k/1/t/a/b", "/k/{key}/t/{secret:path}", f"/api/k/{REDACTED}/t/{REDACTED}"),
        ("/y/a/b", "/x/{secret:path}", f"/y/{REDACTED}"),  # the literal head is not found: masked from its place
        ("/a/b/c/d/e", "/{page}/{key}/{page2}/{token}/{n}", f"/a/{REDACTED}/c/{REDACTED}/e"),
    ],
)
def test_template_rules(redactor: Redactor, path: str, template: str, expected: str) -> None:
    assert redactor.path(path, template) == expected
