"""The Redactor's and the body parser's lists, one entry at a time (found by mutation testing, issue 15)."""

from __future__ import annotations

import pytest

from audit_middleware.redaction.redactor import REDACTED, RedactionConfig, Redactor


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(
    "name",
    [
        "user-agent", "content-type", "content-length", "content-encoding", "accept", "accept-language", "host",
        "x-request-id", "x-correlation-id", "x-forwarded-for", "x-forwarded-proto", "x-real-ip", "forwarded",
    ],
)  # fmt: skip
def test_each_default_captured_header_is_kept(redactor: Redactor, name: str) -> None:
    assert redactor.headers([(name.encode(), b"v1")]) == {name: "v1"}


@pytest.mark.parametrize("name", ["referer", "origin"])
def test_referer_and_origin_are_read_as_urls(redactor: Redactor, name: str) -> None:
    url = b"https://u:p@app.example/reset/Ab1Ab1Ab1Ab1Ab1Ab1Ab"
    assert redactor.headers([(name.encode(), url)]) == {name: f"https://app.example/reset/{REDACTED}"}


@pytest.mark.parametrize(
    "name",
    ["x-client-secret", "x-password", "x-csrf-check", "x-session-hint", "x-auth-token", "x-api-key", "x-cookie-id"],
)
def test_a_captured_header_named_like_a_credential_is_always_redacted(name: str) -> None:
    redactor = Redactor(RedactionConfig(captured_headers=[name], replace_deny_keys=True))
    assert redactor.headers([(name.encode(), b"plain-value")]) == {name: REDACTED}


@pytest.mark.parametrize("value_key", ["value", "values", "val", "Value", "Values"])
@pytest.mark.parametrize(
    "name_key", ["name", "key", "field", "type", "param", "parameter", "id", "label", "path", "Name", "Key", "Field",
                 "Type", "Path"],
)  # fmt: skip
def test_each_name_value_pair_shape_masks_its_secret(redactor: Redactor, name_key: str, value_key: str) -> None:
    assert redactor.mapping({name_key: "password", value_key: "hunter2"})[value_key] == REDACTED


def test_a_pair_name_longer_than_64_characters_is_not_judged(redactor: Redactor) -> None:
    name = "password_" + "x" * 56  # 65 characters: a sentence, not a field name
    assert redactor.mapping({"name": name, "value": "v"}) == {"name": name, "value": "v"}


@pytest.mark.parametrize(
    "content_type",
    [
        "image/png", "audio/ogg", "video/mp4", "font/woff2", "application/octet-stream", "application/pdf",
        "application/zip", "application/gzip", "application/x-gzip", "application/x-tar",
        "application/x-7z-compressed", "application/vnd.rar", "application/x-protobuf", "application/protobuf",
        "application/grpc", "application/msgpack", "application/x-msgpack", "application/cbor",
    ],
)  # fmt: skip
def test_each_binary_media_type_is_omitted(redactor: Redactor, content_type: str) -> None:
    out = redactor.body(content_type, b'{"password": "hunter2"}', complete=True)
    assert out == {"content_type": content_type, "size": 23, "omitted": "binary"}


@pytest.mark.parametrize("encoding", ["", "identity", " Identity "])
def test_an_identity_content_encoding_is_parsed(redactor: Redactor, encoding: str) -> None:
    out = redactor.body("application/json", b'{"a": 1}', complete=True, content_encoding=encoding)
    assert out["fields"] == {"a": 1}
