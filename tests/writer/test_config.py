"""WriterConfig validation, environment fallback and DSN masking."""

from __future__ import annotations

from typing import Any

import pytest

from audit_middleware.errors import ConfigurationError
from audit_middleware.writer.config import Secret, WriterConfig, mask_dsn


def test_defaults_are_valid() -> None:
    config = WriterConfig()
    assert (config.schema, config.table, config.batch_size) == ("public", "user_audit_logs", 2000)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        # identifiers
        ({"schema": "bad-name"}, "schema"),
        ({"table": "x; DROP TABLE users"}, "table"),
        # sizes
        ({"batch_size": 0}, "batch_size"),
        ({"max_buffer": -1}, "max_buffer"),
        ({"batch_size": True}, "batch_size"),
        ({"max_metadata_bytes": 10}, "max_metadata_bytes"),
        ({"pool_min_size": 3, "pool_max_size": 2}, "pool_min_size"),
        # times
        ({"flush_interval": 0}, "flush_interval"),
        ({"retry_initial": 10, "retry_max": 1}, "retry_initial"),
        ({"dsn": ""}, "dsn"),
    ],
)
def test_invalid_options_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        WriterConfig(**options)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        WriterConfig(batch_size=0)


def test_from_env_fills_missing_fields_and_explicit_wins() -> None:
    env = {"AUDIT_BATCH_SIZE": "500", "AUDIT_TABLE": "from_env", "AUDIT_FLUSH_INTERVAL": "1.5"}
    config = WriterConfig.from_env(env, table="explicit")
    assert config.batch_size == 500
    assert config.flush_interval == 1.5
    assert config.table == "explicit"


def test_from_env_rejects_unknown_option() -> None:
    with pytest.raises(ConfigurationError, match="unknown option"):
        WriterConfig.from_env({}, batchsize=1)


def test_from_env_rejects_non_numeric_value() -> None:
    with pytest.raises(ConfigurationError, match="AUDIT_BATCH_SIZE"):
        WriterConfig.from_env({"AUDIT_BATCH_SIZE": "many"})


def test_dsn_is_masked_in_repr() -> None:
    config = WriterConfig(dsn="postgresql://app:hunter2@db/prod")
    assert isinstance(config.dsn, Secret)
    assert "hunter2" not in repr(config)
    assert config.dsn == "postgresql://app:hunter2@db/prod"


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://app:hunter2@db:5432/prod", "postgresql://app:***@db:5432/prod"),
        ("postgresql://app@db/prod", "postgresql://app@db/prod"),
        ("host=db password=hunter2 user=app", "host=db password=*** user=app"),
        ("postgresql://db/prod?password=hunter2&sslmode=require", "postgresql://db/prod?password=***&sslmode=require"),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked
