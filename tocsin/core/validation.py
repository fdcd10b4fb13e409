"""Hostile text made safe for where it goes, and (per topic) which records are valid.

``safe_text`` shows control characters escaped (``\\x1b`` as the four
characters ``\\x1b``), so an ANSI sequence in a service name, label or log
message can neither recolour nor rewrite a terminal, a text or Markdown file.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidi overrides/isolates (Trojan Source).
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_LINE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m[0])
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe_text(value: object, *, one_line: bool = False) -> str:
    """``value`` as text with control characters escaped; ``one_line`` escapes newline and tab too."""
    text = value if isinstance(value, str) else str(value)
    return (_CONTROL_LINE_RE if one_line else _CONTROL_RE).sub(_escape, text)
