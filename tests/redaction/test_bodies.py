"""Body capture: every content type's outcome, and that opaque or malformed bodies never come back raw."""

from __future__ import annotations

import gzip
import json
import logging
from typing import Any

import pytest

from audit_middleware.redaction.bodies import FileInfo, media_type, parse_body, parse_urlencoded
from audit_middleware.redaction.redactor import REDACTED, TRUNCATED, RedactionConfig, Redactor

SECRET = "s3cr3t-VALUE-never-stored"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


def multipart(boundary: str, *parts: tuple[str, str | None, str | None, bytes], close: bool = True) -> bytes:
    """Build a multipart/form-data body from (name, filename, content_type, data) parts."""
    out = b""
    for name, filename, ctype, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return out


# -- JSON -------------------------------------------------------------------------------------------


def test_json_login_body_is_parsed_and_redacted(redactor: Redactor) -> None:
    body = json.dumps({"username": "alice", "password": SECRET, "remember": True}).encode()
    assert redactor.body("application/json", body, complete=True) == {
        "content_type": "application/json",
        "size": len(body),
        "truncated": False,
        "fields": {"username": "alice", "password": REDACTED, "remember": True},
    }


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.api+json"])
def test_json_media_type_variants(redactor: Redactor, ctype: str) -> None:
    out = redactor.body(ctype, b'{"a": [1, {"token": "x"}]}', complete=True)
    assert out["fields"] == {"a": [1, {"token": REDACTED}]}
    assert out["content_type"] == ctype.split(";")[0].lower()


def test_json_nested_lists_and_top_level_array(redactor: Redactor) -> None:
    out = redactor.body("application/json", b'[{"pin": "1234"}, "x", 3]', complete=True)
    assert out["fields"] == [{"pin": REDACTED}, "x", 3]


def test_json_in_utf16_is_parsed(redactor: Redactor) -> None:
    body = json.dumps({"password": SECRET, "a": "b"}).encode("utf-16")
    assert redactor.body("application/json", body, complete=True)["fields"] == {"password": REDACTED, "a": "b"}


def test_json_nan_is_kept_as_a_string(redactor: Redactor) -> None:
    assert redactor.body("application/json", b'{"a": NaN}', complete=True)["fields"] == {"a": "NaN"}


@pytest.mark.parametrize(
    "body",
    [
        # malformed JSON carrying a secret must not leak it
        b'{"password": "' + SECRET.encode() + b'"',
        b"password=" + SECRET.encode(),
        b'{"a": 1} trailing ' + SECRET.encode(),
        b"\xff\xfe\x00" + SECRET.encode(),
        b'{"n": ' + b"9" * 5000 + b"}",
        b"[" * 20_000 + b"]" * 20_000,
    ],
)
def test_malformed_json_is_omitted_never_stored(redactor: Redactor, body: bytes) -> None:
    out = redactor.body("application/json", body, complete=True)
    assert out == {"content_type": "application/json", "size": len(body), "omitted": "unparseable"}


def test_incomplete_json_is_omitted_as_truncated(redactor: Redactor) -> None:
    body = b'{"username": "alice", "password": "' + SECRET.encode()
    out = redactor.body("application/json", body, complete=False)
    assert out == {"content_type": "application/json", "size": len(body), "omitted": "truncated"}


def test_body_longer_than_the_capture_cap_is_treated_as_cut() -> None:
    redactor = Redactor(RedactionConfig(max_body_bytes=16))
    body = json.dumps({"username": "alice", "password": SECRET}).encode()
    assert redactor.body("application/json", body, complete=True)["omitted"] == "truncated"


# -- urlencoded forms -------------------------------------------------------------------------------


def test_form_body_is_parsed_and_redacted(redactor: Redactor) -> None:
    body = f"username=alice&password={SECRET}&scope=a+b&scope=c".encode()
    out = redactor.body("application/x-www-form-urlencoded", body, complete=True)
    assert out == {
        "content_type": "application/x-www-form-urlencoded",
        "size": len(body),
        "truncated": False,
        "fields": {"username": "alice", "password": REDACTED, "scope": ["a b", "c"]},
    }


