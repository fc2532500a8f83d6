"""Parsing captured request bodies into plain Python values, before redaction.

Nothing here redacts: :class:`~audit_middleware.redaction.Redactor` calls :func:`parse_body` and then
redacts what it returns. The rule this module keeps is that an opaque or malformed body never comes
back raw: the result is either parsed fields or an ``omitted`` reason.

===================================================  ==========================================
body                                                 outcome
===================================================  ==========================================
empty                                                ``omitted="empty"``
``Content-Encoding`` other than identity             ``omitted="compressed"``
JSON (``application/json``, ``*+json``), complete     parsed value
JSON cut at the capture cap                          ``omitted="truncated"``
JSON that does not parse (or is not UTF-8/16/32)     ``omitted="unparseable"``
``application/x-www-form-urlencoded``                fields; a cut body keeps its whole pairs
                                                     and sets ``truncated``
a "form" with raw spaces, quotes, controls, or       ``omitted="unparseable"`` (the wrong
non-ASCII bytes                                      content type, e.g. multipart or JSON)
``multipart/form-data``                              fields; files as :class:`FileInfo` (name,
                                                     size, content type; never contents)
multipart without a boundary, or malformed           ``omitted="unparseable"``
images, audio, video, octet-stream, archives, PDF    ``omitted="binary"``
anything else (text/plain, XML, no content type)     ``omitted="unsupported"``
===================================================  ==========================================
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_to_bytes

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["FileInfo", "ParsedBody", "PartialText", "media_type", "parse_body", "parse_urlencoded"]

_BINARY_PREFIXES = ("image/", "audio/", "video/", "font/")
_BINARY_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-7z-compressed",
        "application/vnd.rar",
        "application/x-protobuf",
        "application/protobuf",
        "application/grpc",
        "application/msgpack",
        "application/x-msgpack",
        "application/cbor",
    }
)
_IDENTITY_ENCODINGS = frozenset({"", "identity"})
MAX_MEDIA_TYPE = 100
# What a urlencoded form may contain: unreserved and sub-delimiter characters, '%' escapes, '+'.
_URLENCODED_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%+&=!$'()*,/:;?@[]"
_json_decode = json.JSONDecoder(parse_constant=str).decode  # NaN/Infinity stay strings; built once


@dataclass(slots=True)
class FileInfo:
    """What is kept of an uploaded file: never its contents."""

    filename: str | None
    size: int
    content_type: str | None
    truncated: bool = False


@dataclass(slots=True)
class ParsedBody:
    """The parse result: ``fields`` when parsed, else ``omitted`` says why not."""

    media_type: str | None
    fields: Any = None
    truncated: bool = False
    omitted: str | None = None


def media_type(content_type: str | None) -> str | None:
    """Return the lower-cased media type of a Content-Type value (``None`` when missing or blank)."""
    if not content_type:
        return None
    value = content_type.split(";", 1)[0].strip().lower()
    return value[:MAX_MEDIA_TYPE] or None


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def parse_urlencoded(data: str, max_items: int) -> tuple[dict[str, Any], int]:
    """Parse ``a=1&b=2&a=3`` into ``{"a": ["1", "3"], "b": "2"}``.

    Returns the fields and how many pairs beyond ``max_items`` were dropped. Blank values are kept,
    keys without ``=`` get ``""``, empty pairs are skipped; percent-escapes decode as UTF-8 with
    replacement characters, so this never raises.
    """
    fields: dict[str, Any] = {}
    pairs = data.split("&")
    kept = 0
    dropped = 0
    for pair in pairs:
        if not pair:
            continue
        if kept >= max_items:
            dropped += 1
            continue
        kept += 1
        name, _, value = pair.partition("=")
        key = _unquote(name)
        text = _unquote(value)
        if key in fields:
            previous = fields[key]
            if isinstance(previous, list):
                previous.append(text)
            else:
                fields[key] = [previous, text]
        else:
            fields[key] = text
    return fields, dropped


def _unquote(value: str) -> str:
    """``unquote_plus`` with UTF-8 and replacement characters; a third faster on the request path."""
    if "+" in value:
        value = value.replace("+", " ")
    if "%" in value:
        try:
            return unquote_to_bytes(value).decode("utf-8", "replace")
        except UnicodeEncodeError:  # lone surrogates in a caller's str: the slower, tolerant way
            return unquote(value, errors="replace")
    return value


class _MultipartCollector:
    """Callbacks for python-multipart's streaming parser; keeps field text and file metadata only."""

    __slots__ = ("dropped", "fields", "header_field", "header_value", "headers", "max_items", "max_value", "part")

    def __init__(self, max_items: int, max_value: int) -> None:
        self.fields: dict[str, Any] = {}
        self.max_items = max_items
        self.max_value = max_value
        self.dropped = 0
        self.headers: dict[bytes, bytes] = {}
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.part: list[Any] | None = None  # [name, FileInfo | None, bytearray value]

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.headers = {}
        self.part = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        raw_name = options.get(b"name")
        if raw_name is None:
            return  # a part without a name cannot be a form field; ignore it
        name = raw_name.decode("utf-8", "replace")
        if len(self.fields) >= self.max_items and name not in self.fields:
            self.dropped += 1
            return
        file: FileInfo | None = None
        if b"filename" in options:
            ctype = self.headers.get(b"content-type")
            file = FileInfo(
                filename=options[b"filename"].decode("utf-8", "replace"),
                size=0,
                content_type=media_type(ctype.decode("latin-1")) if ctype else None,
            )
        self.part = [name, file, bytearray()]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part is None:
            return
        file = part[1]
        if file is not None:
            file.size += end - start
            return
        value: bytearray = part[2]
        room = max(self.max_value - len(value), 0)
        value += data[start : min(end, start + room)]

    def on_part_end(self) -> None:
        if self.part is not None:
            self._store(self.part, complete=True)
            self.part = None

    def _store(self, part: list[Any], *, complete: bool) -> None:
        name, file, value = part
        item: Any
        if file is not None:
            file.truncated = not complete
            item = file
        else:
            item = bytes(value).decode("utf-8", "replace")
            if not complete:
                item = PartialText(item)
        if name in self.fields:
            previous = self.fields[name]
            if isinstance(previous, list):
                previous.append(item)
            else:
                self.fields[name] = [previous, item]
        else:
            self.fields[name] = item


