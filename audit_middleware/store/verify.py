"""``verify``: recompute the digest chain and report every sign of tampering.

Streams in constant memory: digests are read in ``seq`` order from a server-side cursor, and the
rows of a group of digests (about ``GROUP_IDS`` ids) are fetched by id in one query. Everything
runs in one ``REPEATABLE READ READ ONLY`` transaction, so writers may keep writing meanwhile.

Checks, each reported as a :class:`Finding` with the first bad position (``seq`` and ``id``):

* ``altered``: a row's canonical hash differs from the one recorded in its digest;
* ``deleted``: a digest lists an id that is not in the table;
* ``unrecorded``: a row no digest lists (inserted outside the writer);
* ``bad_hash``: a digest's ``batch_hash`` does not match its ``row_hashes``;
* ``bad_mac``: a digest's HMAC does not verify (altered digest, or a forged one made without the key);
* ``broken_link``: ``seq`` not consecutive, or ``prev_mac`` not the previous digest's ``mac``;
  also a chain that does not start at seq 1 or at a prune stub (oldest digests deleted);
* ``checkpoint``: the chain head is behind the operator's checkpoint, or its ``mac`` at the
  checkpoint's seq differs (newest rows *and* digests deleted), or the checkpoint file is not genuine;
* ``pruned``: a prune stub that is not genuine: its ``prune_mac`` does not verify (a digest turned
  into a stub, or its cutoff moved, without the key), it follows an unpruned digest (prune only
  takes the oldest), its cutoff is in the future or not after its own newest row, or it still
  lists rows; also an unpruned digest that carries a ``prune_mac``.

Rows missing from a batch whose oldest row is older than the prune horizon (the latest cutoff of
the genuine stubs) are counted as ``pruned_missing``, not as tampering: ``prune`` deletes by
``created_at`` and a batch can straddle the cutoff. Unless the batch has rows at or after the
horizon and none is left: its newest row is one no prune deleted. Only genuine stubs move the horizon, and only
their ids are left out of the search for ``unrecorded`` rows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from ..errors import AuditError, SchemaError
from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, SecretKey, check_digest_key, check_identifier
from .digests import (
    HASH_SIZE,
    TIME_FORMAT,
    ZERO_MAC,
    compute_mac,
    compute_prune_mac,
    digests_table,
    has_prune_mac,
    row_hash,
    row_text_sql,
    use_iso_datestyle,
)

__all__ = ["Checkpoint", "CheckpointError", "Finding", "VerifyReport", "verify"]

GROUP_IDS = 20_000
MAX_FINDINGS = 100
CHECKPOINT_FORMAT = "audit_middleware.checkpoint.v1"
KINDS = ("altered", "deleted", "unrecorded", "bad_hash", "bad_mac", "broken_link", "checkpoint", "pruned")


class CheckpointError(AuditError):
    """A checkpoint file cannot be read (missing, not JSON, wrong fields)."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Finding:
    """One sign of tampering."""

    kind: str
    seq: int | None
    id: str | None
    detail: str

    def __str__(self) -> str:
        where = ", ".join(p for p in (f"seq {self.seq}" if self.seq is not None else "", self.id or "") if p)
        return f"{self.kind}: {self.detail}" + (f" ({where})" if where else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The chain head as an operator exported it: kept outside the database."""

    schema: str
    table: str
    seq: int
    mac: bytes

    def _hmac(self, key: bytes) -> str:
        message = f"{CHECKPOINT_FORMAT}\n{self.schema}.{self.table}\n{self.seq}\n{self.mac.hex()}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def dump(self, path: str | Path, key: SecretKey | str) -> None:
        """Write the checkpoint as JSON with an HMAC (so a forged file is recognised)."""
        secret = check_digest_key(key).reveal()
        data = {
            "format": CHECKPOINT_FORMAT,
            "schema": self.schema,
            "table": self.table,
            "seq": self.seq,
            "mac": self.mac.hex(),
            "hmac": self._hmac(secret),
        }
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> tuple[Checkpoint, str]:
        """Read a checkpoint file; returns it and the HMAC it carries (checked by ``verify``)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format is not {CHECKPOINT_FORMAT}")
            point = cls(
                schema=data["schema"], table=data["table"], seq=int(data["seq"]), mac=bytes.fromhex(data["mac"])
            )
            return point, str(data["hmac"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


@dataclass(slots=True)
class VerifyReport:
    """What ``verify`` found. ``ok`` is True when there is no finding."""

    schema: str
    table: str
    digests: int = 0
    rows: int = 0
    pruned_digests: int = 0
    pruned_missing: int = 0
    first_seq: int | None = None
    head_seq: int | None = None
    head_mac: bytes | None = None
    horizon: str | None = None
    checkpoint: str | None = None
    counts: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def key_suspect(self) -> bool:
        """True when every digest's HMAC fails: the key given is probably not the writer's."""
        return self.digests > 0 and self.counts["bad_mac"] == self.digests

    def add(self, kind: str, seq: int | None, id: str | None, detail: str) -> None:
        self.counts[kind] += 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(kind, seq, id, detail))

    def head(self) -> Checkpoint | None:
        """The chain head as a checkpoint to export (None for an empty chain)."""
        if self.head_seq is None or self.head_mac is None:
            return None
        return Checkpoint(schema=self.schema, table=self.table, seq=self.head_seq, mac=self.head_mac)


class _Chain:
    """Checks digests one by one, in seq order."""

    def __init__(self, report: VerifyReport, key: bytes, now: str, checkpoint: Checkpoint | None) -> None:
        self.report, self.key, self.now, self.checkpoint = report, key, now, checkpoint
        self.horizon: str | None = None  # the latest cutoff of a genuine stub seen so far
        self.unpruned_seen = False
        self.prev: tuple[int, bytes] | None = None
        self.checkpoint_mac: bytes | None = None

    def link(self, d: asyncpg.Record) -> None:
        report, seq, prev_mac, mac = self.report, d["seq"], bytes(d["prev_mac"]), bytes(d["mac"])
        stub = d["pruned_before"] is not None
        if self.prev is None:
            report.first_seq = seq
            if not stub and (seq != 1 or prev_mac != ZERO_MAC):
                report.add("broken_link", seq, None, f"the chain starts at seq {seq}: older digests were deleted")
        else:
            if seq != self.prev[0] + 1:
                report.add("broken_link", seq, None, f"seq {self.prev[0] + 1}..{seq - 1} missing")
            if prev_mac != self.prev[1]:
                report.add("broken_link", seq, None, "prev_mac is not the previous digest's mac")
        expected = compute_mac(self.key, seq, prev_mac, bytes(d["batch_hash"]), d["min_created"], d["max_created"])
        if not hmac.compare_digest(expected, mac):
            report.add("bad_mac", seq, None, "HMAC does not verify (digest altered or forged without the key)")
        if stub:
            report.pruned_digests += 1
            problem = self._stub_problem(d, seq, mac)
            if problem:
                report.add("pruned", seq, None, problem)
            elif self.horizon is None or d["pruned_cutoff"] > self.horizon:
                self.horizon = d["pruned_cutoff"]
        else:
            self.unpruned_seen = True
            if d["prune_mac"] is not None:  # prune signs only the stubs it makes
                report.add("pruned", seq, None, "unpruned digest carries a prune signature")
        if self.checkpoint is not None and seq == self.checkpoint.seq:
            self.checkpoint_mac = mac
        self.prev = (seq, mac)
        report.digests += 1
        report.head_seq, report.head_mac = seq, mac

    def _stub_problem(self, d: asyncpg.Record, seq: int, mac: bytes) -> str | None:
        """Why the stub ``d`` is not a genuine prune, or None. Only a genuine stub moves the horizon."""
        cutoff, signature = d["pruned_cutoff"], d["prune_mac"]
        if signature is None or not hmac.compare_digest(
            compute_prune_mac(self.key, seq, mac, cutoff), bytes(signature)
        ):
            return (
                "stub not signed by the key (turned into a stub or its cutoff changed without the key, or "
                "pruned before stubs were signed: see `prune --sign-stubs`)"
            )
        if self.unpruned_seen:
            return "stub after an unpruned digest (prune only takes the oldest digests)"
        if cutoff > self.now:
            return f"prune cutoff {cutoff} is in the future"
        if d["max_created"] is not None and d["max_created"] >= cutoff:
            return f"stub of a batch newer than its prune cutoff {cutoff}"
        if d["ids"] or d["row_hashes"]:
            return "stub still lists rows"
        return None

    def rows(self, d: asyncpg.Record, rows: Sequence[asyncpg.Record]) -> None:
        report, seq, ids = self.report, d["seq"], d["ids"]
        hashes = bytes(d["row_hashes"])
        if len(hashes) != HASH_SIZE * len(ids) or hashlib.sha256(hashes).digest() != bytes(d["batch_hash"]):
            report.add("bad_hash", seq, None, "batch_hash does not match the recorded row hashes")
        # Stubs come first in a genuine chain, so every genuine cutoff is known before any row is checked.
        tolerate = self.horizon is not None and d["min_created"] is not None and d["min_created"] < self.horizon
        if tolerate and d["max_created"] >= self.horizon and not any(row["present"] for row in rows):
            # prune deletes only rows older than its cutoff: the batch's newest row cannot be gone.
            tolerate = False
        for i, (event_id, row) in enumerate(zip(ids, rows, strict=True)):
            if not row["present"]:
                if tolerate:
                    report.pruned_missing += 1
                else:
                    report.add("deleted", seq, str(event_id), "row listed in the digest is missing")
                continue
            report.rows += 1
            if row_hash(row["text"]) != hashes[i * HASH_SIZE : (i + 1) * HASH_SIZE]:
                nulled = row["text"][36:37] == "-"  # user_id NULL (see digests.row_text_sql)
                hint = " (user_id is NULL: also what deleting the user does)" if nulled else ""
                report.add("altered", seq, str(event_id), "row content differs from its recorded hash" + hint)


async def verify(
    conn: asyncpg.Connection,
    *,
    key: SecretKey | str,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    checkpoint: Checkpoint | None = None,
    checkpoint_hmac: str | None = None,
) -> VerifyReport:
    """Verify the digest chain of ``schema.table``; see the module docstring for what is checked.

    Args:
        conn: an open connection (a reader's role: SELECT on both tables is enough).
        key: the HMAC key the writer used.
        checkpoint / checkpoint_hmac: from :meth:`Checkpoint.load`, to detect deleted newest digests.

    Raises:
        SchemaError: the digests table does not exist, or row-level security filters what this role reads.
    """
    check_identifier("schema", schema)
    check_identifier("table", table)
    secret = check_digest_key(key).reveal()
    audit, digests = f"{_q(schema)}.{_q(table)}", f"{_q(schema)}.{_q(digests_table(table))}"
    report = VerifyReport(schema=schema, table=table)
    try:
        chain = await _verify(conn, report, secret, audit, digests, schema, table, checkpoint)
    except asyncpg.InsufficientPrivilegeError as exc:
        if "row-level security" not in str(exc):
            raise
        raise SchemaError(
            f"row-level security policies filter what this role reads of {schema}.{table} or its digests, so "
            "verify cannot see every row: run it as a role that bypasses them (superuser, or BYPASSRLS), and "
            "ask who added the policies"
        ) from None
    _check_point(report, chain, checkpoint, checkpoint_hmac, secret)
    return report


async def _verify(
    conn: asyncpg.Connection,
    report: VerifyReport,
    secret: bytes,
    audit: str,
    digests: str,
    schema: str,
    table: str,
    checkpoint: Checkpoint | None,
) -> _Chain:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # Only the built-in functions: a search_path set for the verifying role (ALTER ROLE ... SET) could
        # otherwise put an attacker's unnest(uuid[]) or to_char() before them and hide planted rows.
        await conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        # A row-level security policy could hide planted rows (or digests) from the verifying role alone: with
        # row_security off, a query such a policy would filter fails instead (roles that bypass RLS are unaffected)
        await conn.execute("SET LOCAL row_security = off")
        await use_iso_datestyle(conn)
        if await conn.fetchval("SELECT to_regclass($1)", digests) is None:
            raise SchemaError(
                f"{schema}.{digests_table(table)} does not exist: nothing to verify (create it with "
                "`audit-middleware init-db --digests` and give the writer a digest_key)"
            )
        now = await conn.fetchval(f"SELECT to_char(now() AT TIME ZONE 'UTC', '{TIME_FORMAT}')")
        chain = _Chain(report, secret, now, checkpoint)
        # A table made before stubs were signed has no prune_mac: every stub in it is then unsigned.
        signed = "prune_mac" if await has_prune_mac(conn, schema, digests_table(table)) else "NULL::bytea AS prune_mac"
        fetch_rows = await conn.prepare(
            f"SELECT t.id IS NOT NULL AS present, {row_text_sql('t')} AS text "
            f"FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, ord) LEFT JOIN {audit} t ON t.id = u.id ORDER BY u.ord"
        )
        group: list[asyncpg.Record] = []
        size = 0
        query = (
            f"SELECT seq, ids, row_hashes, batch_hash, prev_mac, mac, pruned_before, {signed}, "
            f"to_char(min_created_at, '{TIME_FORMAT}') AS min_created, "
            f"to_char(max_created_at, '{TIME_FORMAT}') AS max_created, "
            f"to_char(pruned_before, '{TIME_FORMAT}') AS pruned_cutoff FROM {digests} ORDER BY seq"
        )
        async for d in conn.cursor(query, prefetch=20):
            chain.link(d)
            if d["pruned_before"] is None:
                group.append(d)
                size += len(d["ids"])
            if size >= GROUP_IDS:
                await _check_group(chain, fetch_rows, group)
                group, size = [], 0
        await _check_group(chain, fetch_rows, group)
        report.horizon = chain.horizon
        await _unrecorded(conn, report, audit, digests)
    return chain


async def _check_group(chain: _Chain, fetch_rows: Any, group: list[asyncpg.Record]) -> None:
    if not group:
        return
    ids = [i for d in group for i in d["ids"]]
    rows = await fetch_rows.fetch(ids)
    start = 0
    for d in group:
        end = start + len(d["ids"])
        chain.rows(d, rows[start:end])
        start = end


async def _unrecorded(conn: asyncpg.Connection, report: VerifyReport, audit: str, digests: str) -> None:
    # A set difference (one hash or sort pass over each side), not an anti join: the planner cannot
    # estimate unnest(ids) and, without fresh statistics, picks a nested loop that costs rows x rows.
    # EXCEPT ALL also counts a second copy of a listed id (possible in a partitioned table).
    found = await conn.fetch(
        # A stub's ids never count: a row listed only by a stub is a row prune deleted, or an insert.
        f"WITH missing AS (SELECT id FROM {audit} EXCEPT ALL SELECT unnest(ids) FROM {digests} "
        "WHERE pruned_before IS NULL) "
        f"SELECT t.id::text AS id, to_char(t.created_at, '{TIME_FORMAT}') AS created, count(*) OVER () AS total "
        f"FROM missing m JOIN {audit} t ON t.id = m.id ORDER BY t.created_at, t.id LIMIT {MAX_FINDINGS}"
    )
    for row in found:
        report.add("unrecorded", None, row["id"], f"row (created_at {row['created']}) is in no digest")
    if found:  # counts every such row, not only the ones listed
        report.counts["unrecorded"] += found[0]["total"] - len(found)


def _check_point(
    report: VerifyReport, chain: _Chain, checkpoint: Checkpoint | None, claimed: str | None, key: bytes
) -> None:
    if checkpoint is None:
        return
    where = f"{report.schema}.{report.table}"
    if f"{checkpoint.schema}.{checkpoint.table}" != where:
        report.add("checkpoint", checkpoint.seq, None, f"checkpoint is for {checkpoint.schema}.{checkpoint.table}")
    elif claimed is None or not hmac.compare_digest(checkpoint._hmac(key), claimed):
        report.add("checkpoint", checkpoint.seq, None, "checkpoint file's HMAC does not verify (altered or other key)")
    elif report.head_seq is None or report.head_seq < checkpoint.seq:
        report.add(
            "checkpoint",
            checkpoint.seq,
            None,
            f"chain head is seq {report.head_seq}, behind the checkpoint's seq {checkpoint.seq}: "
            "newest digests deleted",
        )
    elif chain.checkpoint_mac is not None:
        if not hmac.compare_digest(chain.checkpoint_mac, checkpoint.mac):
            report.add("checkpoint", checkpoint.seq, None, "digest at the checkpoint's seq differs from the checkpoint")
        else:
            report.checkpoint = f"seq {checkpoint.seq} matches the checkpoint"
    else:
        report.checkpoint = f"seq {checkpoint.seq} is older than the oldest digest (pruned): not compared"