def test_oauth_token_request_redacts_code_and_secret(redactor: Redactor) -> None:
    body = b"grant_type=authorization_code&code=SplxlOBeZQQYbYS6WxSbIA&client_id=app&client_secret=xyz&code_verifier=v"
    fields = redactor.body("application/x-www-form-urlencoded", body, complete=True)["fields"]
    assert fields == {
        "grant_type": "authorization_code",
        "code": REDACTED,
        "client_id": "app",
        "client_secret": REDACTED,
        "code_verifier": REDACTED,
    }


def test_cut_form_body_keeps_whole_pairs_and_drops_the_cut_one(redactor: Redactor) -> None:
    body = b"username=alice&note=" + SECRET.encode()[:6]
    out = redactor.body("application/x-www-form-urlencoded", body, complete=False)
    assert out["truncated"] is True
    assert out["fields"] == {"username": "alice"}


@pytest.mark.parametrize(
    "body",
    [
        b'--b\r\nContent-Disposition: form-data; name="password"\r\n\r\n' + SECRET.encode(),
        b'{"password": "' + SECRET.encode() + b'"}',
        b"note=" + SECRET.encode() + b" with spaces",
        b"name=caf\xc3\xa9",
        b"a=1\x00",
    ],
)
def test_a_form_that_is_not_urlencoded_is_unparseable(redactor: Redactor, body: bytes) -> None:
    out = redactor.body("application/x-www-form-urlencoded", body, complete=True)
    assert out == {"content_type": "application/x-www-form-urlencoded", "size": len(body), "omitted": "unparseable"}


def test_a_form_with_a_trailing_newline_is_parsed(redactor: Redactor) -> None:
    out = redactor.body("application/x-www-form-urlencoded", b"a=1&b=%C3%A9\r\n", complete=True)
    assert out["fields"] == {"a": "1", "b": "\u00e9"}


def test_form_field_count_is_capped() -> None:
    redactor = Redactor(RedactionConfig(max_items=2))
    out = redactor.body("application/x-www-form-urlencoded", b"a=1&b=2&c=3", complete=True)
    assert out["fields"] == {"a": "1", "b": "2"}
    assert out["truncated"] is True


def test_allow_fields_filters_form_fields(redactor: Redactor) -> None:
    body = b"email=a%40example.com&password=x&bio=long"
    out = redactor.body("application/x-www-form-urlencoded", body, complete=True, allow_fields=["email", "password"])
    assert out["fields"] == {"email": "a@example.com", "password": REDACTED}


@pytest.mark.parametrize(
    ("data", "expected", "dropped"),
    [
        ("", {}, 0),
        ("&&a=1&&", {"a": "1"}, 0),
        ("a=1=2", {"a": "1=2"}, 0),
        ("=v", {"": "v"}, 0),
        ("a=1&b=2&c=3", {"a": "1"}, 2),
    ],
)
def test_parse_urlencoded(data: str, expected: dict[str, Any], dropped: int) -> None:
    limit = 1 if dropped else 100
    assert parse_urlencoded(data, limit) == (expected, dropped)


# -- multipart --------------------------------------------------------------------------------------


def test_multipart_fields_and_files_never_file_contents(redactor: Redactor) -> None:
    body = multipart(
        "XyZ",
        ("username", None, None, b"alice"),
        ("password", None, None, SECRET.encode()),
        ("avatar", "me.png", "image/png", b"\x89PNG" + SECRET.encode()),
        ("tags", None, None, b"a"),
        ("tags", None, None, b"b"),
        ("tags", None, None, b"c"),
    )
    out = redactor.body("multipart/form-data; boundary=XyZ", body, complete=True)
    assert out == {
        "content_type": "multipart/form-data",
        "size": len(body),
        "truncated": False,
        "fields": {
            "username": "alice",
            "password": REDACTED,
            "avatar": {"filename": "me.png", "size": 4 + len(SECRET), "content_type": "image/png"},
            "tags": ["a", "b", "c"],
        },
    }
    assert SECRET not in json.dumps(out)


def test_multipart_file_under_a_sensitive_name_is_redacted(redactor: Redactor) -> None:
    body = multipart("b", ("private_key", "id_rsa", None, b"-----BEGIN"))
    assert redactor.body("multipart/form-data; boundary=b", body, complete=True)["fields"] == {"private_key": REDACTED}


def test_multipart_filename_is_cleaned_and_detected(redactor: Redactor) -> None:
    body = multipart("b", ("f", "a\x01b 4111111111111111.txt", "text/plain", b"x"))
    fields = redactor.body("multipart/form-data; boundary=b", body, complete=True)["fields"]
    assert fields == {"f": {"filename": f"ab {REDACTED}.txt", "size": 1, "content_type": "text/plain"}}


def test_multipart_cut_by_the_cap_marks_the_partial_part(redactor: Redactor) -> None:
    body = multipart("b", ("username", None, None, b"alice"), ("bio", None, None, b"hello world"), close=False)
    cut = body[: body.index(b"hello") + 5]
    out = redactor.body("multipart/form-data; boundary=b", cut, complete=False)
    assert out["truncated"] is True
    assert out["fields"]["username"] == "alice"
    assert out["fields"]["bio"].endswith(TRUNCATED)
    assert out["fields"]["bio"].startswith("hel")


def test_multipart_cut_inside_a_file_reports_its_size_so_far(redactor: Redactor) -> None:
    body = multipart("b", ("doc", "a.bin", "application/octet-stream", b"0123456789"), close=False)
    cut = body[: body.index(b"0123") + 4]
    fields = redactor.body("multipart/form-data; boundary=b", cut, complete=False)["fields"]
    assert fields["doc"]["truncated"] is True
    assert fields["doc"]["filename"] == "a.bin"


def test_multipart_field_count_is_capped() -> None:
    redactor = Redactor(RedactionConfig(max_items=2))
    body = multipart("b", *[(f"f{i}", None, None, b"v") for i in range(5)])
    out = redactor.body("multipart/form-data; boundary=b", body, complete=True)
    assert out["fields"] == {"f0": "v", "f1": "v"}
    assert out["truncated"] is True


def test_multipart_long_text_field_is_bounded() -> None:
    redactor = Redactor(RedactionConfig(max_string=16))
    body = multipart("b", ("bio", None, None, b"x" * 50_000))
    assert redactor.body("multipart/form-data; boundary=b", body, complete=True)["fields"]["bio"] == (
        "x" * 16 + "..." + TRUNCATED
    )


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("multipart/form-data", b"--b\r\n" + SECRET.encode()),
        ("multipart/form-data; boundary=b", b"garbage " + SECRET.encode()),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n' + SECRET.encode(),
        ),
    ],
)
def test_malformed_multipart_is_omitted(redactor: Redactor, ctype: str, body: bytes) -> None:
    out = redactor.body(ctype, body, complete=True)
    assert out == {"content_type": "multipart/form-data", "size": len(body), "omitted": "unparseable"}


def test_a_malformed_multipart_body_logs_nothing(redactor: Redactor, caplog: pytest.LogCaptureFixture) -> None:
    # python-multipart warns on every malformed body it parses; through the middleware a client could
    # make the app log one line per request (the app itself may never parse multipart at all)
    with caplog.at_level(logging.DEBUG):
        redactor.body("multipart/form-data; boundary=b", b"--b{garbage", complete=True)
        redactor.body("multipart/form-data; boundary=b", b"garbage " + SECRET.encode(), complete=True)
    assert caplog.records == []


def test_multipart_part_without_a_name_is_ignored(redactor: Redactor) -> None:
    body = b"--b\r\nContent-Disposition: form-data\r\n\r\nsecret\r\n--b--\r\n"
    assert redactor.body("multipart/form-data; boundary=b", body, complete=True)["fields"] == {}


