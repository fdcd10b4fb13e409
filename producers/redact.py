"""Redaction on the host: secrets and personal data are replaced before an event is encoded and sent.

Per input (``agents.logship.inputs[].redact``, ``agents.otlp.redact``,
``agents.syslog.redact``, ``agents.scrape.redact``), over the message and every
attribute or label value, and over what an input dead-letters. Built-in patterns, each confirmed where a pattern alone
would be too eager:

=================  ============================================================  =======================
name               matches                                                       becomes
=================  ============================================================  =======================
``card``           13-19 digits (spaces or dashes between), Luhn check passes   ``[REDACTED:card]``
``email``          ``local@domain.tld``                                          ``[REDACTED:email]``
``authorization``  ``Authorization: <scheme> <credentials>`` (header or ``=``)   ``Authorization: [REDACTED:…]``
``bearer``         ``Bearer <token>``                                            ``Bearer [REDACTED:bearer]``
``secret``         ``password=``, ``secret=``, ``token=``, ``api_key=`` ... pairs ``password=[REDACTED:secret]``
``ipv4``           dotted quads (off unless listed)                              ``[REDACTED:ipv4]``
``ipv6``           IPv6 addresses, checked by ``ipaddress`` (off unless listed)  ``[REDACTED:ipv6]``
=================  ============================================================  =======================

An attribute whose *name* is a secret's (``password``, ``authorization``,
``token`` ...) has its whole value replaced. User patterns are RE2 regexes
(``google-re2``: linear time, so a hostile line cannot make a pattern
backtrack for minutes); all patterns run as one alternation, one pass per
string. Every replacement is counted per pattern (``counts``), and those
counters are part of each input's metrics (``redacted_<name>`` in its
``stats_dict()``; ``tocsin_agent_redacted_total{input, pattern}`` on the agent's
``metrics_addr``).

Cost: RE2's Python binding costs several µs a call even on short strings, so
with built-ins only, a record goes through RE2 only when a cheap, linear hint
(``_hint``: a 13-digit run, an ``@``, a keyword) occurs in its message or
attributes; most log lines have none. User patterns have no hint: with any,
every message and attribute value goes through RE2.
"""

from __future__ import annotations

import collections
import ipaddress
import re
import threading
from collections.abc import Callable
from typing import Any

import re2

from tocsin.producers.redaction_config import RedactConfig

# The key names of secret pairs and attributes; a pair is key, then = or :, then the value.
_SECRET_NAMES = "password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|api_key|apikey"
_SECRET_KEYS = f"(?:{_SECRET_NAMES})"
# An attribute with one of these names holds a secret whole (a JSON log line's {"password": "..."}).
_SECRET_ATTRS = frozenset(_SECRET_NAMES.split("|")) | {"authorization", "proxy-authorization", "cookie", "set-cookie"}

BUILTINS: dict[str, str] = {
    # A digit run (single spaces or dashes between digits); the Luhn check decides.
    "card": r"\b(?:\d[ -]?){12,18}\d\b",
    "email": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    # Before "bearer": the header names the whole credential, whatever its scheme.
    "authorization": r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9\-._~+/]+(?:\s+[^\s\"',;]+)?",
    "bearer": r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*",
    "secret": r"(?i)\b" + _SECRET_KEYS + r"[\"']?\s*[=:]\s*(?:\"[^\"]*\"|'[^']*'|[^\s&,;\"']+)",
    "ipv4": r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
    "ipv6": r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?:%[0-9a-z]+)?",
}
# What must occur somewhere in a string for a built-in to match in it: substring tests, or a Python re kept
# linear on purpose (one character class, no alternatives to backtrack into). Cheaper than one RE2 call.
_DIGIT_RUN = re.compile(r"\d[\d -]{11,}\d")
_DOT_QUAD = re.compile(r"\d\.\d")
_HEX_COLONS = re.compile(r":[0-9A-Fa-f]{0,4}:")
_KEYWORDS: dict[str, tuple[str, ...]] = {
    # Every secret name contains one of these (password and passwd "passw", access_token "token"...).
    "authorization": ("authorization",), "bearer": ("bearer",),
    "secret": ("passw", "pwd", "secret", "token", "api_key", "apikey"),
}


def _hint(builtins: list[str], extra_keywords: tuple[str, ...] = ()) -> Callable[[str], bool]:
    """A test that is False only when no built-in in ``builtins`` can match anywhere in the string."""
    found = dict.fromkeys((*(k for name in builtins for k in _KEYWORDS.get(name, ())), *extra_keywords))
    # A keyword containing another is redundant ("proxy-authorization"): fewer substring scans a string.
    keywords = tuple(k for k in found if not any(o != k and o in k for o in found))
    card, email = "card" in builtins, "email" in builtins
    ipv4, ipv6 = "ipv4" in builtins, "ipv6" in builtins

    def may_match(text: str) -> bool:
        if email and "@" in text:
            return True
        if keywords:
            low = text.lower()
            for k in keywords:  # a plain loop: any() over a generator costs more than the scans
                if k in low:
                    return True
        return bool((card and _DIGIT_RUN.search(text)) or (ipv4 and _DOT_QUAD.search(text))
                    or (ipv6 and _HEX_COLONS.search(text)))

    return may_match


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only) is valid."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(text: str, mark: str) -> str | None:
    digits = "".join(ch for ch in text if ch.isdigit())
    return mark if 13 <= len(digits) <= 19 and luhn_ok(digits) else None


def _ipv6(text: str, mark: str) -> str | None:
    try:
        ipaddress.IPv6Address(text.split("%", 1)[0])
    except ValueError:
        return None
    return mark


def _keep_name(text: str, mark: str) -> str:
    """``password=hunter2`` -> ``password=[REDACTED:secret]``: the key (and quotes) stay, so the line still reads."""
    i = 0
    while i < len(text) and (text[i].isalnum() or text[i] in "_-"):
        i += 1
    while i < len(text) and text[i] in "\"' \t:=":
        i += 1
    quote = text[i - 1] if i and text[i - 1] in "\"'" and text.endswith(text[i - 1]) and len(text) > i else ""
    return text[:i] + mark + quote


def _keep_scheme(text: str, mark: str) -> str:
    return text.split(None, 1)[0] + " " + mark


# How a match becomes its replacement; None means "not what it looked like" (left as it was, not counted).
_REPLACE: dict[str, Callable[[str, str], str | None]] = {
    "card": _card, "ipv6": _ipv6, "secret": _keep_name, "authorization": _keep_name, "bearer": _keep_scheme,
}


