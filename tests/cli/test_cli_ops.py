"""The operator commands end to end against real PostgreSQL: query, export, stats, prune, tail."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from audit_middleware.cli.args import parse_when
from audit_middleware.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main
from audit_middleware.store.follow import follow
from audit_middleware.store.schema import quote_ident
from tests.conftest import PgTarget
from tests.ops_data import T0, load, ordered_keys, row


def cli(pg: PgTarget, *args: str) -> int:
    return main([args[0], "--dsn", pg.dsn, "--schema", pg.schema, *args[1:]])


def seed(pg: PgTarget, rows: list[tuple[object, ...]]) -> None:
    asyncio.run(load(pg, rows))


# --- query / export ------------------------------------------------------------------------------


def test_query_prints_a_table_limited_and_newest_first(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [row(f"act{i}", T0 + dt.timedelta(minutes=i), metadata={"ip": f"10.0.0.{i}"}) for i in range(5)]
    seed(pg, rows)
    assert cli(pg, "query", "--limit", "2", "--desc") == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("created_at (UTC)")
    assert [line.split()[3] for line in lines[1:]] == ["act4", "act3"]
    assert "10.0.0.4" in lines[1]


def test_export_jsonl_to_stdout_round_trips_every_column(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    users = [uuid.uuid4()]
    asyncio.run(pg.fetch(f"INSERT INTO {quote_ident(pg.schema)}.users (id) VALUES ($1)", users[0]))
    rows = [
        row("login", T0, user=users[0], metadata={"ip": "10.0.0.1", "ua": 'ü "quoted"'}),
        row("logout", T0, metadata={}),
    ]
    seed(pg, rows)
    assert cli(pg, "export", "--page-size", "1") == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_id = {line["id"]: line for line in lines}
    first = by_id[str(rows[0][0])]
    assert first == {
        "id": str(rows[0][0]),
        "user_id": str(users[0]),
        "action": "login",
        "metadata": {"ip": "10.0.0.1", "ua": 'ü "quoted"'},
        "created_at": "2026-03-01T12:00:00Z",
    }
    assert by_id[str(rows[1][0])]["user_id"] is None
    assert [line["id"] for line in lines] == [str(k) for k in ordered_keys(rows)]


def test_export_csv_to_a_file_with_filters(pg: PgTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [row("login_failed" if i % 2 else "login", T0 + dt.timedelta(hours=i), metadata={"i": i}) for i in range(10)]
    seed(pg, rows)
    out = tmp_path / "export.csv"
    code = cli(
        pg, "export", "--format", "csv", "-o", str(out), "--action", "login",
        "--since", "2026-03-01T13:00:00Z", "--until", "2026-03-01T20:00", "--page-size", "2",
    )  # fmt: skip
    assert code == EXIT_OK
    parsed = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [json.loads(r["metadata"])["i"] for r in parsed] == [2, 4, 6]
    assert set(parsed[0]) == {"id", "user_id", "action", "metadata", "created_at"}
    assert parsed[0]["user_id"] == ""
    assert "3 rows written" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["export.csv"]  # written as .partial, renamed when complete


def test_export_to_a_pipe_or_through_a_symlink_keeps_what_the_path_is(pg: PgTarget, tmp_path: Path) -> None:
    # A rename onto the path would replace a FIFO or device (as root, `-o /dev/null` would replace
    # /dev/null with a regular file) or the symlink itself.
    seed(pg, [row("a", T0) for _ in range(3)])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert cli(pg, "export", "-o", str(fifo)) == EXIT_OK
    reader.join(10)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and len(received[0].splitlines()) == 3
    target = tmp_path / "real.jsonl"
    target.write_text("old")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert cli(pg, "export", "-o", str(link)) == EXIT_OK
    assert link.is_symlink() and len(target.read_text().splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "pipe", "real.jsonl"]


def test_export_shows_progress_on_stderr_only(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    seed(pg, [row("a", T0) for _ in range(3)])
    assert cli(pg, "export", "--progress") == EXIT_OK
    captured = capsys.readouterr()
    assert "3/3 rows (100%)" in captured.err
    assert len(captured.out.splitlines()) == 3


def test_export_metadata_filter_from_key_value(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [row("a", T0, metadata={"status": 401}), row("a", T0, metadata={"status": "401"})]
    seed(pg, rows)
    assert cli(pg, "export", "--meta", "status=401") == EXIT_OK  # JSON number
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["id"] == str(rows[0][0])


# --- stats ---------------------------------------------------------------------------------------


def test_stats_counts_by_action_hour_and_brute_force_sources(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    def failed(ip: str, who: str, minutes: int) -> tuple[object, ...]:
        return row("login_failed", T0 + dt.timedelta(minutes=minutes), metadata={"ip": ip, "identifier": who})

    rows = [
        *(failed("203.0.113.9", f"user{i}@x.io", i) for i in range(4)),  # one IP spraying 4 accounts
        failed("198.51.100.1", "user0@x.io", 70),
        row("login", T0 + dt.timedelta(minutes=75), metadata={"ip": "198.51.100.1"}),
        row("login", T0 - dt.timedelta(days=2)),  # outside the range
    ]
    seed(pg, rows)
    code = cli(pg, "stats", "--since", "2026-03-01", "--until", "2026-03-02", "--by", "hour", "--json")
    assert code == EXIT_OK
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"] == 6
    assert stats["by_action"] == [{"action": "login_failed", "count": 5}, {"action": "login", "count": 1}]
    assert stats["by_bucket"] == [
        {"bucket": "2026-03-01T12:00:00Z", "count": 4},
        {"bucket": "2026-03-01T13:00:00Z", "count": 2},
    ]
    top_ip = stats["failed_by_ip"][0]
    assert (top_ip["key"], top_ip["failures"], top_ip["distinct"]) == ("203.0.113.9", 4, 4)
    top_identifier = stats["failed_by_identifier"][0]
    assert (top_identifier["key"], top_identifier["failures"], top_identifier["distinct"]) == ("user0@x.io", 2, 2)


def test_stats_identifier_key_and_failed_action_are_configurable(
    pg: PgTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row("auth.denied", T0, metadata={"client_ip": "10.1.1.1", "username": "root"}) for _ in range(3)]
    seed(pg, rows)
    code = cli(
        pg, "stats", "--since", "2026-03-01", "--failed-action", "auth.denied",
        "--ip-key", "client_ip", "--identifier-key", "username",
    )  # fmt: skip
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "3 events" in out
    by_ip = out.split("failed logins by ip")[1].split("failed logins by identifier")[0]
    assert "10.1.1.1" in by_ip
    assert "3 failures" in by_ip
    assert "root" in out.split("failed logins by identifier")[1]


# --- prune ---------------------------------------------------------------------------------------


def test_prune_deletes_old_rows_in_bounded_batches(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    old = [row("old", now - dt.timedelta(days=40, seconds=i // 2)) for i in range(10)]  # equal times in pairs
    recent = [row("new", now - dt.timedelta(days=5)) for _ in range(3)]
    seed(pg, old + recent)
    assert cli(pg, "prune", "--older-than", "30", "--batch-size", "3", "--no-progress") == EXIT_OK
    captured = capsys.readouterr()
    assert "deleted 10 rows" in captured.out
    assert "in 4 batches" in captured.out
    assert "deleted 3/10 rows" in captured.err  # progress after each batch
    assert sorted(r["action"] for r in asyncio.run(pg.rows())) == ["new"] * 3


def test_prune_dry_run_deletes_nothing(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    seed(pg, [row("old", T0), row("old", T0)])
    assert cli(pg, "prune", "--before", "2026-03-02", "--dry-run") == EXIT_OK
    assert "2 rows older than 2026-03-02 00:00:00 (UTC) would be removed" in capsys.readouterr().out
    assert len(asyncio.run(pg.rows())) == 2


# --- tail ----------------------------------------------------------------------------------------


async def tail_is_polling(pg: PgTarget) -> bool:
    """Whether the tail command's connection has finished reading the current window (so it is following)."""
    found = await pg.fetch(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = 'audit-middleware-cli' AND state = 'idle' "
        "AND query LIKE 'SELECT id, created_at FROM %' AND position($1 in query) > 0",
        pg.schema,
    )
    return bool(found)


