"""The disk spool on its own: format, permissions, cap, order, torn lines, claiming orphans across processes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from audit_middleware._types import Row
from audit_middleware.writer.deadletter import DeadLetterFile
from audit_middleware.writer.spool import Spool, read_segment, segments, spool_target

TARGET = spool_target("postgresql://x@127.0.0.1:1/db", "public", "user_audit_logs")


def make_rows(n: int, action: str = "login") -> list[Row]:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, 678901)
    return [(uuid.uuid4(), uuid.uuid4() if i % 2 else None, action, json.dumps({"i": i}), now) for i in range(n)]


def replay_all(spool: Spool) -> list[Row]:
    out: list[Row] = []
    for path in spool.seal():
        for batch in read_segment(path, 7):
            out.extend(batch)
    return out


def test_rows_round_trip_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, TARGET, max_bytes=10**6, segment_bytes=500)
    rows = make_rows(40)
    assert spool.append(rows[:25]) == 25
    assert spool.append(rows[25:]) == 15
    assert len(spool.seal()) > 1  # small segments: several files, read back oldest first
    assert replay_all(spool) == rows
    assert spool.pending == 40


def test_files_are_owner_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path, TARGET, max_bytes=10**6)
    spool.append(make_rows(1))
    [path] = spool.seal()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(spool.directory.stat().st_mode) == 0o700
    assert spool.directory.parent.parent == tmp_path


def test_cap_refuses_what_does_not_fit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, TARGET, max_bytes=400)  # a few rows of ~130 bytes
    taken = spool.append(make_rows(10))
    assert 0 < taken < 10 and spool.bytes <= 400
    assert spool.append(make_rows(1)) == 0
    assert spool.append(make_rows(1), partial=False) == 0
    assert len(replay_all(spool)) == taken


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, TARGET, max_bytes=10**6)
    rows = make_rows(3)
    spool.append(rows)
    [path] = spool.seal()
    with path.open("ab") as f:
        f.write(b'["half a row')
    assert [r[0] for r in replay_all(spool)] == [r[0] for r in rows]


def test_replayed_segment_is_deleted_and_empty_spool_removed_on_close(tmp_path: Path) -> None:
    spool = Spool(tmp_path, TARGET, max_bytes=10**6)
    spool.append(make_rows(5))
    [path] = spool.seal()
    spool.replayed(path, 5)
    assert (spool.pending, spool.bytes, path.exists()) == (0, 0, False)
    spool.close()
    assert not spool.directory.exists()


def test_live_spool_is_not_claimed_but_a_closed_one_is(tmp_path: Path) -> None:
    first = Spool(tmp_path, TARGET, max_bytes=10**6)
    first.append(make_rows(4))
    first.sync()
    second = Spool(tmp_path, TARGET, max_bytes=10**6)
    assert second.claim_orphans() == []  # first still holds its lock
    first.close()  # non-empty: stays on disk for the next start
    [claimed] = second.claim_orphans()
    assert claimed.directory == first.directory and len(claimed.segments) == 1
    third = Spool(tmp_path, TARGET, max_bytes=10**6)
    assert third.claim_orphans() == []  # held by second now
    claimed.release(remove=True)
    assert not first.directory.exists()
    assert third.claim_orphans() == []


def test_other_targets_are_never_claimed(tmp_path: Path) -> None:
    other = Spool(tmp_path, spool_target("postgresql://x@127.0.0.1:1/db", "public", "other"), max_bytes=10**6)
    other.append(make_rows(2))
    other.close()
    assert Spool(tmp_path, TARGET, max_bytes=10**6).claim_orphans() == []


CHILD = """
import sys, json, datetime as dt, uuid, os, signal
from audit_middleware.writer.spool import Spool
spool = Spool(sys.argv[1], sys.argv[2], max_bytes=10**6)
now = dt.datetime(2026, 1, 1)
spool.append([(uuid.uuid4(), None, "child", "{}", now) for _ in range(3)])
spool.sync()
print(spool.directory, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_spool_of_a_killed_process_is_claimed_by_exactly_one_of_many(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), TARGET], capture_output=True, text=True)
    assert out.returncode == -9
    directory = Path(out.stdout.strip())
    claimers = [Spool(tmp_path, TARGET, max_bytes=10**6) for _ in range(3)]
    claims = [c.claim_orphans() for c in claimers]
    assert sorted(len(c) for c in claims) == [0, 0, 1]
    [claimed] = [c for cs in claims for c in cs]
    assert claimed.directory == directory
    assert sum(len(batch) for path in segments(directory) for batch in read_segment(path, 100)) == 3
    claimed.release(remove=True)


