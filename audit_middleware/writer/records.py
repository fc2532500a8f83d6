"""The audit event and how it becomes a row.

An :class:`AuditEvent` is captured on the request path: it gets its id (a time-ordered UUIDv7) and
its ``created_at`` (UTC, capture time) there, so a retried write stores the same row and the row's
time is when the action happened, not when the batch was flushed. Turning it into a row
(:func:`to_row`) happens on the writer task and never fails; hostile values have these outcomes:

========================================  ====================================================
input                                     stored
========================================  ====================================================
action longer than 100 characters         first 100 characters; ``metadata._audit.action_full``
                                          keeps up to 1,000
NUL (``\\x00``) in any string or key      replaced by U+FFFD
lone UTF-16 surrogates                    replaced by U+FFFD (valid pairs are joined)
NaN, Infinity, -Infinity                  the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
datetime, date, time                      ISO 8601 string
UUID                                      canonical string
Decimal                                   exact string (``"1.10"``)
bytes, bytearray, memoryview              ``"base64:<data>"``
set, frozenset, tuple                     list (sets sorted by their JSON text)
Enum                                      its value, converted by these rules
non-string mapping keys                   ``str(key)``
other objects                             ``str(obj)``; ``"<unrepresentable T>"`` if that fails
a reference back up (a cycle)             the string ``"<cycle>"`` where it points back
nesting deeper than 32 in metadata that   the string ``"<max depth>"`` at level 32 (plain
needs conversion                          JSON nesting up to 254 levels is kept as is)
more than 10,000 values in metadata that  the rest replaced by ``"<too many values>"`` (shared
needs conversion                          parts count each time they appear)
integer over about 1,000 digits           the string ``"<integer of N bits>"``
metadata whose own methods raise          the event's id, user, action and time, with
                                          ``metadata._audit`` = ``{"error": <class>,
                                          "metadata_unreadable": true}``
user_id not a UUID                        user_id NULL, ``metadata.user_ref`` = str(value)
                                          (cleaned, at most 200 characters)
metadata over ``max_metadata_bytes``      strings over ``max_string_length`` shortened; if
                                          still over, only ``ip``, ``user_agent``, ``http``,
                                          ``request_id``, ``user_ref`` and ``_audit`` are kept
                                          and ``_audit.metadata_truncated`` records the size
========================================  ====================================================

``metadata._audit`` is only present when one of these rules changed something.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import uuid_utils

from .._types import JSONValue, Row

__all__ = ["COLUMNS", "MAX_ACTION_LENGTH", "AuditEvent", "to_row"]

COLUMNS = ("id", "user_id", "action", "metadata", "created_at")
MAX_ACTION_LENGTH = 100
MAX_ACTION_FULL = 1000
MAX_USER_REF = 200
MAX_DEPTH = 32
MAX_VALUES = 10_000  # values written of one metadata that needs converting: a 64 KiB row holds fewer
MAX_INT_BITS = 3_322  # about 1,000 decimal digits
KEPT_WHEN_TRUNCATED = ("ip", "user_agent", "http", "request_id", "user_ref", "_audit")
_UTC = dt.UTC
_UUID_TYPES = (uuid.UUID, uuid_utils.UUID)
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
# The fast path: orjson (about ten times the stdlib's speed). Types it would encode its own way go to
# ``_refuse`` instead, so every non-native value takes the documented slow path; the output checks
# catch the rest: NaN and the infinities come out as ``null`` (when ``null`` appears, the text is read
# back and compared: only a real None equals it), a NUL as ``\u0000``; lone surrogates make orjson raise.
_FAST_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(_UTC)


@dataclass(slots=True)
class AuditEvent:
    """One audited action, as captured.

    Attributes:
        action: what happened (``"login"``, ``"password_reset"``...).
        user_id: who did it: a UUID, a UUID string, or anything else (kept as ``metadata.user_ref``).
        metadata: JSON-like context; already redacted when it comes from the middleware.
        id: a UUIDv7 made at capture time (time-ordered, so the primary key index stays append-mostly).
        created_at: capture time, timezone-aware UTC.
    """

    action: str
    user_id: Any = None
    metadata: Mapping[str, Any] | None = None
    id: Any = field(default_factory=uuid_utils.uuid7)
    created_at: dt.datetime = field(default_factory=_now)


def clean_str(value: str) -> str:
    """Return ``value`` without NUL characters or lone surrogates (PostgreSQL text refuses both)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def to_json_value(value: Any, depth: int = 0) -> JSONValue:
    """Convert ``value`` into something ``json`` can encode and ``jsonb`` accepts (see module table)."""
    return _Converter().convert(value, depth)