def test_tail_picks_up_rows_that_land_while_it_follows(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    seed(pg, [row("before", now - dt.timedelta(seconds=1))])
    late = [row("late", now + dt.timedelta(seconds=1)), row("other", now + dt.timedelta(seconds=1))]

    def insert_once_following() -> None:
        deadline = time.monotonic() + 15
        while not asyncio.run(tail_is_polling(pg)) and time.monotonic() < deadline:
            time.sleep(0.02)
        seed(pg, late)

    thread = threading.Thread(target=insert_once_following)
    thread.start()
    try:
        code = cli(
            pg, "tail", "--json", "--last", "0", "--poll-interval", "0.05", "--max-events", "2", "--timeout", "20"
        )
    finally:
        thread.join()
    assert code == EXIT_OK
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {g["id"] for g in got} == {str(r[0]) for r in late}


@pytest.mark.anyio
async def test_follow_shows_last_rows_then_new_and_late_committed_ones(pg: PgTarget) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    await load(pg, [row(f"before{i}", now - dt.timedelta(seconds=30 - i)) for i in range(5)])
    conn = await pg.connect()
    rows = follow(conn, schema=pg.schema, last=2, poll_interval=0.02, lag=10)
    try:
        shown = [(await anext(rows)).action for _ in range(2)]
        newer = row("newer", now + dt.timedelta(seconds=1))
        await load(pg, [newer])
        assert (await anext(rows)).id == newer[0]
        # Committed after "newer" but captured 3 s before it: inside the look-back window, so still shown.
        late = row("late", now - dt.timedelta(seconds=2))
        await load(pg, [late])
        assert (await anext(rows)).id == late[0]
    finally:
        await rows.aclose()
        await conn.close()
    assert shown == ["before3", "before4"]


def test_tail_filters_and_stops_at_its_timeout(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    seed(pg, [row("login", T0), row("logout", T0)])
    assert cli(pg, "tail", "--action", "logout", "--poll-interval", "0.05", "--timeout", "0.3") == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("created_at")
    assert [line.split()[3] for line in lines[1:]] == ["logout"]


def test_tail_exits_zero_on_ctrl_c(pg: PgTarget) -> None:
    env = {**os.environ, "AUDIT_DSN": pg.dsn}
    process = subprocess.Popen(
        [sys.executable, "-m", "audit_middleware.cli", "tail", "--schema", pg.schema, "--poll-interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("created_at")  # header printed: following now
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == EXIT_OK
    finally:
        process.kill()
        process.communicate()


# --- errors and parsing --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["query", "export", "stats", "tail"])
def test_missing_table_says_to_run_init_db(
    empty_schema: PgTarget, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    extra = ["--timeout", "1"] if command == "tail" else []
    assert cli(empty_schema, command, *extra) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "does not exist" in err
    assert "audit-middleware init-db" in err


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--dsn", "postgresql://x:hunter2@127.0.0.1:1/none"]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "cannot connect" in err
    assert "hunter2" not in err


def test_a_bad_filter_is_a_usage_error(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(pg, "query", "--action", "a\x00b") == EXIT_USAGE
    assert "must not contain NUL" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["tail", "query", "export", "stats", "prune", "partitions"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == EXIT_OK
    assert "--dsn" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", dt.datetime(2026, 3, 10, 12, 0)),
        ("30m", dt.datetime(2026, 3, 10, 11, 30)),
        ("2d", dt.datetime(2026, 3, 8, 12, 0)),
        ("2026-03-01", dt.datetime(2026, 3, 1)),
        ("2026-03-01T10:00:00+02:00", dt.datetime(2026, 3, 1, 8, 0)),
        ("2026-03-01T10:00:00Z", dt.datetime(2026, 3, 1, 10, 0)),
    ],
)
def test_parse_when(text: str, expected: dt.datetime) -> None:
    assert parse_when(text, now=dt.datetime(2026, 3, 10, 12, 0)) == expected
