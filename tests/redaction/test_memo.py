"""The header memo gives exactly the Redactor's answers and never keeps a secret as a cache key."""

from __future__ import annotations

import pytest

from audit_middleware.redaction.memo import MAX_ENTRIES, RedactionMemo
from audit_middleware.redaction.redactor import RedactionConfig, Redactor

BEARER = b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZw"
CASES: list[list[tuple[bytes, bytes]]] = [
    [(b"user-agent", b"Mozilla/5.0"), (b"accept", b"*/*"), (b"host", b"example.com")],
    [(b"authorization", BEARER), (b"user-agent", b"curl/8")],
    [(b"accept", b"a"), (b"accept", b"b")],  # repeated: joined by the Redactor
    [(b"referer", b"https://u:p@example.com/x?token=abc&page=2")],
    [(b"user-agent", b"x" * 2000)],
    [(b"x-not-captured", b"value"), (b"content-type", b"application/json")],
    [(b"user-agent", b"ua with jwt " + BEARER[7:])],
    [],
]


@pytest.mark.parametrize("config", [RedactionConfig(), RedactionConfig(captured_headers=("user-agent", "cookie"))])
@pytest.mark.parametrize("raw", CASES)
def test_same_result_as_the_redactor_cold_and_warm(config: RedactionConfig, raw: list[tuple[bytes, bytes]]) -> None:
    redactor = Redactor(config)
    memo = RedactionMemo(redactor)
    assert memo.headers(raw) == redactor.headers(raw)
    assert memo.headers(raw) == redactor.headers(raw)  # from the cache


def test_secret_header_values_are_never_cache_keys() -> None:
    memo = RedactionMemo(Redactor())
    memo.headers([(b"authorization", BEARER), (b"user-agent", b"ua")])
    assert all(BEARER not in key[1] for key in memo._headers)
    assert (b"user-agent", b"ua") in memo._headers


def test_caches_are_bounded() -> None:
    memo = RedactionMemo(Redactor())
    for n in range(MAX_ENTRIES + 10):
        memo.headers([(b"user-agent", f"ua-{n}".encode())])
        memo.text(f"text-{n}")
    assert len(memo._headers) <= MAX_ENTRIES and len(memo._texts) <= MAX_ENTRIES


def test_text_matches_the_redactor() -> None:
    redactor = Redactor()
    memo = RedactionMemo(redactor)
    for value in ["plain", "Bearer " + BEARER[7:].decode(), "x" * 5000]:
        assert memo.text(value) == redactor.text(value) == memo.text(value)


def test_path_is_cached_only_for_static_routes() -> None:
    redactor = Redactor()
    memo = RedactionMemo(redactor)
    assert memo.path("/login", "/login") == redactor.path("/login", "/login")
    secret = "/reset/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZw"
    assert memo.path(secret, "/reset/{token}") == redactor.path(secret, "/reset/{token}")
    assert memo.path(secret, None) == redactor.path(secret, None)
    assert list(memo._paths) == ["/login"]


@pytest.mark.parametrize(
    "path",
    ["/login", "/auth/jwt/login", "/reset/{token}", "/verify/{id}", "/reset/{rest:path}", "/magic/**", "/x/{a}/y"],
)
@pytest.mark.parametrize("secret_params", [False, True])
def test_a_path_that_is_its_own_template_is_the_redactors_cold_and_warm(path: str, secret_params: bool) -> None:
    # an auth route's static path is served from the cache; a literal "{...}" or "/**" path never is
    redactor = Redactor()
    memo = RedactionMemo(redactor)
    expected = redactor.path(path, path, secret_params=secret_params)
    assert memo.path(path, path, secret_params=not secret_params) == redactor.path(
        path, path, secret_params=not secret_params
    )  # the other flavour first: a shared cache entry would answer the next call wrongly
    assert memo.path(path, path, secret_params=secret_params) == expected
    assert memo.path(path, path, secret_params=secret_params) == expected
