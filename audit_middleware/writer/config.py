"""Configuration values: frozen dataclasses validated at construction.

Explicit arguments always win over ``AUDIT_*`` environment variables, which only fill in what was
not given (see :meth:`WriterConfig.from_env`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigurationError

__all__ = ["DEFAULT_TABLE", "Secret", "SecretKey", "WriterConfig", "mask_dsn"]

DEFAULT_SCHEMA = "public"
DEFAULT_TABLE = "user_audit_logs"
OVERFLOW_POLICIES = ("spool", "drop", "block")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def mask_dsn(dsn: str) -> str:
    """Return ``dsn`` with any password replaced by ``***`` (for logs and reprs).

    Example:
        >>> mask_dsn("postgresql://app:hunter2@db:5432/prod")
        'postgresql://app:***@db:5432/prod'
    """
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "***"
    if parts.password is None:
        masked = dsn
    else:
        userinfo = f"{parts.username or ''}:***"
        host = parts.netloc.rpartition("@")[2]
        masked = urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", masked)


class Secret(str):
    """A string whose ``repr`` never shows its value; used for DSNs."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Secret({mask_dsn(str(self))!r})"


class SecretKey(str):
    """A key (e.g. the digest HMAC key) whose ``repr`` and ``str`` in f-strings never show it.

    Use ``key.reveal()`` to get the bytes for the HMAC.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "SecretKey('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def reveal(self) -> bytes:
        """The key as UTF-8 bytes."""
        return str.__str__(self).encode("utf-8")


MIN_DIGEST_KEY_LENGTH = 16


def check_identifier(name: str, value: str) -> None:
    """Raise ``ConfigurationError`` unless ``value`` is a plain SQL identifier."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigurationError(f"{name} must be a plain SQL identifier (letters, digits, _), got {value!r}")


