"""The one exception tree of Tocsin.

Every error a user can act on descends from ``TocsinError``; third-party
exceptions are wrapped at the component boundary (``raise ... from exc``)::

    TocsinError
    ├── ConfigError        bad file, field or environment value (CLI exit 2)
    ├── DecodeError        bytes that are not a known Avro single-object message
    ├── EncodeError        a record that does not fit its schema
    ├── KafkaError         broker unreachable, topic admin failed
    │   └── ReadTimeout    a topic not read to its end in time (callers retry or degrade)
    ├── LocalKafkaError    the local broker could not be resolved or started
    ├── StoreError         ClickHouse unreachable or a statement failed
    │   └── RefusedError   what the store's policy refuses: a query outside Tocsin's tables, a
    │                      path outside the archive directory (CLI exit 2, HTTP 403)
    ├── SinkError          a sink could not deliver (after its retries)
    └── RuleError          a rule file that does not validate (a ConfigError)
"""

from __future__ import annotations

from typing import Any


class TocsinError(Exception):
    """Base of every error Tocsin raises on purpose."""


class ConfigError(TocsinError):
    """A configuration file, field or environment value is wrong.

    ``problems`` holds every problem found, each a one-line
    ``file: field: reason`` string, so all of them are reported at once.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class RuleError(ConfigError):
    """A rule file does not validate."""


class DecodeError(TocsinError):
    """Bytes that cannot be decoded into an event; ``reason`` is for the dead-letter header."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class EncodeError(TocsinError):
    """A record that does not match its schema."""


class KafkaError(TocsinError):
    """Kafka could not be reached or refused an operation."""


class ReadTimeout(KafkaError):
    """A topic could not be read to its end in time; ``behind`` maps each partition left to its distance."""

    def __init__(self, message: str, behind: dict[Any, int] | None = None) -> None:
        super().__init__(message)
        self.behind = behind or {}


class LocalKafkaError(TocsinError):
    """The local broker from Maven Central jars could not be resolved or started."""


class StoreError(TocsinError):
    """ClickHouse could not be reached or a statement failed."""


class RefusedError(StoreError):
    """A request the store refuses: a query reaching outside Tocsin's tables or past its limits, a path
    outside the archive directory.

    ``http_status`` is what the store API answers: 403 refused by policy, 400 cancelled at a limit.
    """

    def __init__(self, message: str, http_status: int = 403) -> None:
        super().__init__(message)
        self.http_status = http_status


class SinkError(TocsinError):
    """A sink gave up delivering after its retries."""
