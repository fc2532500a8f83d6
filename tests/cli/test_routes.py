"""``audit-middleware routes``: the effective map of real Starlette, FastAPI, Flask, Litestar and Django apps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit_middleware.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def lines_of(target: str, capsys: pytest.CaptureFixture[str], *extra: str) -> list[list[str]]:
    assert main(["routes", f"tests.cli.routes_apps:{target}", *extra]) == 0
    out = capsys.readouterr().out
    return [line.split(None, 3) for line in out.splitlines()[1:] if line and not line[0].isdigit()]


def row(lines: list[list[str]], method: str, path: str) -> list[str]:
    [found] = [line for line in lines if line[:2] == [method, path]]
    return found


def test_fastapi_routes_show_the_prefix_user_routes_and_the_preset(capsys: pytest.CaptureFixture[str]) -> None:
    lines = lines_of("fastapi_app", capsys)
    assert row(lines, "POST", "/auth/jwt/login")[2:] == [
        "login",
        "preset 'POST **/login' (FastAPI-Users /auth/jwt/login, allauth, dj-rest-auth, Flask-Security)",
    ]
    assert row(lines, "POST", "/export")[2:] == ["export_data", "user route 'POST /export'"]
    assert row(lines, "POST", "/token")[2:] == ["-", "not audited: routes maps 'POST /token' to None"]
    assert row(lines, "GET", "/users/{user_id}")[2] == "-"


def test_a_generic_word_says_what_corroboration_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    action, why = row(lines_of("fastapi_app", capsys), "POST", "/settings/change")[2:]
    assert action == "password_change" and why.endswith("only with a password field in the body, else no row")


def test_an_app_without_the_middleware_gets_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "tests.cli.routes_apps:bare_fastapi", "--audited"]) == 0
    out = capsys.readouterr().out
    assert "POST    /api/token  login" in out
    assert "1 of 5 routes audited, 1 of them only when corroborated (no audit middleware found" in out


def test_starlette_mounts_are_walked(capsys: pytest.CaptureFixture[str]) -> None:
    lines = lines_of("starlette_app", capsys)
    assert row(lines, "POST", "/v1/reset")[2:] == ["counter_reset", "user route 'POST /v1/reset'"]
    assert row(lines, "POST", "/login")[2] == "login"


def test_flask_rules_and_their_methods(capsys: pytest.CaptureFixture[str]) -> None:
    lines = lines_of("flask_app", capsys)
    assert row(lines, "DELETE", "/items/{item_id}")[2:] == ["item_deleted", "user route 'DELETE /items/<int:id>'"]
    assert row(lines, "POST", "/logout")[2] == "logout"
    assert "only with a redirect or a deleted cookie" in row(lines, "GET", "/logout")[3]
    assert "only with a password field" in row(lines, "POST", "/register")[3]


def test_litestar_routes(capsys: pytest.CaptureFixture[str]) -> None:
    lines = lines_of("litestar_app", capsys)
    assert row(lines, "POST", "/auth/login")[2] == "login"
    assert row(lines, "GET", "/users/{user_id}")[2] == "-"


def test_audited_only(capsys: pytest.CaptureFixture[str]) -> None:
    lines = lines_of("fastapi_app", capsys, "--audited")
    assert all(line[2] != "-" for line in lines) and len(lines) == 4


def test_django_urlconf_through_the_installed_command() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "django_app.settings",
        "AUDIT_DSN": "postgresql://localhost/unused",  # the example's middleware is built, never connected
        "PYTHONPATH": str(ROOT / "examples"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "audit_middleware.cli", "routes", "django_app.wsgi:application"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "/accounts/password/reset/key/{uidb64}/{token}/  password_reset" in result.stdout
    assert "GET     /accounts/logout/" in result.stdout and "a confirmation page is no logout" in result.stdout


@pytest.mark.parametrize("target", ["tests.cli.routes_apps:nothing", "no_such_module:app", "no_colon"])
def test_an_app_that_cannot_be_loaded_exits_1(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", target]) == 1
    assert capsys.readouterr().err.startswith(f"error: {target}:")