def test_dead_letter_file_is_owner_only_json_lines(tmp_path: Path) -> None:
    letters = DeadLetterFile(tmp_path / "dl" / "dead-letter.jsonl")
    [row] = make_rows(1, action="poison")
    letters.append(row, "CheckViolationError (23514): nope")
    [record] = letters.read()
    assert record["id"] == str(row[0]) and record["action"] == "poison"
    assert record["reason"].startswith("CheckViolationError") and record["row"]["metadata"] == {"i": 0}
    assert stat.S_IMODE(os.stat(letters.path).st_mode) == 0o600


def _planted_spool(base: Path) -> Path:
    """What someone else could leave in a shared spool directory: a closed spool of made-up rows."""
    planter = Spool(base.parent, base.name, max_bytes=10**6)
    planter.append(make_rows(3, action="forged"))
    planter.close()
    return planter.directory


def test_a_spool_directory_others_can_write_is_neither_used_nor_claimed(tmp_path: Path) -> None:
    # The default spool lives under the shared temp directory: a local user who creates it first, open
    # to all, could delete what we spool, or plant a "stopped process" whose rows we would replay.
    base = tmp_path / TARGET
    _planted_spool(base)
    base.chmod(0o777)
    spool = Spool(tmp_path, TARGET, max_bytes=10**6)
    with pytest.raises(OSError, match="not private"):
        spool.claim_orphans()
    with pytest.raises(OSError, match="not private"):
        spool.append(make_rows(1))
    base.chmod(0o700)
    assert len(spool.claim_orphans()) == 1  # the same directory, private again: claimed


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_a_spool_directory_owned_by_another_user_is_neither_used_nor_claimed(tmp_path: Path) -> None:
    base = tmp_path / TARGET
    planted = _planted_spool(base)
    os.chown(base, 65534, 65534)
    spool = Spool(tmp_path, TARGET, max_bytes=10**6)
    with pytest.raises(OSError, match="not private"):
        spool.claim_orphans()
    os.chown(base, 0, 0)
    os.chown(planted, 65534, 65534)  # our base, someone else's spool inside it: skipped
    assert spool.claim_orphans() == []


def test_the_dead_letter_file_is_never_written_through_a_planted_link(tmp_path: Path) -> None:
    # dead-letter.jsonl sits directly in spool_dir, by default under the shared temp directory: a link
    # planted there must not turn our append into a write to a file of the link's choosing
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    shared = tmp_path / "spool"
    shared.mkdir(mode=0o700)
    (shared / "dead-letter.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        DeadLetterFile(shared / "dead-letter.jsonl").append(make_rows(1)[0], "test")
    assert victim.read_text() == "untouched\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_a_dead_letter_file_someone_else_owns_is_not_appended_to(tmp_path: Path) -> None:
    shared = tmp_path / "spool"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: anyone may create a file here
    planted = shared / "dead-letter.jsonl"
    planted.write_text("")
    os.chown(planted, 65534, 65534)  # created first by someone else, who could read what we append
    with pytest.raises(OSError, match="belongs to uid 65534"):
        DeadLetterFile(planted).append(make_rows(1)[0], "test")
    assert planted.read_text() == ""


def test_the_spool_follows_the_table_not_the_credentials() -> None:
    # Rotating the password (or the user, or an option) must not strand what an outage spooled
    same = [
        "postgresql://app:old-secret@db.internal/audit",
        "postgresql://app:new-secret@db.internal:5432/audit",
        "postgres://reader@DB.internal/audit?sslmode=require&application_name=web",
        "postgresql://db.internal/audit?password=x",
    ]
    assert len({spool_target(dsn, "public", "user_audit_logs") for dsn in same}) == 1
    different = [
        "postgresql://app@db.internal/other",
        "postgresql://app@db2.internal/audit",
        "postgresql://app@db.internal:5433/audit",
        "postgresql:///audit?host=/var/run/postgresql",
        "postgresql://alice:pw@db.internal",  # no database named: the server takes the user's name
        "postgresql://bob:pw@db.internal",
        "postgresql://app@db.internal?database=sales",  # asyncpg's own spelling of dbname
    ]
    targets = {spool_target(dsn, "public", "user_audit_logs") for dsn in [same[0], *different]}
    assert len(targets) == 1 + len(different)
    assert spool_target(same[0], "audit", "user_audit_logs") != spool_target(same[0], "public", "user_audit_logs")


def test_a_spool_left_under_the_former_directory_name_is_still_claimed(tmp_path: Path) -> None:
    dsn = "postgresql://app:pw@db.internal/audit"
    legacy = "user_audit_logs-" + hashlib.sha256(f"{dsn}|public|user_audit_logs".encode()).hexdigest()[:16]
    before = Spool(tmp_path, legacy, max_bytes=10**6)  # what a writer of the previous release left
    before.append(make_rows(3))
    before.close()
    spool = Spool(tmp_path, spool_target(dsn, "public", "user_audit_logs"), max_bytes=10**6, formerly=[legacy])
    [claimed] = spool.claim_orphans()
    assert claimed.directory == before.directory and len(claimed.segments) == 1
