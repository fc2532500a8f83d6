"""Redaction: what the middleware keeps of a request, with every secret replaced before the event is buffered.

``redactor.py`` (the :class:`Redactor` and its :class:`RedactionConfig`), ``detectors.py`` (key deny-lists
and value detectors), ``bodies.py`` (parsing captured bodies), ``urls.py`` (URLs and paths), ``memo.py`` (a
bounded memo of repeated header values) and ``processors.py`` (user processors over the final metadata).
"""

from __future__ import annotations

from .processors import SkipAudit
from .redactor import REDACTED, RedactionConfig, Redactor

__all__ = ["REDACTED", "RedactionConfig", "Redactor", "SkipAudit"]
