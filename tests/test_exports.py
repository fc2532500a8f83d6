"""The public names (their order is kept by ruff's RUF022)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import audit_middleware


def test_every_public_name_is_importable_once() -> None:
    names = audit_middleware.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(audit_middleware, name), name


def test_no_private_name_is_exported() -> None:
    assert not [name for name in audit_middleware.__all__ if name.startswith("_")]


# Every import path the documentation shows must work: `from X import a, b` lines in its code blocks, and the
# dotted names it points to (`audit_middleware.store.retention.prune`, the Django settings string).
ROOT = Path(__file__).resolve().parents[1]
_FROM_IMPORT = re.compile(r"^\s*from (audit_middleware[\w.]*) import \(?([\w, ]+)\)?\s*(?:#.*)?$", re.M)
_DOTTED = re.compile(r"[`\"'](audit_middleware(?:\.\w+)+)[`\"']")
# Scope/environ keys and a PostgreSQL setting that share the package's prefix but are not import paths.
_NOT_PATHS = frozenset(
    {"audit_middleware.context", "audit_middleware.user", "audit_middleware.route", "audit_middleware.prune"}
)


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _documented_imports() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for doc in _documents():
        text = doc.read_text()
        for module, names in _FROM_IMPORT.findall(text):
            found += [(module, name.strip()) for name in names.split(",") if name.strip()]
        for dotted in _DOTTED.findall(text):
            if dotted not in _NOT_PATHS and not dotted.startswith(
                ("audit_middleware.installed", "audit_middleware.audited")
            ):
                module, _, name = dotted.rpartition(".")
                found.append((module, name))
    return found


def test_the_documentation_shows_imports() -> None:
    assert len(_documented_imports()) >= 10  # the scan below must not pass by finding nothing


@pytest.mark.parametrize(("module", "name"), sorted(set(_documented_imports())))
def test_every_documented_import_path_works(module: str, name: str) -> None:
    imported = importlib.import_module(module)
    if not hasattr(imported, name):
        importlib.import_module(f"{module}.{name}")  # a submodule (`audit_middleware.cli`)
