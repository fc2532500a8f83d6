"""Row conversion: every hostile value has a defined outcome and never raises (records.py table)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest
import uuid_utils

from audit_middleware.writer.records import COLUMNS, AuditEvent, clean_str, to_row, with_user_ref

# From the table contract (/work/shared/user_audit_logs.md): action VARCHAR(100). Stated here, never read from
# the code under test, so a wrong limit in the code fails these tests.
ACTION_COLUMN_LENGTH = 100


def metadata_of(event: AuditEvent, **limits: int) -> dict[str, Any]:
    stored: dict[str, Any] = json.loads(to_row(event, **limits)[3])
    return stored


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    def __str__(self) -> str:
        return "opaque-object"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_columns_follow_the_table_contract() -> None:
    assert COLUMNS == ("id", "user_id", "action", "metadata", "created_at")


def test_event_gets_uuid7_id_and_aware_utc_time_at_capture() -> None:
    before = dt.datetime.now(dt.UTC)
    event = AuditEvent("login")
    after = dt.datetime.now(dt.UTC)
    assert event.id.version == 7
    assert event.created_at.tzinfo is dt.UTC
    assert before <= event.created_at <= after


def test_ids_are_time_ordered() -> None:
    ids = [AuditEvent("x").id for _ in range(1000)]
    assert ids == sorted(ids, key=lambda u: u.bytes)


def test_row_is_in_column_order_with_naive_utc_time() -> None:
    user = uuid.uuid4()
    event = AuditEvent("login", user, {"ip": "10.0.0.1"})
    row = to_row(event)
    assert row[0] == event.id
    assert row[1] == user
    assert row[2] == "login"
    assert json.loads(row[3]) == {"ip": "10.0.0.1"}
    assert row[4] == event.created_at.replace(tzinfo=None)


def test_non_utc_time_is_converted_to_utc() -> None:
    tz = dt.timezone(dt.timedelta(hours=5))
    event = AuditEvent("x", created_at=dt.datetime(2026, 1, 1, 12, 0, tzinfo=tz))
    assert to_row(event)[4] == dt.datetime(2026, 1, 1, 7, 0)


# -- action --------------------------------------------------------------------------------------


def test_long_action_is_cut_to_100_and_kept_in_metadata() -> None:
    event = AuditEvent("a" * 150)
    row = to_row(event)
    assert row[2] == "a" * ACTION_COLUMN_LENGTH
    assert json.loads(row[3])["_audit"]["action_full"] == "a" * 150


def test_action_with_nul_and_surrogate_is_cleaned() -> None:
    assert to_row(AuditEvent("log\x00in\ud800"))[2] == "log\ufffdin\ufffd"


def test_non_string_action_is_stringified() -> None:
    assert to_row(AuditEvent(Color.RED))[2] == "red"  # type: ignore[arg-type]


# -- user_id -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "stored", "user_ref"),
    [
        # UUIDs pass through
        (uuid.UUID(int=5), uuid.UUID(int=5), None),
        ("00000000-0000-0000-0000-000000000005", uuid.UUID(int=5), None),
        (None, None, None),
        # anything else is kept, bounded, as metadata.user_ref
        (42, None, "42"),
        ("alice@example.com", None, "alice@example.com"),
        ("x" * 500, None, "x" * 200),
        ("bad\x00id", None, "bad\ufffdid"),
    ],
)
def test_user_id_outcomes(user_id: Any, stored: Any, user_ref: str | None) -> None:
    row = to_row(AuditEvent("login", user_id, {}))
    # a UUID either way (uuid.UUID, or uuid_utils.UUID parsed from a string): same value for the column
    assert (None if row[1] is None else str(row[1])) == (None if stored is None else str(stored))
    assert json.loads(row[3]).get("user_ref") == user_ref


def test_uuid_utils_user_id_is_accepted() -> None:
    user = uuid_utils.uuid7()
    assert to_row(AuditEvent("login", user))[1] is user


# -- metadata values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        # strings PostgreSQL refuses
        ("a\x00b", "a\ufffdb"),
        ("lone \ud800 high", "lone \ufffd high"),
        ("lone \udc00 low", "lone \ufffd low"),
        ("pair \ud83d\ude00", "pair \U0001f600"),
        # non-finite floats
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        ([None, 1.0, float("nan")], [None, 1.0, "NaN"]),  # beside a null, deep in a list
        # not JSON-native
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2026-01-02T03:04:05+00:00"),
        (Point(1, 2), "Point(x=1, y=2)"),
        (Level.HIGH, 2),
        (dt.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Decimal("1.10"), "1.10"),
        (b"\x00\xff", "base64:AP8="),
        ({3, 1, 2}, [1, 2, 3]),
        ((1, "a"), [1, "a"]),
        (Color.RED, "red"),
        (Opaque(), "opaque-object"),
        (Unprintable(), "<unrepresentable Unprintable>"),
        # native values untouched
        (True, True),
        (1.5, 1.5),
        (10**30, 10**30),
    ],
)
def test_metadata_value_outcomes(value: Any, stored: Any) -> None:
    assert metadata_of(AuditEvent("x", None, {"v": value}))["v"] == stored


def test_non_string_and_nul_keys_are_stringified_and_cleaned() -> None:
    assert metadata_of(AuditEvent("x", None, {1: "a", "k\x00": "b"})) == {"1": "a", "k\ufffd": "b"}  # type: ignore[dict-item]


def test_deep_nesting_that_needs_conversion_is_cut_at_32() -> None:
    deep: dict[str, Any] = {"leaf": Decimal("1")}
    for _ in range(50):
        deep = {"n": deep}
    text = to_row(AuditEvent("x", None, deep))[3]
    assert text.count('{"n":') == 32
    assert text.endswith('"<max depth>"' + "}" * 32)


def test_plain_json_nesting_is_kept() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(50):
        deep = {"n": deep}
    assert to_row(AuditEvent("x", None, deep))[3].count('{"n":') == 50


def test_self_referencing_metadata_does_not_raise() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert metadata_of(AuditEvent("x", None, loop)) == {"self": "<cycle>"}


def test_a_reference_back_up_is_cut_where_it_points_back() -> None:
    # Two references back up made the walk visit 2**32 paths before the depth cap stopped it: to_row,
    # on the writer's loop (the app's, under ASGI), never returned.
    loop: dict[str, Any] = {"n": 1}
    loop["a"] = loop
    loop["b"] = [loop, {"up": loop}]
    assert metadata_of(AuditEvent("x", None, loop)) == {"n": 1, "a": "<cycle>", "b": ["<cycle>", {"up": "<cycle>"}]}


def test_shared_values_are_written_each_time_they_appear_up_to_a_budget() -> None:
    shared = {"k": 1.5}
    assert metadata_of(AuditEvent("x", None, {"a": shared, "b": [shared, shared], "nan": float("nan")})) == {
        "a": {"k": 1.5},
        "b": [{"k": 1.5}, {"k": 1.5}],
        "nan": "NaN",
    }
    tree: list[Any] = [float("nan")]  # a NaN sends it down the converting path
    for _ in range(16):
        tree = [tree, tree]  # 65,536 leaves in 17 levels: far more than a row can hold
    text = to_row(AuditEvent("x", None, {"tree": tree}))[3]
    assert "<too many values>" in text and text.count("NaN") < 20_000


def test_an_integer_too_long_to_print_becomes_a_note_not_a_lost_batch() -> None:
    # str() of an int over 4,300 digits raises ValueError: it killed the writer task, and the batch with it
    metadata: dict[Any, Any] = {"n": 10**5000, 10**5000: "key", "ok": 2**70}
    row = to_row(AuditEvent("x", None, metadata))
    stored = json.loads(row[3])
    assert stored["n"] == "<integer of 16610 bits>" and stored["ok"] == 2**70
    assert stored["<integer of 16610 bits>"] == "key"


class _Exploding(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("a user mapping that cannot be read")

    def __len__(self) -> int:
        return 1


def test_metadata_that_cannot_even_be_read_still_gives_a_row() -> None:
    event = AuditEvent("export", str(uuid.UUID(int=5)), _Exploding())
    event_id, user_id, action, text, created = to_row(event)
    assert (event_id, action, created) == (event.id, "export", event.created_at.replace(tzinfo=None))
    assert str(user_id) == str(uuid.UUID(int=5))  # what could be read is kept
    assert json.loads(text) == {"_audit": {"error": "RuntimeError", "metadata_unreadable": True}}


def test_non_mapping_metadata_is_wrapped() -> None:
    assert metadata_of(AuditEvent("x", None, [1, 2])) == {"value": [1, 2]}  # type: ignore[arg-type]


# -- size caps -----------------------------------------------------------------------------------


def test_oversized_strings_are_shortened_when_over_the_cap() -> None:
    metadata = {"ip": "10.0.0.1", "note": "n" * 5000}
    stored = metadata_of(AuditEvent("x", None, metadata), max_metadata_bytes=2048, max_string_length=100)
    assert stored["ip"] == "10.0.0.1"
    assert stored["note"].startswith("n" * 100)
    assert stored["note"].endswith("...[4900 more characters]")


def test_oversized_metadata_keeps_only_the_core_keys() -> None:
    metadata = {"ip": "10.0.0.1", "http": {"status": 200}, **{f"k{i}": "v" * 90 for i in range(200)}}
    row = to_row(AuditEvent("x", None, metadata), max_metadata_bytes=2048, max_string_length=100)
    stored = json.loads(row[3])
    assert len(row[3].encode()) <= 2048
    assert stored["ip"] == "10.0.0.1"
    assert stored["http"] == {"status": 200}
    assert stored["_audit"]["metadata_truncated"]["dropped_keys"] == 200
    assert stored["_audit"]["metadata_truncated"]["original_bytes"] > 2048


def test_small_metadata_is_unchanged_and_has_no_audit_note() -> None:
    assert "_audit" not in metadata_of(AuditEvent("x", None, {"a": [1, {"b": None}]}))


def test_clean_str_leaves_clean_text_alone() -> None:
    text = "héllo wörld ✓"
    assert clean_str(text) is text


# -- each rule of the table at its boundary ------------------------------------------------------------


@pytest.mark.parametrize("action", ["a" * 100, "é" * 100, "a" * 99 + "\x00"])
def test_an_action_that_fills_the_column_is_stored_whole(action: str) -> None:
    row = to_row(AuditEvent(action))
    assert row[2] == action.replace("\x00", "\ufffd")
    assert len(row[2]) == ACTION_COLUMN_LENGTH
    assert "_audit" not in json.loads(row[3])


@pytest.mark.parametrize(("length", "kept"), [(101, 101), (1000, 1000), (1001, 1000), (5000, 1000)])
def test_an_action_over_the_column_keeps_up_to_1000_characters_in_metadata(length: int, kept: int) -> None:
    row = to_row(AuditEvent("é" * length))
    assert row[2] == "é" * ACTION_COLUMN_LENGTH
    assert json.loads(row[3])["_audit"]["action_full"] == "é" * kept


def test_a_long_action_joins_an_existing_audit_note() -> None:
    metadata = metadata_of(AuditEvent("a" * 101, metadata={"_audit": {"source": "import"}}))
    assert metadata["_audit"] == {"source": "import", "action_full": "a" * 101}


def test_a_nul_in_an_ascii_action_never_reaches_the_column() -> None:
    assert to_row(AuditEvent("log\x00in", metadata={}))[2] == "log\ufffdin"


def test_an_integer_of_3322_bits_is_kept_and_one_bit_more_is_not() -> None:
    # "integer over about 1,000 digits": 3,322 bits is the largest 1,000-digit power of two's neighbourhood
    largest = 2**3322 - 1
    assert metadata_of(AuditEvent("x", metadata={"n": largest, "d": Decimal(1)}))["n"] == largest
    assert metadata_of(AuditEvent("x", metadata={"n": 2**3322, "d": Decimal(1)}))["n"] == "<integer of 3323 bits>"


def test_metadata_of_10000_values_is_written_whole_and_one_more_is_not() -> None:
    # the key counts as one value, each item of the set as one: 1 + 9,999 = 10,000 values
    whole = metadata_of(AuditEvent("x", metadata={"v": set(range(9999))}), max_metadata_bytes=10**6)
    assert len(whole["v"]) == 9999 and "<too many values>" not in whole["v"]
    over = metadata_of(AuditEvent("x", metadata={"v": set(range(10000))}), max_metadata_bytes=10**6)
    assert len(over["v"]) == 10000 and "<too many values>" in over["v"]
    keys = metadata_of(
        AuditEvent("x", metadata={"m": {f"k{i}": Decimal(i) for i in range(10000)}}), max_metadata_bytes=10**6
    )
    assert len(keys["m"]) == 10000 and keys["m"]["<too many values>"] is True


def test_a_set_of_mixed_types_is_sorted_by_its_json_text() -> None:
    assert metadata_of(AuditEvent("x", metadata={"s": {1, "a"}}))["s"] == ["a", 1]


def test_non_ascii_text_is_stored_as_text_not_escapes() -> None:
    text = to_row(AuditEvent("x", metadata={"name": "Zoë", "d": Decimal("1.5")}))[3]
    assert '"Zoë"' in text and json.loads(text) == {"name": "Zoë", "d": "1.5"}


@pytest.mark.parametrize("key", ["ip", "user_agent", "http", "request_id", "user_ref"])
def test_each_core_key_survives_oversized_metadata(key: str) -> None:
    metadata = {f"field{i}": "v" * 20 for i in range(4000)} | {key: "core"}
    stored = metadata_of(AuditEvent("x", metadata=metadata))
    assert stored[key] == "core"
    assert stored["_audit"]["metadata_truncated"]["dropped_keys"] == 4000


def test_an_existing_audit_note_survives_oversized_metadata() -> None:
    metadata = {f"field{i}": "v" * 20 for i in range(4000)} | {"_audit": {"source": "import"}}
    stored = metadata_of(AuditEvent("x", metadata=metadata))
    assert stored["_audit"]["source"] == "import" and "metadata_truncated" in stored["_audit"]


def test_when_even_the_core_keys_are_too_large_only_the_note_is_stored() -> None:
    metadata = {"ip": "1" * 5000, "body": "b" * 5000}
    stored = metadata_of(AuditEvent("x", metadata=metadata), max_metadata_bytes=300, max_string_length=1000)
    size = len(json.dumps(metadata, separators=(",", ":")))
    assert stored == {"_audit": {"metadata_truncated": {"original_bytes": size, "dropped_keys": 2}}}


def test_strings_in_lists_are_shortened_too() -> None:
    stored = metadata_of(AuditEvent("x", metadata={"a": ["x" * 5000]}), max_metadata_bytes=2000, max_string_length=10)
    assert stored["a"] == ["x" * 10 + "...[4990 more characters]"]


def test_a_string_of_exactly_the_cap_is_not_shortened() -> None:
    stored = metadata_of(
        AuditEvent("x", metadata={"a": "x" * 10, "b": "y" * 5000}), max_metadata_bytes=2000, max_string_length=10
    )
    assert stored["a"] == "x" * 10


@pytest.mark.parametrize("convert", [False, True])
def test_metadata_of_exactly_the_byte_limit_is_kept_whole(convert: bool) -> None:
    metadata: dict[str, Any] = {"d": Decimal("1")} if convert else {"d": "1"}
    padding = "x" * (200 - len('{"d":"1","a":""}'))  # a Decimal is stored as its exact string
    stored = metadata_of(AuditEvent("x", metadata={**metadata, "a": padding}), max_metadata_bytes=200)
    assert stored["a"] == padding and "_audit" not in stored


def test_the_default_limit_is_64_kib() -> None:
    fits = {"a": "x" * (64 * 1024 - len('{"a":""}'))}
    assert metadata_of(AuditEvent("x", metadata=fits)) == fits
    over = {"a": "x" * (64 * 1024 - len('{"a":""}') + 1)}
    assert metadata_of(AuditEvent("x", metadata=over))["a"].endswith("more characters]")


def test_an_unreadable_event_keeps_its_id_user_action_and_time() -> None:
    event_id = uuid.uuid4()
    event = AuditEvent("login", user_id="alice", metadata=_Exploding(), id=event_id)
    row = to_row(event)
    assert row[0] == event_id and row[1] is None and row[2] == "login"
    assert json.loads(row[3]) == {
        "_audit": {"error": "RuntimeError", "metadata_unreadable": True},
        "user_ref": "alice",
    }
    long = to_row(AuditEvent("a" * 300, metadata=_Exploding()))
    assert long[2] == "a" * ACTION_COLUMN_LENGTH
    odd = to_row(AuditEvent(Color.RED, metadata=_Exploding()))  # type: ignore[arg-type]
    assert odd[2] == "Color.RED"


def test_an_unreadable_event_with_an_unprintable_action_still_gives_a_row() -> None:
    row = to_row(AuditEvent(Unprintable(), metadata=_Exploding()))  # type: ignore[arg-type]
    assert row[2] == "<unrepresentable action>"


def test_an_unprintable_user_id_is_named_by_its_type() -> None:
    assert metadata_of(AuditEvent("x", user_id=Unprintable()))["user_ref"] == "<unrepresentable Unprintable>"


def test_with_user_ref_moves_the_user_into_metadata_and_says_why() -> None:
    user = uuid.uuid4()
    row = to_row(AuditEvent("login", user_id=user, metadata={"_audit": {"source": "import"}, "ip": "1.2.3.4"}))
    moved = with_user_ref(row, "no such user")
    assert moved[0] == row[0] and moved[1] is None and moved[2] == "login" and moved[4] == row[4]
    assert json.loads(moved[3]) == {
        "_audit": {"source": "import", "user_ref_reason": "no such user"},
        "ip": "1.2.3.4",
        "user_ref": str(user),
    }
    plain = with_user_ref(to_row(AuditEvent("login", user_id=user)), "gone")
    assert json.loads(plain[3]) == {"_audit": {"user_ref_reason": "gone"}, "user_ref": str(user)}