# A logger that emits nothing, outside the logging tree (dictConfig and handlers never see it): the
# malformed-body warnings of python-multipart say no more than the "unparseable" outcome already does.
_QUIET = logging.Logger("audit_middleware.bodies.multipart", logging.CRITICAL + 1)


class PartialText(str):
    """A text field whose value was cut by the capture cap (the redactor marks it)."""

    __slots__ = ()


def _parse_multipart(content_type: str, body: bytes, complete: bool, max_items: int, max_value: int) -> ParsedBody:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        return ParsedBody("multipart/form-data", omitted="unparseable")
    collector = _MultipartCollector(max_items, max_value)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.logger = _QUIET  # it warns on every malformed body: a client must not be able to fill the app's log
        parser.write(body)
        if complete:
            parser.finalize()
            if parser.state != MultipartState.END:
                raise FormParserError("multipart body ended before its closing boundary")
    except Exception:  # the parser on hostile input: whatever it raises, the body is unparseable
        return ParsedBody("multipart/form-data", omitted="unparseable")
    if not complete and collector.part is not None:
        collector._store(collector.part, complete=False)
    return ParsedBody("multipart/form-data", collector.fields, truncated=not complete or collector.dropped > 0)


def parse_body(
    content_type: str | None,
    body: bytes,
    *,
    complete: bool,
    content_encoding: str | None = None,
    max_items: int = 100,
    max_value: int = 4096,
) -> ParsedBody:
    """Parse a captured body (see the module table for every outcome). Never raises.

    Args:
        content_type: the request's Content-Type header value, if any.
        body: the captured bytes (the whole body, or a prefix when ``complete`` is false).
        complete: whether ``body`` is the whole request body.
        content_encoding: the request's Content-Encoding header value, if any.
        max_items: at most this many form or multipart fields are collected.
        max_value: at most this many bytes of a multipart text field are kept.
    """
    media = media_type(content_type)
    if not body:
        return ParsedBody(media, omitted="empty")
    if content_encoding is not None and content_encoding.strip().lower() not in _IDENTITY_ENCODINGS:
        return ParsedBody(media, omitted="compressed")
    if media is None:
        return ParsedBody(None, omitted="unsupported")
    if _is_json(media):
        if not complete:
            return ParsedBody(media, omitted="truncated")
        try:
            return ParsedBody(media, _json_decode(body.decode(json.detect_encoding(body), "surrogatepass")))
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return ParsedBody(media, omitted="unparseable")
    if media == "application/x-www-form-urlencoded":
        body = body.rstrip(b"\r\n")  # some clients end the form with a newline
        if body.translate(None, _URLENCODED_BYTES):
            return ParsedBody(media, omitted="unparseable")  # raw spaces, quotes, controls: not a urlencoded form
        text = body.decode("ascii")
        if not complete:
            text = text[: max(text.rfind("&"), 0)]  # the last pair may be cut: drop it
        fields, dropped = parse_urlencoded(text, max_items)
        return ParsedBody(media, fields, truncated=not complete or dropped > 0)
    if media == "multipart/form-data":
        return _parse_multipart(content_type or "", body, complete, max_items, max_value)
    if media in _BINARY_TYPES or media.startswith(_BINARY_PREFIXES):
        return ParsedBody(media, omitted="binary")
    return ParsedBody(media, omitted="unsupported")
