"""``audit-middleware serve``: refuses to start without a credential; binds loopback by default."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from audit_middleware.cli.main import EXIT_UNREACHABLE, EXIT_USAGE, build_parser, main
from tests.conftest import PgTarget
from tests.viewer.browser import serve


def test_serve_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AUDIT_VIEWER_TOKEN", raising=False)
    assert main(["serve", "--dsn", "postgresql://nobody@127.0.0.1:1/x"]) == EXIT_USAGE
    assert "needs a credential" in capsys.readouterr().err


def test_serve_refuses_a_short_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUDIT_VIEWER_TOKEN", "tooshort")
    assert main(["serve", "--dsn", "postgresql://nobody@127.0.0.1:1/x"]) == EXIT_USAGE
    assert "at least 16" in capsys.readouterr().err


def test_serve_refuses_an_unreadable_token_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("AUDIT_VIEWER_TOKEN", "a-token-that-is-long-enough")  # the file, when named, wins
    assert main(["serve", "--dsn", "postgresql://x@127.0.0.1:1/x", "--token-file", str(tmp_path / "none")]) == 2
    assert "cannot read --token-file" in capsys.readouterr().err


def test_serve_refuses_an_unreachable_database_without_showing_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUDIT_VIEWER_TOKEN", "a-token-that-is-long-enough")
    assert main(["serve", "--dsn", "postgresql://reader:pw-s3cret@127.0.0.1:1/audit"]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "cannot connect" in err and "pw-s3cret" not in err


def test_serve_binds_loopback_by_default() -> None:
    args = build_parser().parse_args(["serve", "--dsn", "postgresql://x@127.0.0.1/x"])
    assert (args.host, args.port) == ("127.0.0.1", 8765)


def test_serve_runs_uvicorn_with_a_token_file_and_logs_no_secret(pg: PgTarget, tmp_path: Path) -> None:
    token, wrong = "token-from-a-file-0123456789", "a-wrong-guess-0123456789"
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    with serve(pg.dsn, pg.schema, None, "--token-file", str(path)) as base:
        request = urllib.request.Request(base + "/api/events", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        body = urllib.parse.urlencode({"token": wrong}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(base + "/login", data=body), timeout=10)
        assert refused.value.code == 401
        refused.value.close()
    log: str = serve.last_log  # type: ignore[attr-defined]
    assert "Uvicorn running on http://127.0.0.1:" in log and "viewer sign-in failed from 127.0.0.1" in log
    assert token not in log and wrong not in log


BLOCK_EXTRA = "import sys; sys.modules['starlette'] = sys.modules['jinja2'] = sys.modules['uvicorn'] = None; "


def test_the_core_package_imports_without_the_viewer_extra() -> None:
    code = BLOCK_EXTRA + "import audit_middleware, audit_middleware.cli.main, audit_middleware.store.query; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_serve_without_the_extra_says_how_to_install_it() -> None:
    code = (
        BLOCK_EXTRA
        + "from audit_middleware.cli.main import main; sys.exit(main(['serve', '--dsn', 'postgresql://x@h/d']))"
    )
    env = {**os.environ, "AUDIT_VIEWER_TOKEN": "a-token-that-is-long-enough"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == EXIT_USAGE and "pip install 'audit-trail-middleware[viewer]'" in done.stderr
