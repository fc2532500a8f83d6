"""The Redactor's rules one at a time, at their boundaries (found by mutation testing, issue 15)."""

from __future__ import annotations

from typing import Any

import pytest

from audit_middleware.redaction.bodies import FileInfo, PartialText
from audit_middleware.redaction.redactor import REDACTED, TRUNCATED, RedactionConfig, Redactor


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


# -- configuration bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"max_body_bytes": 0}, {"max_depth": 1}, {"max_depth": 64}, {"max_items": 1}, {"max_string": 16}],
)
def test_the_smallest_and_largest_allowed_limits_are_accepted(kwargs: dict[str, Any]) -> None:
    assert Redactor(RedactionConfig(**kwargs)).mapping({"a": "b"}) in ({"a": "b"}, {"a": TRUNCATED})


# -- configured deny keys ---------------------------------------------------------------------------------


def test_a_starred_deny_key_matches_anywhere_and_a_plain_one_only_whole() -> None:
    redactor = Redactor(RedactionConfig(deny_keys=["*x*", "ticket", "*ledger"]))
    assert redactor.is_sensitive_key("tax_xref")  # "*x*": anywhere
    assert redactor.is_sensitive_key("ticket") and not redactor.is_sensitive_key("ticketing")
    assert redactor.is_sensitive_key("ledger") and not redactor.is_sensitive_key("general_ledger")  # one star: whole


def test_a_deny_key_of_only_stars_denies_nothing_more() -> None:
    redactor = Redactor(RedactionConfig(deny_keys=["**"]))
    assert redactor.mapping({"email": "a@example.com"}) == {"email": "a@example.com"}


# -- strings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4222222222222", REDACTED),  # 13 characters: a card, the shortest string scanned for everything
        ("pin=1234", f"pin={REDACTED}"),  # short, but a key=value pair
        ("pin: 1234", f"pin: {REDACTED}"),  # short, but a key: value field
        ('{"password": "', f'{{"password": "{REDACTED}'),  # cut before the value: no closing quote invented
        ("x?%FF=1&password=hunter2", f"x?%FF=1&password={REDACTED}"),  # a key that is not UTF-8 never raises
    ],
)
def test_short_and_odd_strings_are_masked(redactor: Redactor, value: str, expected: str) -> None:
    assert redactor.text(value) == expected


def test_a_long_text_masks_its_fields_too() -> None:
    redactor = Redactor(RedactionConfig(max_string=16))
    assert redactor.text("note\tpassword: hunter2") == f"note\tpassword: {REDACTED}"[:16] + "..." + TRUNCATED


def test_a_string_of_exactly_max_string_is_not_cut() -> None:
    value = "a\t" + "b" * 14  # 16 characters with a tab: the slow path
    assert Redactor(RedactionConfig(max_string=16)).text(value) == value


# -- structures -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [2000000000008, 4222222222222, 6011000000000000001])
def test_a_card_number_given_as_an_integer_is_masked(redactor: Redactor, number: int) -> None:
    assert redactor.mapping({"ref": number}) == {"ref": REDACTED}


def test_a_cut_text_field_is_marked_once(redactor: Redactor) -> None:
    assert redactor.mapping({"a": PartialText("abc")}) == {"a": "abc..." + TRUNCATED}
    long = redactor.mapping({"a": PartialText("x" * 1000)})["a"]
    assert long == "x" * 512 + "..." + TRUNCATED


def test_an_upload_without_a_filename_keeps_none(redactor: Redactor) -> None:
    info = FileInfo(filename=None, size=3, content_type="text/plain")
    assert redactor.mapping({"f": info}) == {"f": {"filename": None, "size": 3, "content_type": "text/plain"}}


def test_a_list_of_exactly_max_items_has_no_marker() -> None:
    assert Redactor(RedactionConfig(max_items=3)).mapping({"l": [1, 2, 3]}) == {"l": [1, 2, 3]}


def test_a_name_value_pair_with_a_64_character_secret_name_is_masked(redactor: Redactor) -> None:
    name = "password_" + "x" * 55  # 64 characters
    assert redactor.mapping({"name": name, "value": "hunter2"}) == {"name": name, "value": REDACTED}


# -- request parts ----------------------------------------------------------------------------------------


def test_only_referer_and_origin_are_read_as_urls(redactor: Redactor) -> None:
    agent = b"okhttp/4.9.2 build/Ab1Ab1Ab1Ab1Ab1Ab1Ab"
    assert redactor.headers([(b"user-agent", agent)]) == {"user-agent": agent.decode()}
    referer = b"https://app.example/reset/Ab1Ab1Ab1Ab1Ab1Ab1Ab"
    assert redactor.headers([(b"referer", referer)]) == {"referer": f"https://app.example/reset/{REDACTED}"}


def test_url_query_secrets_go_and_other_keys_stay(redactor: Redactor) -> None:
    url = "https://app.example/cb?code=abc&state=xyz"
    assert redactor.url(url) == f"https://app.example/cb?code={REDACTED}&state=xyz"
    assert redactor.url("https://api.example/v1/tokens:revoke") == "https://api.example/v1/tokens:revoke"


def test_allowlist_mode_hides_url_query_keys_not_allowed() -> None:
    redactor = Redactor(RedactionConfig(allow_keys=["state"]))
    assert redactor.url("https://a.example/cb?state=1&page=2") == f"https://a.example/cb?state=1&page={REDACTED}"


def test_a_query_with_bytes_that_are_not_utf8_is_read(redactor: Redactor) -> None:
    assert redactor.query(b"a=%FF&b=\xff") == {"a": "\ufffd", "b": "\ufffd"}


def test_a_query_under_the_smallest_depth_keeps_its_fields() -> None:
    assert Redactor(RedactionConfig(max_depth=1)).query(b"a=1") == {"a": "1"}


def test_a_body_of_exactly_max_body_bytes_is_complete() -> None:
    body = b'{"a": "' + b"x" * 100 + b'"}'
    redactor = Redactor(RedactionConfig(max_body_bytes=len(body)))
    out = redactor.body("application/json", body, complete=True)
    assert out["truncated"] is False and out["fields"] == {"a": "x" * 100}


def test_a_trailing_slash_keeps_a_single_parameter_aligned(redactor: Redactor) -> None:
    assert redactor.path("/abc123/", "/{token}") == f"/{REDACTED}/"


def test_the_shortest_basic_credential_is_masked(redactor: Redactor) -> None:
    assert redactor.text("Basic YTpi") == f"Basic {REDACTED}"  # base64 of "a:b", no padding: 10 characters


LONG_KEY = "password_" + "x" * 55  # 64 characters: the longest key judged inside free text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"a {LONG_KEY}=hunter2", f"a {LONG_KEY}={REDACTED}"),
        (f"{LONG_KEY}: hunter2", f"{LONG_KEY}: {REDACTED}"),
        ('{"password": "a\\"b"}', f'{{"password": "{REDACTED}"}}'),  # an escaped quote inside the value
        ("{'password': 'a\\'b'}", f"{{'password': '{REDACTED}'}}"),
    ],
)
def test_fields_in_free_text_at_their_bounds(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.text(text) == expected


def test_a_one_letter_configured_key_is_masked_in_free_text() -> None:
    redactor = Redactor(RedactionConfig(deny_keys=["k"]))
    assert redactor.text("a k=v1") == f"a k={REDACTED}"
    assert redactor.text("k: v1") == f"k: {REDACTED}"
