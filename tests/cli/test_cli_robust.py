"""The command line under hostile or careless input: extreme times, terminal escapes, missing pieces.

Every case here used to end in a traceback, a raw driver error, a stray file or a silent nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from audit_middleware.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from tests.conftest import PgTarget
from tests.ops_data import T0, load, row

HOSTILE = "login\x1b]0;owned\x07\x1b[2J\x9b31m\u202e"


def cli(pg: PgTarget, *args: str) -> int:
    return main([args[0], "--dsn", pg.dsn, "--schema", pg.schema, *args[1:]])


def seed(pg: PgTarget, rows: list[tuple[object, ...]]) -> None:
    asyncio.run(load(pg, rows))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command as an operator runs it (its own process, real stdout/stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "audit_middleware.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


# --- extreme times: a usage error (2), never a traceback ---------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["query", "--since", "99999999d"],
        ["query", "--since", "0001-01-01T00:00:00+14:00"],
        ["query", "--until", "9999-12-31T23:59:59-12:00"],
        ["query", "--after", f"9999-12-31T23:59:59-12:00|{uuid.UUID(int=1)}"],
        ["export", "--since", "99999999w"],
        ["stats", "--until", "9999-12-31T23:59:59-12:00"],
        ["prune", "--older-than", "99999999", "--dry-run"],
    ],
)
def test_extreme_times_are_usage_errors(pg: PgTarget, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    try:
        code = cli(pg, *args)
    except SystemExit as exc:  # argparse's own usage error
        code = int(exc.code or 0)
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "out of range" in err or "cursor must look like" in err


# --- terminal escapes in rows --------------------------------------------------------------------------


def hostile_rows(pg: PgTarget) -> None:
    seed(pg, [row(HOSTILE, T0, metadata={"ip": "10.0.0.1\x9b", "note": "x\u202ey", "identifier": HOSTILE})])


def assert_no_raw_controls(text: str) -> None:
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in text, repr(text)


def run_on_terminal(*args: str, env: dict[str, str]) -> str:
    """Run the command with a real terminal (a pty) as stdout, as an operator's shell does; its output."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "audit_middleware.cli", *args],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
        assert process.wait(timeout=60) == EXIT_OK
    return b"".join(chunks).decode("utf-8")


def test_query_table_escapes_control_characters(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    hostile_rows(pg)
    assert cli(pg, "query") == EXIT_OK
    out = capsys.readouterr().out
    assert_no_raw_controls(out)
    assert "login\\x1b]0;owned\\x07" in out


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_query_to_a_terminal_escapes_control_characters(pg: PgTarget, fmt: str) -> None:
    hostile_rows(pg)
    out = run_on_terminal("query", "--schema", pg.schema, "--format", fmt, env={"AUDIT_DSN": pg.dsn})
    assert "login" in out
    assert_no_raw_controls(out)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_to_a_file_keeps_the_stored_text(pg: PgTarget, tmp_path: Path, fmt: str) -> None:
    hostile_rows(pg)
    target = tmp_path / f"out.{fmt}"
    assert cli(pg, "export", "--format", fmt, "-o", str(target)) == EXIT_OK
    text = target.read_text(encoding="utf-8")
    if fmt == "jsonl":
        assert json.loads(text)["action"] == HOSTILE
    else:
        assert HOSTILE in text


def test_tail_escapes_control_characters(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    hostile_rows(pg)
    assert cli(pg, "tail", "--poll-interval", "0.05", "--timeout", "0.3") == EXIT_OK
    out = capsys.readouterr().out
    assert "login" in out
    assert_no_raw_controls(out)


def test_tail_json_to_a_terminal_escapes_control_characters(pg: PgTarget) -> None:
    hostile_rows(pg)
    out = run_on_terminal("tail", "--schema", pg.schema, "--json", "--timeout", "0.5", env={"AUDIT_DSN": pg.dsn})
    assert "login" in out
    assert_no_raw_controls(out)


def test_stats_escapes_control_characters(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    hostile_rows(pg)
    seed(pg, [row("login_failed", T0, metadata={"ip": "10.0.0.1\x1b[2J", "identifier": HOSTILE})])
    assert cli(pg, "stats", "--since", "2026-01-01", "--until", "2026-12-01") == EXIT_OK
    out = capsys.readouterr().out
    assert "login" in out and "failures" in out
    assert_no_raw_controls(out)


# --- missing pieces and quiet failures ---------------------------------------------------------------


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == EXIT_OK
    assert result.stdout.startswith("audit-middleware ")
    assert result.stdout.split()[1][0].isdigit()


@pytest.mark.parametrize("command", ["query", "stats", "verify", "init-db"])
def test_missing_dsn_shows_the_subcommands_usage(command: str) -> None:
    result = run_cli(command, env={"AUDIT_DSN": ""})
    assert result.returncode == EXIT_USAGE
    assert f"usage: audit-middleware {command} " in result.stderr
    assert "--dsn or AUDIT_DSN is required" in result.stderr


def test_a_failed_export_leaves_no_partial_file(empty_schema: PgTarget, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    assert cli(empty_schema, "export", "-o", str(target)) == EXIT_FAILURE  # no table: fails mid-way
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "extra"), [("query", []), ("export", []), ("stats", []), ("tail", ["--timeout", "0.2"])]
)
def test_an_action_never_seen_is_named(
    pg: PgTarget, capsys: pytest.CaptureFixture[str], command: str, extra: list[str]
) -> None:
    seed(pg, [row("login", T0), row("logout", T0)])
    assert cli(pg, command, "--action", "lgoin", *extra) == EXIT_OK
    err = capsys.readouterr().err
    assert "no row has action 'lgoin'" in err
    assert "login, logout" in err


def test_an_action_seen_outside_the_range_is_not_flagged(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    seed(pg, [row("login", T0)])
    assert cli(pg, "query", "--action", "login", "--since", "2026-06-01") == EXIT_OK
    assert "no row has action" not in capsys.readouterr().err


def test_init_db_says_no_users_table_once(empty_schema: PgTarget) -> None:
    result = run_cli("init-db", "--dsn", empty_schema.dsn, "--schema", empty_schema.schema)
    assert result.returncode == EXIT_OK
    assert (result.stdout + result.stderr).count("users does not exist") == 1


def test_verify_with_a_too_short_key_is_a_usage_error(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["AUDIT_TEST_SHORT_KEY"] = "short"
    try:
        assert cli(pg, "verify", "--key-env", "AUDIT_TEST_SHORT_KEY") == EXIT_USAGE
    finally:
        del os.environ["AUDIT_TEST_SHORT_KEY"]
    assert "at least 16 characters" in capsys.readouterr().err