# -- opaque bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctype", "encoding", "body", "reason"),
    [
        # compressed, whatever the type
        ("application/json", "gzip", gzip.compress(b'{"password": "x"}'), "compressed"),
        ("application/x-www-form-urlencoded", "br", b"password=x", "compressed"),
        # binary types
        ("application/octet-stream", None, SECRET.encode(), "binary"),
        ("image/png", None, b"\x89PNG" + SECRET.encode(), "binary"),
        ("application/pdf", None, b"%PDF-1.7 " + SECRET.encode(), "binary"),
        ("application/zip", None, b"PK\x03\x04", "binary"),
        # types we do not parse
        ("text/plain", None, f"password={SECRET}".encode(), "unsupported"),
        ("application/xml", None, f"<password>{SECRET}</password>".encode(), "unsupported"),
        ("text/html", None, b"<p>hi</p>", "unsupported"),
        (None, None, f'{{"password": "{SECRET}"}}'.encode(), "unsupported"),
        ("", None, b"x", "unsupported"),
        # nothing to parse
        ("application/json", None, b"", "empty"),
    ],
)
def test_opaque_bodies_keep_only_type_and_size(
    redactor: Redactor, ctype: str | None, encoding: str | None, body: bytes, reason: str
) -> None:
    out = redactor.body(ctype, body, complete=True, content_encoding=encoding)
    assert out == {"content_type": media_type(ctype), "size": len(body), "omitted": reason}
    assert SECRET not in json.dumps(out)


def test_identity_content_encoding_is_parsed(redactor: Redactor) -> None:
    out = redactor.body("application/json", b'{"a": 1}', complete=True, content_encoding="identity")
    assert out["fields"] == {"a": 1}


def test_hostile_content_type_is_bounded_and_cleaned(redactor: Redactor) -> None:
    out = redactor.body("x/\x00" + "y" * 1000, b"data", complete=True)
    assert out["omitted"] == "unsupported"
    assert "\x00" not in out["content_type"]
    assert len(out["content_type"]) <= 100


def test_parse_body_returns_file_info_objects() -> None:
    parsed = parse_body("multipart/form-data; boundary=b", multipart("b", ("f", "x", None, b"abc")), complete=True)
    assert parsed.fields == {"f": FileInfo(filename="x", size=3, content_type=None)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), (" ; charset=x", None), ("Text/Plain; charset=utf-8", "text/plain")],
)
def test_media_type(value: str | None, expected: str | None) -> None:
    assert media_type(value) == expected


def test_multipart_text_field_is_capped_while_parsing() -> None:
    parsed = parse_body(
        "multipart/form-data; boundary=b",
        multipart("b", ("bio", None, None, b"line\r\n" * 5000), ("after", None, None, b"ok")),
        complete=True,
        max_value=64,
    )
    assert parsed.fields == {"bio": ("line\r\n" * 11)[:64], "after": "ok"}


def test_total_size_reports_the_whole_streamed_body(redactor: Redactor) -> None:
    out = redactor.body("application/json", b'{"a": ', complete=False, total_size=1_000_000)
    assert out == {"content_type": "application/json", "size": 1_000_000, "omitted": "truncated"}


def test_docstring_examples_hold() -> None:
    import doctest

    import audit_middleware.redaction.processors
    import audit_middleware.redaction.redactor
    import audit_middleware.redaction.urls

    for module in (
        audit_middleware.redaction.redactor,
        audit_middleware.redaction.urls,
        audit_middleware.redaction.processors,
    ):
        result = doctest.testmod(module)
        assert result.failed == 0
        assert result.attempted > 0


def _vendor_type(length: int) -> str:
    """A JSON vendor media type of ``length`` characters, like ``application/vnd.acme.orders...+json``."""
    head, tail = "application/vnd.acme.", "+json"
    words = ".".join(["orders"] * length)[: length - len(head) - len(tail)]
    return head + words + tail


def test_a_100_character_content_type_is_stored_whole_and_a_longer_one_cut_to_100(redactor: Redactor) -> None:
    # the docs promise the media type up to 100 characters: a client's long vendor type is kept whole up to
    # there, and a longer one cannot make the row grow with it
    exact, longer = _vendor_type(100), _vendor_type(101)
    assert (len(exact), len(longer)) == (100, 101)
    body = b'{"order": 7}'
    stored = redactor.body(exact + "; charset=utf-8", body, complete=True)
    assert stored["content_type"] == exact and stored["fields"] == {"order": 7}
    cut = redactor.body(longer, body, complete=True)
    assert cut["content_type"] == longer[:100]
