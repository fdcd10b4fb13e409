"""Line parsers of the log shipper: JSON lines, nginx/Apache combined access logs, regex, plain text.

A parser turns the bytes of one record (a line, or a line with its joined
traceback) into the variable part of a LogEvent::

    {"ts": int | None, "level": str, "logger": str, "message": str,
     "trace_id": str | None, "attrs": {str: str}}

``ts`` is ``None`` when the line has no usable timestamp (the shipper then uses
the time it read the line). A line a parser cannot understand is never
dropped: it comes back with the raw text as message and a ``parse_error``
attribute, and the parser's ``unparsed`` counter goes up. Invalid UTF-8 is
replaced (U+FFFD) and counted in ``invalid_utf8``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tocsin.core.errors import ConfigError
from tocsin.producers import timeparse
from tocsin.producers.routes import RouteLimiter

try:  # orjson parses a line ~5x faster than json; the shipper's throughput depends on it
    import orjson as _orjson

    _loads: Any = _orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (_orjson.JSONDecodeError, ValueError, TypeError)

    def _dumps(value: Any) -> str:
        return _orjson.dumps(value, default=str).decode()
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    _loads = json.loads
    _JSON_ERRORS = (ValueError, TypeError)

    def _dumps(value: Any) -> str:
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


LEVELS = {
    "trace": "DEBUG", "debug": "DEBUG", "fine": "DEBUG", "finer": "DEBUG", "finest": "DEBUG",
    "info": "INFO", "information": "INFO", "informational": "INFO", "notice": "INFO", "config": "INFO",
    "warn": "WARNING", "warning": "WARNING",
    "error": "ERROR", "err": "ERROR", "exception": "ERROR", "severe": "ERROR",
    "critical": "CRITICAL", "crit": "CRITICAL", "fatal": "CRITICAL", "alert": "CRITICAL",
    "emerg": "CRITICAL", "emergency": "CRITICAL", "panic": "CRITICAL",
}
# Python's numeric levels (logging.INFO == 20 ...), as python-json-logger may write "levelno".
_NUMERIC_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
_LEVEL_WORD = re.compile(r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|SEVERE|CRITICAL|FATAL)\b")
_LEADING_TS = re.compile(r"^\[?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)")
_LEVEL_GUESS_CHARS = 256


def level_of(value: Any) -> str:
    """A LogEvent level (DEBUG, INFO, WARNING, ERROR, CRITICAL) from whatever the source wrote."""
    if isinstance(value, str):
        return LEVELS.get(value.lower(), "INFO") if value else "INFO"
    if isinstance(value, int) and not isinstance(value, bool):
        return _NUMERIC_LEVELS.get(value - value % 10 if value < 60 else 50, "INFO")
    return "INFO"


def guess_level(text: str) -> str:
    """The level named near the start of a plain-text line; a traceback alone means ERROR."""
    m = _LEVEL_WORD.search(text, 0, _LEVEL_GUESS_CHARS)
    if m:
        return LEVELS[m[1].lower()]
    if "\nTraceback (most recent call last):" in text or text.startswith("Traceback (most recent call last):"):
        return "ERROR"
    return "INFO"


_SCALAR_TEXT: dict[type, Any] = {
    str: str, int: repr, float: repr, type(None): lambda _: "", bool: lambda v: "true" if v else "false",
}


def stringify(value: Any) -> str:
    """An attrs value: strings as they are, numbers and booleans as JSON writes them, the rest as JSON."""
    convert = _SCALAR_TEXT.get(type(value))
    return convert(value) if convert is not None else _dumps(value)


class Parser:
    """Base: decoding, counters and the raw-text fallback every parser shares."""

    name = "text"
    emits_metrics = False

    def __init__(self) -> None:
        self.unparsed = 0
        self.invalid_utf8 = 0

    def decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.invalid_utf8 += 1
            return raw.decode("utf-8", "replace")

    def raw_record(self, text: str, error: str | None = None) -> dict[str, Any]:
        """A record for text no structure was found in: the text is the message."""
        m = _LEADING_TS.match(text)
        attrs = {"parse_error": error} if error else {}
        return {"ts": timeparse.parse_iso(m[1]) if m else None, "level": guess_level(text), "logger": "",
                "message": text, "trace_id": None, "attrs": attrs}

    def parse(self, raw: bytes) -> dict[str, Any]:
        return self.raw_record(self.decode(raw))

    def metrics(self, record: dict[str, Any]) -> list[tuple[str, float, str, dict[str, str]]]:
        """Metric samples a record implies (name, value, unit, labels); most parsers have none."""
        return []


class TextParser(Parser):
    """Plain text: the whole record is the message; level and a leading ISO timestamp are guessed."""

    name = "text"


# Keys of JSON log formats, by the LogEvent field they fill. Covers our own
# producers/logging.py, structlog's JSONRenderer (event, timestamp, level),
# python-json-logger (message, asctime, levelname, name), ECS/Logstash
# (@timestamp, log.level), Bunyan/pino (msg, time) and OpenTelemetry trace ids.
_TS_KEYS = ("timestamp", "ts", "time", "@timestamp", "asctime", "datetime", "date", "created", "t")
_LEVEL_KEYS = ("level", "levelname", "severity", "log.level", "loglevel", "lvl", "levelno")
_LOGGER_KEYS = ("logger", "name", "logger_name", "log.logger", "loggerName")
_MESSAGE_KEYS = ("message", "msg", "event", "log")
_TRACE_KEYS = ("trace_id", "traceId", "trace.id", "otelTraceID", "dd.trace_id", "traceid")
_ROLE_OF_KEY: dict[str, int] = {}
for _role, _keys in enumerate((_TS_KEYS, _LEVEL_KEYS, _LOGGER_KEYS, _MESSAGE_KEYS, _TRACE_KEYS)):
    for _key in _keys:
        _ROLE_OF_KEY.setdefault(_key, _role)
_TS, _LEVEL, _LOGGER, _MESSAGE, _TRACE = range(5)


class JsonParser(Parser):
    """JSON lines: known keys fill the LogEvent fields, every other key goes into attrs.

    Continuation lines joined by multiline detection (a traceback printed
    after a JSON line) are appended to the message.
    """

    name = "json"

    def parse(self, raw: bytes) -> dict[str, Any]:
        tail = None
        if raw[:1] != b"{" or raw[-1:] != b"}":
            raw = raw.strip()
            if b"\n" in raw:
                raw, _, tail_raw = raw.partition(b"\n")
                tail = self.decode(tail_raw)
        try:
            obj = _loads(raw)
        except _JSON_ERRORS:
            obj = self._retry_decoded(raw)
        if not isinstance(obj, dict):
            text = self.decode(raw)
            self.unparsed += 1
            rec = self.raw_record(text, "not a JSON object" if obj is not None else "invalid JSON")
        else:
            rec = self.record_of(obj)
        if tail:
            rec["message"] = f"{rec['message']}\n{tail}"
            if rec["level"] == "INFO" and "Traceback (most recent call last):" in tail:
                rec["level"] = "ERROR"
        return rec

    def _retry_decoded(self, raw: bytes) -> Any:
        """orjson refuses invalid UTF-8: count it, replace it, and try once more."""
        try:
            raw.decode("utf-8")
            return None  # valid UTF-8, so the JSON itself is bad
        except UnicodeDecodeError:
            self.invalid_utf8 += 1
        try:
            return _loads(raw.decode("utf-8", "replace"))
        except _JSON_ERRORS:
            return None

    @staticmethod
    def record_of(obj: dict[str, Any]) -> dict[str, Any]:
        ts = level = logger = message = trace = None
        attrs: dict[str, str] = {}
        role_of = _ROLE_OF_KEY.get
        parse_iso = timeparse.parse_iso
        for key, value in obj.items():
            role = role_of(key)
            if role is None:
                attrs[key] = value if type(value) is str else stringify(value)
            elif role == _MESSAGE and message is None:
                message = value
            elif role == _TS and ts is None:
                ts = parse_iso(value) if type(value) is str else timeparse.parse_any(value)
                if ts is None and type(value) is str:
                    ts = timeparse.parse_any(value)
                if ts is None:
                    attrs[key] = stringify(value)
            elif role == _LEVEL and level is None:
                level = level_of(value)
            elif role == _LOGGER and logger is None:
                logger = value
            elif role == _TRACE and trace is None and value:
                trace = value if isinstance(value, str) else stringify(value)
            else:
                attrs[key] = value if isinstance(value, str) else stringify(value)
        if message is None:
            message = ""
        elif not isinstance(message, str):
            message = stringify(message)
        if logger is not None and not isinstance(logger, str):
            logger = stringify(logger)
        return {"ts": ts, "level": level or "INFO", "logger": logger or "", "message": message,
                "trace_id": trace, "attrs": attrs}


_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_COMBINED = re.compile(
    r'^(?P<remote_addr>\S+) \S+ (?P<remote_user>\S+) \[(?P<time>[^\]]+)\] '
    + _QUOTED.replace("(", "(?P<request>", 1)
    + r' (?P<status>\d{3}) (?P<bytes>\d+|-)'
    + r'(?: ' + _QUOTED.replace("(", "(?P<referer>", 1) + r' ' + _QUOTED.replace("(", "(?P<agent>", 1) + r')?'
    + r'(?P<rest>.*)$'
)
_KEYED_TIME = re.compile(r'(?:^|\s)(?:rt|request_time|rtime|duration)=(\d+(?:\.\d+)?)')
_SECONDS = re.compile(r'^\d+\.\d+$')
_MICROS = re.compile(r'^\d+$')


class NginxParser(Parser):
    """nginx/Apache combined access log, optionally followed by the request time.

    The request time is read from the first field after the user agent:
    ``0.123`` (nginx ``$request_time``, seconds), ``rt=0.123`` or
    ``request_time=0.123`` (seconds), or a bare integer (Apache ``%D``,
    microseconds). A 5xx is an ERROR, a 4xx a WARNING. Each record with a
    duration also yields an ``api_response_time`` sample in ms labelled by
    route template, method and status: the metric the processor's default
    api_response_time rule reads.
    """

    name = "nginx"
    emits_metrics = True

    def __init__(self, max_routes: int = 500) -> None:
        super().__init__()
        self.routes = RouteLimiter(max_routes)

    def parse(self, raw: bytes) -> dict[str, Any]:
        text = self.decode(raw).rstrip("\n")
        m = _COMBINED.match(text)
        if m is None:
            self.unparsed += 1
            return self.raw_record(text, "not a combined access log line")
        request = m["request"]
        method, _, target = request.partition(" ")
        path, _, protocol = target.rpartition(" ") if " " in target else (target, "", "")
        if not method.isalpha() or not path:
            method, path, protocol = "", "", ""
        status = m["status"]
        code = int(status)
        attrs = {"remote_addr": m["remote_addr"], "status": status, "bytes": m["bytes"]}
        if method:
            attrs["method"] = method
            attrs["path"] = path.split("?", 1)[0]
            attrs["route"] = self.routes(path)
            attrs["protocol"] = protocol
        if m["remote_user"] != "-":
            attrs["remote_user"] = m["remote_user"]
        if m["referer"] not in (None, "-", ""):
            attrs["referer"] = m["referer"]
        if m["agent"] not in (None, "-", ""):
            attrs["user_agent"] = m["agent"]
        duration_ms = self._duration_ms(m["rest"].strip())
        if duration_ms is not None:
            attrs["duration_ms"] = f"{duration_ms:.3f}"
        level = "ERROR" if code >= 500 else "WARNING" if code >= 400 else "INFO"
        return {"ts": timeparse.parse_clf(m["time"]), "level": level, "logger": "access",
                "message": f"{request} {status}", "trace_id": None, "attrs": attrs}

    @staticmethod
    def _duration_ms(rest: str) -> float | None:
        if not rest:
            return None
        keyed = _KEYED_TIME.search(rest)
        if keyed:
            return float(keyed[1]) * 1000.0
        first = rest.split(None, 1)[0]
        if _SECONDS.match(first):
            return float(first) * 1000.0
        if _MICROS.match(first):
            return int(first) / 1000.0
        return None

    def metrics(self, record: dict[str, Any]) -> list[tuple[str, float, str, dict[str, str]]]:
        attrs = record["attrs"]
        duration = attrs.get("duration_ms")
        if duration is None or "method" not in attrs:
            return []
        labels = {"route": attrs["route"], "method": attrs["method"], "status": attrs["status"]}
        return [("api_response_time", float(duration), "ms", labels)]


class RegexParser(Parser):
    """Plain text with a regex of named groups.

    Groups named ``ts``/``timestamp``/``time``, ``level``, ``logger``,
    ``message``/``msg`` and ``trace_id`` fill those fields; every other named
    group becomes an attribute. Without a message group the whole line is the
    message. A line that does not match is shipped as text with
    ``parse_error``.
    """

    name = "regex"

    def __init__(self, pattern: str) -> None:
        super().__init__()
        try:
            self.regex = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise ConfigError(f"parser regex {pattern!r} does not compile: {exc}") from exc
        if not self.regex.groupindex:
            raise ConfigError(f"parser regex {pattern!r} has no named groups, e.g. (?P<level>\\w+)")

    def parse(self, raw: bytes) -> dict[str, Any]:
        text = self.decode(raw)
        m = self.regex.search(text)
        if m is None:
            self.unparsed += 1
            return self.raw_record(text, "line does not match the parser regex")
        groups = {k: v for k, v in m.groupdict().items() if v is not None}
        rec = JsonParser.record_of(groups)
        if "message" not in groups and "msg" not in groups:
            rec["message"] = text
        if "level" not in groups:
            rec["level"] = guess_level(text)
        return rec


def make_parser(spec: str) -> Parser:
    """``json``, ``nginx`` (also ``apache``, ``combined``), ``text``, or ``regex:PATTERN``."""
    if spec.startswith("regex:"):
        return RegexParser(spec[len("regex:"):])
    kind = spec.strip().lower()
    if kind == "json":
        return JsonParser()
    if kind in ("nginx", "apache", "combined"):
        return NginxParser()
    if kind in ("text", "plain"):
        return TextParser()
    raise ConfigError(f"unknown parser {spec!r}: use json, nginx, text or regex:PATTERN")
