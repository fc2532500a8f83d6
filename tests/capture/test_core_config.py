"""MiddlewareConfig validation: every invalid option fails at construction, naming itself."""

from __future__ import annotations

from typing import Any

import pytest

from audit_middleware.capture.core import MiddlewareConfig, route_path
from audit_middleware.errors import ConfigurationError


def test_defaults_are_valid() -> None:
    config = MiddlewareConfig()
    assert config.preset and not config.audit_unmapped and config.failed_suffix == "_failed"


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigurationError, match="trusted_proxys"):
        MiddlewareConfig.from_options(trusted_proxys=["10.0.0.1"])


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"preset": "yes"}, "preset"),
        ({"dsn": ""}, "dsn"),
        ({"writer_options": []}, "writer_options"),
        ({"routes": ["POST /login"]}, "routes"),
        ({"unmapped_action": "x" * 101}, "unmapped_action"),
        ({"failed_suffix": 5}, "failed_suffix"),
        ({"failure_status": "400"}, "failure_status"),
        ({"failure_status": 99}, "failure_status"),
        ({"request_id_header": ""}, "request_id_header"),
        ({"user_resolver": "not callable"}, "user_resolver"),
        ({"max_response_peek": -1}, "max_response_peek"),
        ({"processors": [1]}, "processors"),
        ({"trusted_proxies": ["nope"]}, "trusted_proxies"),
        ({"proxy_header": "x-real-ip"}, "proxy_header"),
    ],
)
def test_invalid_option_is_named(options: Any, name: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        MiddlewareConfig.from_options(**options)


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/api/login", "/api", "/login"),
        ("/api", "/api", "/"),
        ("/apix/login", "/api", "/apix/login"),
        ("/login", "", "/login"),
        ("/login", "/api", "/login"),
    ],
)
def test_route_path_strips_the_mount(path: Any, root: Any, expected: Any) -> None:
    assert route_path(path, root) == expected
