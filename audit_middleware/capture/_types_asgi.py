"""ASGI type aliases (kept apart from ``_types.py`` so the ASGI and WSGI sides evolve independently)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
AnyASGIApp: TypeAlias = Callable[..., Awaitable[Any]]
"""What the middleware wraps: any ASGI callable, whatever its own annotations (Django's ``ASGIHandler``
takes ``scope: dict`` and Mapping messages, which a Starlette-style ``ASGIApp`` would reject)."""
