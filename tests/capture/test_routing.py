"""Route keys and normalisation (the preset's own rows: test_preset.py)."""

from __future__ import annotations

from typing import Any

import pytest

from audit_middleware.capture.core import RequestInfo
from audit_middleware.capture.preset import AUTH_PRESET
from audit_middleware.capture.routing import RouteSpec, compile_routes, normalize_path
from audit_middleware.errors import ConfigurationError


def action_of(table: Any, method: Any, path: Any, body: Any = b"") -> Any:
    m = table.match(method, path)
    if m is None or m.spec is None:
        return None
    return (
        m.spec.action(RequestInfo(method=method, path=path, body=body), None)
        if callable(m.spec.action)
        else m.spec.action
    )


# -- key syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "method", "path", "template"),
    [
        ("POST /login", "POST", "/login", "/login"),
        ("POST|PUT /users/{user_id}", "PUT", "/users/42", "/users/{user_id}"),
        ("* /users/{id:int}", "DELETE", "/users/7", "/users/{id}"),
        ("GET /items/{item:uuid}", "GET", "/items/0d5f6f36-1f7b-4c9e-8d2a-6f0e3b7b9c11", "/items/{item}"),
        ("GET /files/{rest:path}", "GET", "/files/a/b/c.txt", "/files/{rest}"),
        ("GET /flask/<int:user_id>/edit", "GET", "/flask/3/edit", "/flask/{user_id}/edit"),
        ("GET /flask/<name>", "GET", "/flask/bob", "/flask/{name}"),
        ("GET /a/*/c", "GET", "/a/anything/c", "/a/*/c"),
        ("GET /report-*.csv", "GET", "/report-2024.csv", "/report-*.csv"),
        ("POST **/login", "POST", "/api/v2/login", "/api/v2/login"),
        ("POST **/login", "POST", "/login", "/login"),
        ("GET /admin/**", "GET", "/admin/users/1", "/admin/**"),
        ("GET /", "GET", "/", "/"),
    ],
)
def test_key_matches(key: Any, method: Any, path: Any, template: Any) -> None:
    match = compile_routes({key: "x"}).match(method, path)
    assert match is not None and match.template == template and match.key == key


@pytest.mark.parametrize(
    ("key", "method", "path"),
    [
        ("POST /login", "GET", "/login"),
        ("* /users/{id:int}", "GET", "/users/abc"),
        ("GET /items/{item:uuid}", "GET", "/items/nope"),
        ("GET /a/*/c", "GET", "/a/b/b/c"),
        ("POST /login", "POST", "/loginx"),
        ("POST /login", "POST", "/api/login"),
    ],
)
def test_key_does_not_match(key: Any, method: Any, path: Any) -> None:
    assert compile_routes({key: "x"}).match(method, path) is None


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({"/login": "x"}, "METHOD /path"),
        ({"post login": "x"}, "must start with '/'"),
        ({"P0ST /login": "x"}, "invalid method"),
        ({"GET /x/{id:bogus}": "x"}, "unknown converter"),
        ({"GET /x/{id}/{id}": "x"}, "repeated"),
        ({"GET /x/{rest:path}/y": "x"}, "last segment"),
        ({"GET /x/{oops": "x"}, "malformed"),
        ({"GET /x": "a" * 101}, "longer than 100"),
        ({"GET /x": ""}, "non-empty"),
        ({"GET /x": {"action": "a", "bogus": 1}}, "bogus"),
        ({"GET /x": {"body": False}}, "needs an 'action'"),
        ({"GET /x": {"action": "a", "body": "yes"}}, "body must be"),
        ({"GET /x": {"action": "a", "failed_action": "b" * 101}}, "failed_action"),
        ({"GET /x": 42}, "string, mapping or callable"),
    ],
)
def test_invalid_routes_name_the_problem(routes: Any, message: Any) -> None:
    with pytest.raises(ConfigurationError, match=message):
        compile_routes(routes)


def test_spec_values_are_coerced() -> None:
    def choose(request: Any, response: Any) -> Any:
        return "computed"

    table = compile_routes(
        {
            "POST /a": "plain",
            "POST /b": {"action": "spec", "body": ["name"], "metadata": {"kind": "b"}},
            "POST /c": choose,
            "POST /d": RouteSpec(action="given"),
            "POST /e": None,
        }
    )
    b = table.match("POST", "/b")
    assert b is not None and b.spec is not None
    assert b.spec.body == ("name",) and b.spec.metadata == {"kind": "b"}
    c = table.match("POST", "/c")
    assert c is not None and c.spec is not None and c.spec.action is choose
    assert action_of(table, "POST", "/c") == "computed"
    assert action_of(table, "POST", "/d") == "given"
    excluded = table.match("POST", "/e")
    assert excluded is not None and excluded.spec is None


def test_first_route_in_declaration_order_wins_across_buckets() -> None:
    table = compile_routes({"POST /reset/{token}": "first", "POST **/abc": "second"})
    assert action_of(table, "POST", "/reset/abc") == "first"
    table = compile_routes({"POST **/abc": "first", "POST /reset/{token}": "second"})
    assert action_of(table, "POST", "/reset/abc") == "first"


def test_user_routes_come_before_the_preset() -> None:
    table = compile_routes({"POST /auth/jwt/login": "custom_login"}, AUTH_PRESET)
    assert action_of(table, "POST", "/auth/jwt/login") == "custom_login"
    assert action_of(table, "POST", "/other/login") == "login"


def test_framework_template_matches_typed_parameters() -> None:
    table = compile_routes({"GET /users/{id:int}": "user"})
    match = table.match("GET", "/users/{id}")
    assert match is not None and match.template == "/users/{id}"


def test_results_are_cached_and_bounded() -> None:
    table = compile_routes({"GET /x/{id}": "x"})
    for n in range(5000):
        table.match("GET", f"/x/{n}")
    assert sum(len(c) for c in table._cache.values()) <= 4096
    assert action_of(table, "GET", "/x/4999") == "x"


def test_cache_is_bounded_by_method_count() -> None:
    table = compile_routes({"* /x": "x"})
    for n in range(100):
        assert action_of(table, f"M{chr(65 + n % 26)}{n}", "/x") == "x"
    assert len(table._cache) <= 64


# -- normalisation: bypass attempts still match ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/login", "/login/", "//login", "///login//", "/./login", "/x/../login", "/log%69n", "/%6C%6F%67%69%6E", "login"],
)
def test_bypass_paths_match(path: Any) -> None:
    assert action_of(compile_routes({"POST /login": "login"}), "POST", path) == "login"


def test_normalize_path_keeps_root() -> None:
    assert normalize_path("/") == "/"
    assert normalize_path("/../..") == "/"
    assert normalize_path("/a/%252F/b") == "/a/b"  # double-encoded: decoded twice, then collapsed