class Redactor:
    """Replaces what the configured patterns match in a record's message and attributes; counts each.

    >>> r = Redactor(RedactConfig())                                    # doctest: +SKIP
    >>> r.text("card 4111 1111 1111 1111 from bob@example.com")         # doctest: +SKIP
    'card [REDACTED:card] from [REDACTED:email]'
    """

    def __init__(self, cfg: RedactConfig) -> None:
        self.cfg = cfg
        self.counts: collections.Counter[str] = collections.Counter()
        names: list[str] = []
        sources: list[str] = []
        for name in cfg.builtin:
            names.append(name)
            sources.append(BUILTINS[name])
        for pattern in cfg.patterns:
            names.append(pattern.name)
            sources.append(pattern.regex)
        self._names = names
        self._marks = [cfg.replacement.format(name=n) for n in names]
        self._replace = [_REPLACE.get(n) if n in BUILTINS else None for n in names]
        self._secret_attrs = "secret" in cfg.builtin and cfg.attributes
        self._count_lock = threading.Lock()  # an OTLP receiver redacts on several threads at once
        # Without user patterns, a record none of whose strings has a hint cannot match: skip RE2. The hint
        # runs over attribute names too, so it also looks for the secret attribute names no built-in has.
        extra = ("authorization", "cookie") if self._secret_attrs else ()
        self._hint = _hint(list(cfg.builtin), extra) if cfg.builtin and not cfg.patterns else None
        self._secret_mark = cfg.replacement.format(name="secret")
        # One alternation, each pattern in a group of its own (RE2: leftmost match, then the first pattern
        # listed); a user pattern's own groups shift the numbers, so each pattern's group index is computed.
        # Inline flags such as (?i) stay scoped to their own group.
        options = re2.Options()
        options.max_mem = cfg.max_regex_mem_bytes
        self._groups: list[int] = []
        index = 1
        for src in sources:
            self._groups.append(index)
            index += 1 + re2.compile(src, options).groups
        self._regex = re2.compile("|".join(f"({_scoped(s)})" for s in sources), options) if sources else None

    @property
    def active(self) -> bool:
        return self._regex is not None

    def _sub(self, m: Any) -> str:
        i = 0
        for i, group in enumerate(self._groups):  # noqa: B007 - i is the matching pattern after the loop
            if m.group(group) is not None:
                break
        text = m.group(0)
        replace = self._replace[i]
        out = self._marks[i] if replace is None else replace(text, self._marks[i])
        if out is None:
            return text
        with self._count_lock:
            self.counts[self._names[i]] += 1
        return out

    def text(self, value: str) -> str:
        """``value`` with every match replaced."""
        if self._regex is None or not value:
            return value
        return self._regex.sub(self._sub, value)

    def record(self, rec: dict[str, Any]) -> None:
        """Redacts a parsed record in place: its message and attribute values."""
        if self._regex is None:
            return
        attrs = rec["attrs"]
        hint = self._hint
        if hint is not None:
            # One search over everything ("\n" joins: no hint spans two strings); most records stop here.
            joined = "\n".join((rec["message"], *attrs, *attrs.values())) if attrs else rec["message"]
            if not hint(joined):
                return
        rec["message"] = self.text(rec["message"])
        if attrs and self.cfg.attributes:
            self._values(attrs)

    def values(self, attrs: dict[str, str]) -> bool:
        """Redacts attribute (or metric label) values in place; True when one changed."""
        if self._regex is None or not attrs or not self.cfg.attributes:
            return False
        if self._hint is not None and not self._hint("\n".join((*attrs, *attrs.values()))):
            return False
        return self._values(attrs)

    def labels(self, labels: dict[str, str]) -> dict[str, str]:
        """``labels`` with its values redacted: the same dict when nothing matched, else a redacted copy."""
        if self._regex is None or not labels or not self.cfg.attributes:
            return labels
        if self._hint is not None and not self._hint("\n".join((*labels, *labels.values()))):
            return labels
        out = dict(labels)
        return out if self._values(out) else labels

    def raw(self, data: bytes) -> bytes:
        """Bytes (a dead letter's payload) redacted as text: UTF-8 when it decodes, else byte for byte (latin-1)."""
        if self._regex is None or not data:
            return data
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = data.decode("latin-1"), "latin-1"
        if self._hint is not None and not self._hint(text):
            return data
        out = self.text(text)
        return data if out == text else out.encode(encoding, "replace")

    def _values(self, attrs: dict[str, str]) -> bool:
        changed = False
        for key, value in attrs.items():
            if self._secret_attrs and value and key.lower() in _SECRET_ATTRS:
                new = self._secret_mark
                if value != new:
                    with self._count_lock:
                        self.counts["secret"] += 1
            else:
                new = self.text(value)
            if new != value:
                attrs[key] = new
                changed = True
        return changed


def _scoped(source: str) -> str:
    """A pattern whose leading inline flags (``(?i)``) apply to it alone inside the alternation."""
    if source.startswith("(?") and len(source) > 3 and source[2] != ":" and ")" in source:
        flags, rest = source[2:].split(")", 1)
        if flags.isalpha():
            return f"(?{flags}:{rest})"
    return source


def redactor_of(cfg: RedactConfig) -> Redactor | None:
    """The input's redactor, or None when it is configured to redact nothing (no cost on the hot path)."""
    redactor = Redactor(cfg)
    return redactor if redactor.active else None
