"""Tamper evidence: one HMAC-chained digest row per written batch, in the batch's own transaction.

For every batch the writer stores, a row in the companion table (``user_audit_log_digests`` for
``user_audit_logs``, see :func:`digests_table`) records, in the same transaction as the rows:

* ``ids``: the batch's ids in write order;
* ``row_hashes``: SHA-256 of each row's canonical text (32 bytes per row, same order);
* ``batch_hash``: SHA-256 of ``row_hashes``;
* ``min_created_at`` / ``max_created_at`` of the batch (what ``prune`` decides on);
* ``seq``, ``prev_mac`` (the previous digest's ``mac``; 32 zero bytes for seq 1) and
  ``mac`` = HMAC-SHA256(key, seq, prev_mac, batch_hash, min/max created_at).

One chain per audit table across all writers: appends are serialised with a transaction-level
advisory lock, and the head is read after the lock is held (``seq`` is the primary key, so even a
misbehaving writer cannot fork the chain).

Canonical row text (see :func:`row_text_sql`): id, user_id, created_at, action and the jsonb
text of metadata, unambiguously delimited, under ``DateStyle = ISO``, computed by PostgreSQL from
the values it stores, both when the batch is written and when ``verify`` reads it back; ``verify``
hashes the text in Python. So jsonb's normalisation (key order, whitespace, numbers) can never
cause a false alarm, and the writer spends no CPU of its own on it. The row hash is SHA-256 of
that text in UTF-8.

Pruning keeps the chain: :func:`prune_batch` deletes the rows of the oldest digests (a prefix of
the chain, in ``seq`` order) whose rows are all older than the cutoff and turns those digests into
*stubs* (``ids`` and ``row_hashes`` emptied, ``pruned_before`` set), whose ``mac`` still verifies.
What makes a digest count as pruned is signed with the key: ``prune_mac`` =
HMAC-SHA256(key, seq, mac, pruned_before) (:func:`compute_prune_mac`), so without the key nobody can
turn a digest into a stub or move the prune horizon. Prune must run with ``SET LOCAL
audit_middleware.prune = 'on'`` when the append-only triggers are installed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .._types import Row
from ..errors import SchemaError
from ..writer.config import SecretKey, check_digest_key, check_identifier
from ..writer.records import COLUMNS

__all__ = [
    "ZERO_MAC",
    "DigestWriter",
    "compute_mac",
    "compute_prune_mac",
    "digests_table",
    "prune_batch",
    "row_hash",
    "row_text_sql",
    "sign_stubs",
]

ZERO_MAC = bytes(32)
HASH_SIZE = 32
TIME_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US'
MAC_CONTEXT = b"audit_middleware.digest.v1"
PRUNE_CONTEXT = b"audit_middleware.prune.v1"
PRUNE_SETTING = "audit_middleware.prune"
MAX_IDENTIFIER = 63

Conn = asyncpg.Connection | PoolConnectionProxy
"""A plain connection or one acquired from a pool."""


def digests_table(table: str) -> str:
    """The companion table's name: ``user_audit_logs`` -> ``user_audit_log_digests``.

    Example:
        >>> digests_table("user_audit_logs"), digests_table("audit")
        ('user_audit_log_digests', 'audit_digests')
    """
    check_identifier("table", table)
    base = table[:-1] if table.endswith("s") and len(table) > 1 else table
    return base[: MAX_IDENTIFIER - len("_digests")] + "_digests"


def row_text_sql(alias: str = "") -> str:
    """The SQL expression of a row's canonical text (columns optionally qualified by ``alias``).

    ``id`` (36 characters), ``user_id`` (36 characters, or ``-`` for NULL), ``created_at`` (ISO,
    never contains ``|``), ``|``, ``action`` as ``<length>:<text>`` (or ``-`` for NULL), then the
    jsonb text of ``metadata`` to the end (empty for NULL): every field's end is known, so two
    different rows never share a text. Cheaper for the server than a quoted record literal. The
    timestamp's text depends on ``DateStyle``: the writer and ``verify`` use ``DATESTYLE`` (ISO).
    """
    p = f"{alias}." if alias else ""
    return (
        f"({p}id::text || coalesce({p}user_id::text, '-') || {p}created_at::text || '|' || "
        f"coalesce(length({p}action) || ':' || {p}action, '-') || coalesce({p}metadata::text, ''))"
    )


DATESTYLE = "ISO, MDY"


async def use_iso_datestyle(conn: Conn) -> None:
    """Make the current transaction print timestamps as ISO (a no-op round trip saved when it already does)."""
    current = getattr(conn.get_settings(), "DateStyle", "")
    if not str(current).upper().startswith("ISO"):
        await conn.execute(f"SET LOCAL DateStyle = '{DATESTYLE}'")


def row_hash(text: str) -> bytes:
    """SHA-256 of a row's canonical text (as selected with :func:`row_text_sql`), UTF-8 encoded."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def compute_mac(
    key: bytes, seq: int, prev_mac: bytes, batch_hash: bytes, min_created: str | None, max_created: str | None
) -> bytes:
    """HMAC-SHA256 binding a digest to its place in the chain and its content."""
    message = b"\n".join(
        (
            MAC_CONTEXT,
            str(seq).encode("ascii"),
            prev_mac.hex().encode("ascii"),
            batch_hash.hex().encode("ascii"),
            (min_created or "-").encode("ascii"),
            (max_created or "-").encode("ascii"),
        )
    )
    return hmac.new(key, message, hashlib.sha256).digest()


def compute_prune_mac(key: bytes, seq: int, mac: bytes, pruned_before: str) -> bytes:
    """HMAC-SHA256 signing that digest ``seq`` (whose ``mac`` binds its content and place) was pruned.

    ``pruned_before`` is the cutoff as ``to_char(pruned_before, TIME_FORMAT)``: the prune horizon
    ``verify`` tolerates missing rows under, so it must be as authentic as the digest itself.
    """
    message = b"\n".join(
        (PRUNE_CONTEXT, str(seq).encode("ascii"), mac.hex().encode("ascii"), pruned_before.encode("ascii"))
    )
    return hmac.new(key, message, hashlib.sha256).digest()


def lock_key(schema: str, table: str) -> str:
    """The text whose ``hashtext`` is the chain's advisory lock."""
    return f"audit_middleware.digests:{schema}.{table}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DigestWriter:
    """Writes a batch and its digest in one transaction (used by ``PostgresSink`` when a key is set).

    Args:
        schema / table: the audit table; the digests go to ``digests_table(table)`` in ``schema``.
        key: the HMAC key (``SecretKey`` or text of at least 16 characters).

    The rows go in with one ``INSERT ... SELECT FROM unnest(...)`` whose canonical hashes are
    computed by the server in the same statement, so the writer never needs SELECT on the audit
    rows. With ``retry=True`` it is ``ON CONFLICT (id) DO NOTHING`` and only the rows actually
    inserted are digested: a batch whose earlier attempt committed (with its digest) adds nothing.
    """

    def __init__(self, *, schema: str, table: str, key: SecretKey | str) -> None:
        check_identifier("schema", schema)
        check_identifier("table", table)
        self.schema = schema
        self.table = table
        self.digests = digests_table(table)
        self._key = check_digest_key(key)
        self._lock = lock_key(schema, table)
        target = f"{_quote(schema)}.{_quote(table)}"
        self.qualified_digests = f"{_quote(schema)}.{_quote(self.digests)}"
        self._upsert = (
            f"INSERT INTO {target} ({', '.join(COLUMNS)}) "
            "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::varchar[], $4::jsonb[], $5::timestamp[]) "
            "ON CONFLICT DO NOTHING RETURNING id"  # no target: also fits a partitioned (id, created_at) key
        )
        self._hash = f"""
SELECT n, row_hashes, sha256(row_hashes) AS batch_hash, min_created, max_created,
       pg_advisory_xact_lock(hashtext($3))::text AS locked
FROM (
    SELECT count(*) AS n,
           string_agg(sha256(convert_to({row_text_sql("t")}, 'UTF8')), ''::bytea ORDER BY u.ord) AS row_hashes,
           to_char(min(t.created_at), '{TIME_FORMAT}') AS min_created,
           to_char(max(t.created_at), '{TIME_FORMAT}') AS max_created
    FROM unnest($1::uuid[], $2::timestamp[]) WITH ORDINALITY AS u(id, created_at, ord)
    CROSS JOIN LATERAL (  -- one index probe per id: LIMIT keeps the planner from hashing the whole table
        SELECT * FROM {target} s
        WHERE s.id = u.id AND s.created_at = u.created_at  -- created_at: partition pruning
        LIMIT 1
    ) AS t
) AS batch"""
        self._head = f"SELECT seq, mac FROM {self.qualified_digests} ORDER BY seq DESC LIMIT 1"
        self._append = (
            f"INSERT INTO {self.qualified_digests} "
            "(seq, ids, row_hashes, batch_hash, min_created_at, max_created_at, prev_mac, mac) "
            "VALUES ($1, $2, $3, $4, $5::text::timestamp, $6::text::timestamp, $7, $8)"
        )

    def __repr__(self) -> str:
        return f"DigestWriter(schema={self.schema!r}, table={self.table!r}, key=SecretKey('***'))"

    async def check(self, conn: Conn) -> None:
        """Raise ``SchemaError`` if the digests table is missing (run ``init-db --digests``)."""
        found = await conn.fetchval("SELECT to_regclass($1)", self.qualified_digests)
        if found is None:
            raise SchemaError(
                f"{self.schema}.{self.digests} does not exist: run `audit-middleware init-db --digests` "
                "(a digest_key is set, so every batch needs its digest)"
            )

    async def write(self, conn: Conn, rows: Sequence[Row], *, retry: bool, timeout: float) -> int:
        """Insert ``rows`` and their digest in one transaction; return how many rows were inserted."""
        async with conn.transaction():
            await use_iso_datestyle(conn)
            if retry:
                columns: list[Any] = [list(c) for c in zip(*rows, strict=True)]
                inserted = {str(r["id"]) for r in await conn.fetch(self._upsert, *columns, timeout=timeout)}
                rows = [row for row in rows if str(row[0]) in inserted]
            else:
                await conn.copy_records_to_table(
                    self.table, records=rows, columns=COLUMNS, schema_name=self.schema, timeout=timeout
                )
            ids = [row[0] for row in rows]
            if not ids:
                return 0  # every row was stored (with its digest) by an earlier attempt
            created = [row[4] for row in rows]
            batch = await conn.fetchrow(self._hash, ids, created, self._lock, timeout=timeout)
            assert batch is not None  # an aggregate always returns one row
            if batch["n"] != len(ids):  # never seal a batch whose rows read back differently
                raise SchemaError(
                    f"digest: {len(ids)} rows written but {batch['n']} read back by (id, created_at) "
                    f"from {self.schema}.{self.table}; does a trigger rewrite them?"
                )
            # The lock is held now: this statement's snapshot sees every earlier committed digest.
            head = await conn.fetchrow(self._head, timeout=timeout)
            seq, prev = (head["seq"] + 1, bytes(head["mac"])) if head else (1, ZERO_MAC)
            batch_hash = bytes(batch["batch_hash"])
            mac = compute_mac(self._key.reveal(), seq, prev, batch_hash, batch["min_created"], batch["max_created"])
            await conn.execute(
                self._append,
                seq,
                ids,
                batch["row_hashes"],
                batch_hash,
                batch["min_created"],
                batch["max_created"],
                prev,
                mac,
                timeout=timeout,
            )
            return int(batch["n"])