def check_digest_key(key: object) -> SecretKey:
    """Return ``key`` as a :class:`SecretKey`, or raise ``ConfigurationError`` (never showing it)."""
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigurationError("digest_key must be UTF-8 text") from None
    if not isinstance(key, str):
        raise ConfigurationError(f"digest_key must be a string, got {type(key).__name__}")
    if len(key) < MIN_DIGEST_KEY_LENGTH:
        raise ConfigurationError(f"digest_key must be at least {MIN_DIGEST_KEY_LENGTH} characters")
    return key if isinstance(key, SecretKey) else SecretKey(key)


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterConfig:
    """How events are buffered and written.

    Attributes:
        dsn: PostgreSQL connection string (masked in ``repr``). Required for ``PostgresSink``.
        schema: schema of the audit table.
        table: name of the audit table.
        batch_size: the most rows sent in one COPY; a full batch is written at once.
        flush_interval: seconds after which a partial batch is written anyway.
        max_buffer: the most events held in memory; further events are dropped and counted.
        max_metadata_bytes: cap of one row's serialised metadata (see ``records.py``).
        max_string_length: strings longer than this are shortened when metadata is over the cap.
        pool_min_size / pool_max_size: size of the writer's own asyncpg pool.
        write_timeout: seconds one write attempt may take before it is abandoned and retried.
        retry_initial / retry_max: capped exponential backoff (with jitter) between failed attempts.
        close_timeout: seconds ``aclose()`` waits for the final flush before spooling the remainder.
        overflow: what a full buffer does with a new event: ``"spool"`` (append it to the disk spool),
            ``"drop"`` (count it; a gap event records the hole) or ``"block"`` (a caller on another
            thread waits up to ``block_timeout``, then the event is dropped; on the event loop's own
            thread ``block`` spools instead, since waiting there would stall the loop and the writer).
        spool_dir: directory of the disk spool (default: the user's state directory, ``delivery.default_spool_dir``).
        spool_max_bytes: cap of one process's spool; past it events are dropped and counted.
        block_timeout: seconds ``overflow="block"`` waits for room.
        dead_letter_path: JSON-lines file of rows the database refused (default ``<spool_dir>/dead-letter.jsonl``).
        connect_timeout: seconds to open a database connection.
        digest_key: HMAC key (at least 16 characters) that turns on tamper-evident digests
            (``AUDIT_DIGEST_KEY``; see ``digests.py``). Never logged; masked in ``repr``.
    """

    dsn: str | None = None
    schema: str = DEFAULT_SCHEMA
    table: str = DEFAULT_TABLE
    batch_size: int = 2000
    flush_interval: float = 0.2
    max_buffer: int = 100_000
    max_metadata_bytes: int = 64 * 1024
    max_string_length: int = 1024
    pool_min_size: int = 1
    pool_max_size: int = 2
    write_timeout: float = 10.0
    retry_initial: float = 0.1
    retry_max: float = 5.0
    close_timeout: float = 10.0
    overflow: str = "spool"
    spool_dir: str | None = None
    spool_max_bytes: int = 512 * 1024 * 1024
    block_timeout: float = 1.0
    dead_letter_path: str | None = None
    connect_timeout: float = 5.0
    digest_key: SecretKey | None = None

    def __post_init__(self) -> None:
        if self.dsn is not None and not isinstance(self.dsn, Secret):
            if not isinstance(self.dsn, str) or not self.dsn:
                raise ConfigurationError(f"dsn must be a non-empty string, got {type(self.dsn).__name__}")
            object.__setattr__(self, "dsn", Secret(self.dsn))
        check_identifier("schema", self.schema)
        check_identifier("table", self.table)
        for name in ("batch_size", "max_buffer", "max_metadata_bytes", "max_string_length", "pool_max_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.pool_min_size, bool) or not isinstance(self.pool_min_size, int) or self.pool_min_size < 0:
            raise ConfigurationError(f"pool_min_size must be a non-negative integer, got {self.pool_min_size!r}")
        if self.pool_min_size > self.pool_max_size:
            raise ConfigurationError("pool_min_size must not exceed pool_max_size")
        if self.max_metadata_bytes < 1024:
            raise ConfigurationError("max_metadata_bytes must be at least 1024")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigurationError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {self.overflow!r}")
        for name in ("spool_dir", "dead_letter_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{name} must be a non-empty path string, got {value!r}")
        if isinstance(self.spool_max_bytes, bool) or not isinstance(self.spool_max_bytes, int):
            raise ConfigurationError(f"spool_max_bytes must be an integer, got {self.spool_max_bytes!r}")
        if self.spool_max_bytes < 0:
            raise ConfigurationError(f"spool_max_bytes must not be negative, got {self.spool_max_bytes!r}")
        for name in (
            "flush_interval",
            "write_timeout",
            "retry_initial",
            "retry_max",
            "close_timeout",
            "block_timeout",
            "connect_timeout",
        ):
            _positive(name, getattr(self, name))
        if self.retry_initial > self.retry_max:
            raise ConfigurationError("retry_initial must not exceed retry_max")
        if self.digest_key is not None:
            object.__setattr__(self, "digest_key", check_digest_key(self.digest_key))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **explicit: Any) -> WriterConfig:
        """Build a config from ``explicit`` arguments, filling the rest from ``AUDIT_<FIELD>`` variables.

        Example:
            >>> WriterConfig.from_env({"AUDIT_BATCH_SIZE": "500"}, table="audit").batch_size
            500
        """
        env = os.environ if environ is None else environ
        known = {f.name: f for f in fields(cls)}
        unknown = set(explicit) - set(known)
        if unknown:
            raise ConfigurationError(f"unknown option(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name in known:
            if name in explicit and explicit[name] is not None:
                values[name] = explicit[name]
                continue
            raw = env.get(f"AUDIT_{name.upper()}")
            if raw is None or raw == "":
                continue
            default = getattr(cls(), name)
            try:
                values[name] = type(default)(raw) if isinstance(default, int | float) else raw
            except ValueError:
                raise ConfigurationError(f"AUDIT_{name.upper()} must be a number, got {raw!r}") from None
        return cls(**values)

    def with_options(self, **changes: Any) -> WriterConfig:
        """Return a copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)
