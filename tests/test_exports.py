"""The public names (their order is kept by ruff's RUF022)."""

from __future__ import annotations

import audit_middleware


def test_every_public_name_is_importable_once() -> None:
    names = audit_middleware.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(audit_middleware, name), name


def test_no_private_name_is_exported() -> None:
    assert not [name for name in audit_middleware.__all__ if name.startswith("_")]
