"""Fixtures shared by the tests on the real Django stacks (admin, auth views, allauth, dj-rest-auth)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import PgTarget
from tests.django_helpers import Trail, setup_django


@pytest.fixture(scope="module")
def django_app() -> Any:
    """The test project's WSGI application (tests/django_settings.py), configured once per process."""
    setup_django()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


@pytest.fixture
def trail(django_app: Any, pg: PgTarget, request: pytest.FixtureRequest) -> Iterator[Trail]:
    """Requests through the audited app from the module's own client address (its ``IP``), rows in ``pg``."""
    trail = Trail(django_app, pg, ip=request.module.IP)
    yield trail
    trail.rows()  # closes the writer