class _Converter:
    """One conversion: the containers on the current path (a reference back up is a cycle) and a budget
    of values (a structure that shares a part many times over would otherwise take forever to write)."""

    __slots__ = ("budget", "path")

    def __init__(self) -> None:
        self.path: set[int] = set()
        self.budget = MAX_VALUES

    def convert(self, value: Any, depth: int) -> JSONValue:
        if value is None or value is True or value is False:
            return value
        kind = type(value)
        if kind is str:
            return clean_str(value)
        if kind is int:
            return _int(value)
        if kind is float:
            return _float(value)
        if depth >= MAX_DEPTH:
            return "<max depth>"
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            return self._container(value, depth)
        if isinstance(value, enum.Enum):
            return self.convert(value.value, depth + 1)
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return _int(int(value))
        if isinstance(value, float):
            return _float(float(value))
        if isinstance(value, str):
            return clean_str(str(value))
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, uuid.UUID | uuid_utils.UUID):
            return str(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
        try:
            return clean_str(str(value))
        except Exception:
            return f"<unrepresentable {kind.__name__}>"

    def _container(self, value: Any, depth: int) -> JSONValue:
        if id(value) in self.path:
            return "<cycle>"
        self.path.add(id(value))
        try:
            if isinstance(value, Mapping):
                out: dict[str, JSONValue] = {}
                for k, v in value.items():
                    if self._spent():
                        out["<too many values>"] = True
                        break
                    out[self._key(k, depth)] = self.convert(v, depth + 1)
                return out
            items: list[JSONValue] = []
            for v in value:
                if self._spent():
                    items.append("<too many values>")
                    break
                items.append(self.convert(v, depth + 1))
            if isinstance(value, set | frozenset):
                items.sort(key=_dumps)
            return items
        finally:
            self.path.discard(id(value))

    def _spent(self) -> bool:
        self.budget -= 1
        return self.budget < 0

    def _key(self, key: Any, depth: int) -> str:
        return clean_str(key if type(key) is str else str(self.convert(key, depth + 1)))


def _int(value: int) -> int | str:
    """The integer, unless printing it would fail (Python refuses over 4,300 digits) or bloat the row."""
    return value if value.bit_length() <= MAX_INT_BITS else f"<integer of {value.bit_length()} bits>"


def _shorten(value: JSONValue, limit: int) -> JSONValue:
    if isinstance(value, str):
        if len(value) > limit:
            return f"{value[:limit]}...[{len(value) - limit} more characters]"
        return value
    if isinstance(value, dict):
        return {k: _shorten(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v, limit) for v in value]
    return value


def _user(user_id: Any) -> tuple[Any, str | None]:
    """Return (value for the uuid column, user_ref for metadata or None)."""
    if user_id is None:
        return None, None
    if isinstance(user_id, uuid.UUID | uuid_utils.UUID):
        return user_id, None
    if isinstance(user_id, str):
        try:
            return uuid_utils.UUID(user_id), None  # parses what uuid.UUID parses, in a sixth of the time
        except ValueError:
            pass
    try:
        ref = str(user_id)
    except Exception:
        ref = f"<unrepresentable {type(user_id).__name__}>"
    return None, clean_str(ref[:MAX_USER_REF])


def encode_metadata(metadata: Mapping[str, Any], max_bytes: int, max_string: int) -> str:
    """Serialise ``metadata`` to JSON text that ``jsonb`` accepts and that fits ``max_bytes``."""
    try:  # fast path: already JSON-native, clean and small enough
        data = orjson.dumps(metadata, default=_refuse, option=_FAST_OPTIONS)
        if (
            len(data) <= max_bytes
            and b"\\u0000" not in data
            # a null is None, or a NaN/Infinity orjson wrote as null: reading it back tells (None != nan)
            and (b"null" not in data or orjson.loads(data) == metadata)
        ):
            return data.decode()
    except TypeError:  # orjson.JSONEncodeError: unsupported type, lone surrogate, non-str key, too deep
        pass
    cleaned = to_json_value(metadata)
    if not isinstance(cleaned, dict):  # a Mapping always converts to a dict; this keeps mypy honest
        cleaned = {"value": cleaned}
    text = _dumps(cleaned)
    size = len(text.encode("utf-8"))
    if size <= max_bytes:
        return text
    shortened = _shorten(cleaned, max_string)
    text = _dumps(shortened)
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    kept = {k: shortened[k] for k in KEPT_WHEN_TRUNCATED if k in shortened}
    audit = dict(kept.get("_audit") or {})
    audit["metadata_truncated"] = {"original_bytes": size, "dropped_keys": len(shortened) - len(kept)}
    kept["_audit"] = audit
    text = _dumps(kept)
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    return _dumps({"_audit": {"metadata_truncated": {"original_bytes": size, "dropped_keys": len(shortened)}}})


def to_row(event: AuditEvent, *, max_metadata_bytes: int = 64 * 1024, max_string_length: int = 1024) -> Row:
    """Turn an event into a row in ``COLUMNS`` order. Never raises for any field value.

    A value whose own methods raise (a mapping that cannot be iterated, a ``__str__`` that fails)
    still gives a row: the event's id, user, action and time, with ``metadata._audit.error`` naming
    the failure, never an exception that would take the rest of the batch with it.
    """
    try:
        return _to_row(event, max_metadata_bytes, max_string_length)
    except Exception as exc:
        return _unreadable(event, exc)


def _unreadable(event: AuditEvent, exc: Exception) -> Row:
    """The row of an event whose metadata could not be converted: what of it can still be read."""
    event_id = event.id if isinstance(event.id, _UUID_TYPES) else uuid_utils.uuid7()
    try:
        action = clean_str(event.action if type(event.action) is str else str(event.action))[:MAX_ACTION_LENGTH]
    except Exception:
        action = "<unrepresentable action>"
    metadata: dict[str, Any] = {"_audit": {"error": type(exc).__name__, "metadata_unreadable": True}}
    try:
        user_id, user_ref = _user(event.user_id)
    except Exception:
        user_id, user_ref = None, None
    if user_ref is not None:
        metadata["user_ref"] = user_ref
    created = event.created_at if isinstance(event.created_at, dt.datetime) else _now()
    return (event_id, user_id, action, _dumps(metadata), _naive_utc(created))


def _naive_utc(created: dt.datetime) -> dt.datetime:
    """``created_at`` as the column stores it: UTC, without a zone (``timestamp``)."""
    if created.tzinfo is not None:
        if created.tzinfo is not _UTC:
            created = created.astimezone(_UTC)
        created = created.replace(tzinfo=None)
    return created


def _to_row(event: AuditEvent, max_metadata_bytes: int, max_string_length: int) -> Row:
    action, user_id, metadata = event.action, event.user_id, event.metadata
    created = _naive_utc(event.created_at)
    user_id, user_ref = _user(user_id)
    # Fast path (the common case on the writer task): clean ASCII action, a UUID or no user, dict metadata.
    if (
        type(action) is str
        and len(action) <= MAX_ACTION_LENGTH
        and action.isascii()
        and "\x00" not in action
        and user_ref is None
        and type(metadata) is dict
    ):
        return (event.id, user_id, action, encode_metadata(metadata, max_metadata_bytes, max_string_length), created)
    notes: dict[str, Any] = {}
    action = clean_str(action if type(action) is str else str(to_json_value(action)))
    if len(action) > MAX_ACTION_LENGTH:
        notes["action_full"] = action[:MAX_ACTION_FULL]
        action = action[:MAX_ACTION_LENGTH]
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, Mapping):
        metadata = {"value": metadata}
    if user_ref is not None or notes:
        metadata = dict(metadata)
        if user_ref is not None:
            metadata.setdefault("user_ref", user_ref)
        if notes:
            existing = metadata.get("_audit")
            metadata["_audit"] = {**existing, **notes} if isinstance(existing, Mapping) else notes
    text = encode_metadata(metadata, max_metadata_bytes, max_string_length)
    return (event.id, user_id, action, text, created)


def with_user_ref(row: Row, reason: str) -> Row:
    """Return ``row`` with its user_id moved into ``metadata.user_ref`` (for a foreign-key miss)."""
    event_id, user_id, action, text, created = row
    metadata = json.loads(text)
    metadata.setdefault("user_ref", str(user_id))
    audit = metadata.get("_audit") if isinstance(metadata.get("_audit"), dict) else {}
    metadata["_audit"] = {**audit, "user_ref_reason": reason}
    return (event_id, None, action, _dumps(metadata), created)
