"""Error message patterns: what varies between occurrences of one error (ids, numbers, quoted values) masked.

Shared by the reports (top error patterns, in SQL and in Python) and the
processor's ``new_pattern`` rules, so a pattern an alert names is the one a
report groups by.
"""

from __future__ import annotations

import hashlib
import re

# In order: UUIDs before hex runs before numbers, so an id is masked whole.
NORMALIZE_RULES: tuple[tuple[str, str], ...] = (
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<uuid>"),
    (r"\b0x[0-9a-fA-F]+\b", "<hex>"),
    (r"\b[0-9a-fA-F]{8,}\b", "<hex>"),  # hashes, trace and object ids
    (r"'[^']*'", "'<str>'"),
    (r'"[^"]*"', '"<str>"'),
    (r"[0-9]+(?:\.[0-9]+)?", "<n>"),
)
PATTERN_MAX_CHARS = 300
MESSAGE_MAX_CHARS = 4096
"""Only this much of a message is normalized: a hostile megabyte line costs no more than a long one."""

_COMPILED = tuple((re.compile(p), r) for p, r in NORMALIZE_RULES)


def normalize_message(message: str) -> str:
    """The pattern of a message (the Python twin of the reports' SQL normalization)."""
    message = message[:MESSAGE_MAX_CHARS]
    for pattern, repl in _COMPILED:
        message = pattern.sub(repl, message)
    return message[:PATTERN_MAX_CHARS]


def pattern_id(pattern: str) -> str:
    """A short stable id of a pattern (a label value and a compacted-topic key part)."""
    return hashlib.sha256(pattern.encode()).hexdigest()[:16]