async def prune_batch(
    conn: asyncpg.Connection,
    *,
    schema: str,
    table: str,
    before: dt.datetime,
    key: SecretKey | str,
    limit: int = 100,
    max_rows: int | None = None,
    delete_rows: bool = True,
    rows_from: str | None = None,
) -> tuple[int, int]:
    """Prune up to ``limit`` of the oldest digests whose rows are all older than ``before``; return (digests, rows).

    Deletes those digests' rows and turns the digests into stubs signed with ``key`` (their ``mac``
    and chain links stay verifiable; ``pruned_before`` records the cutoff, which ``verify`` uses to
    accept rows missing from batches that straddle it). Only a prefix of the chain is pruned: the
    digests in ``seq`` order up to the first one with a row at or after ``before`` (a later batch of
    older rows, e.g. a spool replayed late, waits until the prefix reaches it), so a stub after an
    unpruned digest is always tampering. Returns (0, 0) when there is no digests table.
    Call it inside a transaction that ran ``SET LOCAL audit_middleware.prune = 'on'``, repeatedly
    until it returns 0 digests; then delete undigested older rows (or drop old partitions).
    ``before`` is a naive UTC timestamp, like ``created_at``.

    ``max_rows`` stops adding digests once their rows reach it (at least one digest is taken), to
    keep a transaction short. ``delete_rows=False`` only stubs the digests (rows deleted: 0): for a
    caller that drops the partitions holding those rows in the same transaction. ``rows_from`` (a
    qualified, quoted relation name) deletes the rows from that relation only instead of the audit
    table: the default partition, whose rows the partition drop does not take.

    Raises:
        ConfigurationError: ``key`` is not a valid digest key.
        SchemaError: the digests table predates ``prune_mac`` (run ``init-db --digests`` again).
    """
    check_identifier("schema", schema)
    secret = check_digest_key(key).reveal()
    name = digests_table(table)
    digests = f"{_quote(schema)}.{_quote(name)}"
    if await conn.fetchval("SELECT to_regclass($1)", digests) is None:
        return 0, 0
    if not await has_prune_mac(conn, schema, name):
        raise SchemaError(f"{schema}.{name} has no prune_mac column: run `audit-middleware init-db --digests` again")
    target = f"{_quote(schema)}.{_quote(table)}"
    picked = await conn.fetch(
        f"SELECT seq, cardinality(ids) AS n, max_created_at < $1 AS old FROM {digests} "
        "WHERE pruned_before IS NULL ORDER BY seq LIMIT $2",
        before,
        limit,
    )
    seqs: list[int] = []
    rows = 0
    for record in picked:
        if not record["old"] or (seqs and max_rows is not None and rows + record["n"] > max_rows):
            break
        seqs.append(record["seq"])
        rows += record["n"]
    if not seqs:
        return 0, 0
    deleted = 0
    if delete_rows:
        deleted = await conn.fetchval(
            f"WITH gone AS (DELETE FROM {rows_from or target} WHERE id IN (SELECT unnest(ids) FROM {digests} "
            "WHERE seq = ANY($1::bigint[])) RETURNING 1) SELECT count(*) FROM gone",
            seqs,
        )
    stubs = await conn.fetch(
        f"UPDATE {digests} SET ids = '{{}}', row_hashes = '', pruned_before = $2 WHERE seq = ANY($1::bigint[]) "
        f"RETURNING seq, mac, to_char(pruned_before, '{TIME_FORMAT}') AS cutoff",
        seqs,
        before,
    )
    signatures = [compute_prune_mac(secret, r["seq"], bytes(r["mac"]), r["cutoff"]) for r in stubs]
    await conn.execute(
        f"UPDATE {digests} d SET prune_mac = s.prune_mac "
        "FROM unnest($1::bigint[], $2::bytea[]) AS s(seq, prune_mac) WHERE d.seq = s.seq",
        [r["seq"] for r in stubs],
        signatures,
    )
    return len(seqs), int(deleted)


