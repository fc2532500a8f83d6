"""Validation of the delivery options (each error names its field)."""

from __future__ import annotations

from typing import Any

import pytest

from audit_middleware import WriterConfig
from audit_middleware.errors import ConfigurationError


@pytest.mark.parametrize(
    ("options", "field"),
    [
        # policies
        ({"overflow": "discard"}, "overflow"),
        ({"overflow": None}, "overflow"),
        # paths
        ({"spool_dir": ""}, "spool_dir"),
        ({"dead_letter_path": 3}, "dead_letter_path"),
        # sizes and times
        ({"spool_max_bytes": -1}, "spool_max_bytes"),
        ({"spool_max_bytes": True}, "spool_max_bytes"),
        ({"block_timeout": 0}, "block_timeout"),
        ({"connect_timeout": -1.0}, "connect_timeout"),
    ],
)
def test_invalid_delivery_option_names_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        WriterConfig(**options)


def test_delivery_options_from_the_environment() -> None:
    config = WriterConfig.from_env(
        {"AUDIT_OVERFLOW": "drop", "AUDIT_SPOOL_DIR": "/var/spool/audit", "AUDIT_SPOOL_MAX_BYTES": "1024"}
    )
    assert (config.overflow, config.spool_dir, config.spool_max_bytes) == ("drop", "/var/spool/audit", 1024)


def test_defaults_spool_on_overflow() -> None:
    config = WriterConfig()
    assert (config.overflow, config.spool_dir, config.dead_letter_path) == ("spool", None, None)
