"""The audit-middleware command line (init-db here; operator commands have their own tests)."""

from __future__ import annotations

import asyncio

import pytest

from audit_middleware.cli.main import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main
from tests.conftest import PgTarget


def test_init_db_creates_the_table(empty_schema: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["init-db", "--dsn", empty_schema.dsn, "--schema", empty_schema.schema])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert f"{empty_schema.schema}.user_audit_logs: ready" in out
    assert "foreign key to users: skipped" in out


def test_init_db_table_accepts_rows(empty_schema: PgTarget) -> None:
    assert main(["init-db", "--dsn", empty_schema.dsn, "--schema", empty_schema.schema, "--no-users-fk"]) == EXIT_OK
    asyncio.run(empty_schema.fetch("INSERT INTO {t} (action) VALUES ('x')"))
    assert [r["action"] for r in asyncio.run(empty_schema.rows())] == ["x"]


def test_init_db_reads_dsn_from_environment(
    empty_schema: PgTarget, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUDIT_DSN", empty_schema.dsn)
    assert main(["init-db", "--schema", empty_schema.schema, "--table", "events"]) == EXIT_OK
    assert f"{empty_schema.schema}.events: ready" in capsys.readouterr().out


def test_init_db_links_users_table_in_another_schema(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "init-db",
        "--dsn",
        pg.dsn,
        "--schema",
        pg.schema,
        "--table",
        "other",
        "--users-table",
        f"{pg.schema}.users",
    ]
    assert main(args) == EXIT_OK
    assert "foreign key to users: created" in capsys.readouterr().out


def test_missing_dsn_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AUDIT_DSN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["init-db"])
    assert exit_info.value.code == EXIT_USAGE
    assert "--dsn or AUDIT_DSN is required" in capsys.readouterr().err


def test_unreachable_server_has_its_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["init-db", "--dsn", "postgresql://nobody:hunter2@127.0.0.1:1/none"])
    err = capsys.readouterr().err
    assert code == EXIT_UNREACHABLE
    assert "cannot connect" in err
    assert "hunter2" not in err