async def has_prune_mac(conn: Conn, schema: str, digests: str) -> bool:
    """Whether the digests table has ``prune_mac`` (added by ``init-db --digests`` since stubs are signed)."""
    found = await conn.fetchval(
        "SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'prune_mac' AND NOT attisdropped",
        f"{_quote(schema)}.{_quote(digests)}",
    )
    return found is not None


async def sign_stubs(conn: asyncpg.Connection, *, schema: str, table: str, key: SecretKey | str) -> int:
    """Sign the stubs a prune made before stubs were signed (``prune_mac`` NULL); return how many.

    A one-off migration that vouches for those stubs with ``key``: run it only after ``verify`` of
    the earlier version found the chain intact, since whoever could turn digests into stubs before
    is trusted by it. Stubs after the oldest signed one are left alone (this version made that one,
    so an unsigned stub after it is not an earlier version's). Needs the ``prune_mac`` column
    (``init-db --digests``) and, with the append-only triggers, a transaction that ran
    ``SET LOCAL audit_middleware.prune = 'on'``.
    """
    check_identifier("schema", schema)
    secret = check_digest_key(key).reveal()
    name = digests_table(table)
    if await conn.fetchval("SELECT to_regclass($1)", f"{_quote(schema)}.{_quote(name)}") is None:
        return 0
    if not await has_prune_mac(conn, schema, name):
        raise SchemaError(f"{schema}.{name} has no prune_mac column: run `audit-middleware init-db --digests` again")
    digests = f"{_quote(schema)}.{_quote(name)}"
    # Only stubs older than every signed one: once this version has pruned, an unsigned stub after
    # its stubs cannot be an earlier version's, and signing it would vouch for a forgery.
    stubs = await conn.fetch(
        f"SELECT seq, mac, to_char(pruned_before, '{TIME_FORMAT}') AS cutoff FROM {digests} "
        "WHERE pruned_before IS NOT NULL AND prune_mac IS NULL "
        f"AND seq < coalesce((SELECT min(seq) FROM {digests} WHERE prune_mac IS NOT NULL), 'Infinity'::numeric) "
        "ORDER BY seq"
    )
    await conn.execute(
        f"UPDATE {digests} d SET prune_mac = s.prune_mac "
        "FROM unnest($1::bigint[], $2::bytea[]) AS s(seq, prune_mac) WHERE d.seq = s.seq",
        [r["seq"] for r in stubs],
        [compute_prune_mac(secret, r["seq"], bytes(r["mac"]), r["cutoff"]) for r in stubs],
    )
    return len(stubs)
