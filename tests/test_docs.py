"""The documentation cannot drift from the code: every option is documented, every page is in the site."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from audit_middleware import RedactionConfig, WriterConfig
from audit_middleware.capture.config import MiddlewareConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION = ROOT / "docs" / "configuration.md"


def _documented_names() -> set[str]:
    """The option names in the first column of the page's tables (a cell may name two: `a`, `b`)."""
    cells = re.findall(r"^\| ((?:`\w+`(?:, )?)+) \|", CONFIGURATION.read_text(), re.M)
    return {name for cell in cells for name in re.findall(r"`(\w+)`", cell)}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (config, f.name)
        for config in (MiddlewareConfig, WriterConfig, RedactionConfig)
        for f in dataclasses.fields(config)
    ],
)
def test_every_option_is_on_the_configuration_page(config: type, field: str) -> None:
    assert field in _documented_names(), f"{config.__name__}.{field} is missing from docs/configuration.md"


def test_every_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert pages, "no documentation pages found"
    assert [page for page in pages if f" {page}" not in nav] == []
