"""What both glues share: turning a framework's route rule into a template, and leaving the user."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

from ..context import USER_KEY
from ..identity import user_id_of

_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>:]+)>")


def template_of(rule: Any) -> str | None:
    """A framework rule (``/users/<int:id>``, Django ``users/<int:id>/``) as ``/users/{id}``."""
    if not isinstance(rule, str) or "^" in rule or "(?" in rule:  # Django regex routes: no usable template
        return None
    return _CONVERTER.sub(r"{\1}", rule if rule.startswith("/") else "/" + rule)


def remember_user(environ: MutableMapping[str, Any], user: Any) -> None:
    try:
        user_id = user_id_of(user)
    except Exception:  # a broken user object (or session backend) must not break the request
        return
    if user_id is not None:
        environ[USER_KEY] = user_id
