"""Fast timestamp parsing for log lines: ISO 8601 / RFC 3339, nginx ``$time_local``, epoch numbers.

Every function returns int microseconds since the epoch (UTC) or ``None`` when
the text is not a timestamp it knows; callers fall back to the time the line
was read. The date-and-time-to-the-second prefix is cached because a log file
repeats the same second thousands of times, and ``datetime`` parsing costs more
than the rest of a line's handling.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime

_CACHE_MAX = 4096
_iso_seconds: dict[str, int | None] = {}
_clf_seconds: dict[str, int | None] = {}
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_TZ_RE = re.compile(r"^([+-])(\d\d):?(\d\d)$")
# What may follow the seconds: a fraction (any precision) and a zone.
_TAIL_RE = re.compile(r"(?:[.,](\d+))?(Z|z| ?UTC|[+-]\d\d:?\d\d)?$")
_tz_cache: dict[str, int | None] = {}

# Epoch numbers: seconds until ~2286, then milliseconds, then microseconds.
_MAX_EPOCH_S = 10_000_000_000
_MAX_EPOCH_MS = _MAX_EPOCH_S * 1000


def _tz_offset_s(text: str) -> int | None:
    if not text or text in ("Z", "z", "UTC", " UTC", "+00:00", "+0000"):
        return 0
    text = text.strip()
    m = _TZ_RE.match(text)
    if not m:
        return None
    secs = int(m[2]) * 3600 + int(m[3]) * 60
    return -secs if m[1] == "-" else secs


def _seconds_of(prefix: str) -> int | None:
    """Epoch seconds of ``YYYY-MM-DD[T ]HH:MM:SS`` read as UTC (cached)."""
    secs = _iso_seconds.get(prefix, -1)
    if secs != -1:
        return secs
    secs = None
    if prefix[4:5] == "-" and prefix[7:8] == "-" and prefix[10:11] in ("T", " ", "t"):
        try:
            dt = datetime(int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10]),
                          int(prefix[11:13]), int(prefix[14:16]), int(prefix[17:19]))
            secs = calendar.timegm(dt.timetuple())
        except ValueError:
            secs = None
    if len(_iso_seconds) >= _CACHE_MAX:
        _iso_seconds.clear()
    _iso_seconds[prefix] = secs
    return secs


def parse_iso(text: str) -> int | None:
    """``2024-01-31T12:00:00.123456Z``, ``2024-01-31 12:00:00,123`` (Python logging), with or without zone."""
    if len(text) < 19:
        return None
    secs = _seconds_of(text[:19])
    if secs is None:
        return None
    if len(text) == 19:
        return secs * 1_000_000
    m = _TAIL_RE.match(text, 19)
    if m is None:
        return None
    digits, zone = m.groups()
    micros = 0 if digits is None else int(digits[:6].ljust(6, "0"))
    if zone is None or zone == "Z":
        return secs * 1_000_000 + micros
    offset = _tz_cache.get(zone, -1)
    if offset == -1:
        offset = _tz_cache[zone] = _tz_offset_s(zone)
    if offset is None:
        return None
    return (secs - offset) * 1_000_000 + micros


def parse_clf(text: str) -> int | None:
    """Common Log Format time, as nginx ``$time_local`` and Apache ``%t``: ``10/Oct/2000:13:55:36 -0700``."""
    if len(text) < 20:
        return None
    key = text[:20]
    secs = _clf_seconds.get(key, -1)
    if secs == -1:
        try:
            dt = datetime(int(key[7:11]), _MONTHS[key[3:6]], int(key[0:2]),
                          int(key[12:14]), int(key[15:17]), int(key[18:20]))
            secs = calendar.timegm(dt.timetuple())
        except (ValueError, KeyError):
            secs = None
        if len(_clf_seconds) >= _CACHE_MAX:
            _clf_seconds.clear()
        _clf_seconds[key] = secs
    if secs is None:
        return None
    offset = _tz_offset_s(text[20:].strip())
    if offset is None:
        return None
    return (secs - offset) * 1_000_000


def parse_epoch(value: float) -> int | None:
    """Epoch seconds, milliseconds or microseconds (told apart by magnitude)."""
    if value != value or value <= 0:  # NaN or not after the epoch
        return None
    if value < _MAX_EPOCH_S:
        return int(value * 1_000_000)
    if value < _MAX_EPOCH_MS:
        return int(value * 1000)
    if value < _MAX_EPOCH_MS * 1000:
        return int(value)
    return None


def parse_any(value: object) -> int | None:
    """A timestamp from a JSON value or a regex group: ISO text, CLF text, or an epoch number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return parse_epoch(float(value))
    if isinstance(value, str):
        ts = parse_iso(value)
        if ts is None and value[:1].isdigit():
            ts = parse_clf(value)
            if ts is None:
                try:
                    ts = parse_epoch(float(value))
                except ValueError:
                    return None
        return ts
    return None
