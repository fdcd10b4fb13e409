"""Application logging as the seed set it up, in JSON lines the log shipper parses without configuration.

``configure_logging("shop")`` writes, under ``log_dir`` (``LOG_DIR`` by default):

=================  ===================================  =====================
file               what                                  rotation
=================  ===================================  =====================
application.log    every record at ``level`` and above   50 MB x 10 backups
error.log          ERROR and above                        50 MB x 10 backups
performance.log    the ``performance`` logger             100 MB x 5 backups
security.log       the ``security`` logger                50 MB x 10 backups
=================  ===================================  =====================

One JSON object per line: ``timestamp`` (RFC 3339 UTC), ``level``, ``logger``,
``message``, ``service``, ``host``, ``trace_id`` when the record has one,
``exception`` with the formatted traceback, and every ``extra=`` field.
``cleanup_old_logs`` removes files older than 30 days (the seed's retention).
``KafkaLogHandler`` optionally sends records straight to the logs topic
through a bounded queue: it never blocks the application, and drops are
counted in ``dropped``.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tocsin.core.config import KafkaConfig
from tocsin.core.events import HOSTNAME, LOG_EVENT, iso, new_event_id

MB = 1024 * 1024
# (file, max bytes, backups): the seed's rotation settings.
APPLICATION = ("application.log", 50 * MB, 10)
ERROR = ("error.log", 50 * MB, 10)
PERFORMANCE = ("performance.log", 100 * MB, 5)
SECURITY = ("security.log", 50 * MB, 10)
RETENTION_DAYS = 30
PERFORMANCE_LOGGER = "performance"
SECURITY_LOGGER = "security"

# Attributes every LogRecord has; anything else came from ``extra=``.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the shipper's ``json`` parser maps every key back."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": iso(int(record.created * 1_000_000)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
            "host": HOSTNAME,
        }
        extras = _extras(record)
        trace = extras.pop("trace_id", None)
        if trace:
            data["trace_id"] = str(trace)
        for key, value in extras.items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


@dataclass
class LoggingSetup:
    """What ``configure_logging`` installed, so a caller (or a test) can remove it again."""

    log_dir: Path
    handlers: list[tuple[logging.Logger, logging.Handler]] = field(default_factory=list)
    kafka_handler: KafkaLogHandler | None = None

    def close(self) -> None:
        for logger, handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()
        self.handlers.clear()


def configure_logging(service: str, log_dir: str | os.PathLike[str] | None = None, level: int | str = logging.INFO,
                      kafka: KafkaConfig | None = None, kafka_topic: str | None = None) -> LoggingSetup:
    """Installs the seed's four JSON log files (and optionally the Kafka handler) on the root logger."""
    directory = Path(log_dir or os.environ.get("LOG_DIR") or "logs")
    directory.mkdir(parents=True, exist_ok=True)
    formatter = JsonFormatter(service)
    setup = LoggingSetup(directory)
    root = logging.getLogger()
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if root.level == logging.NOTSET or root.level > numeric:
        root.setLevel(numeric)

    def add(logger: logging.Logger, spec: tuple[str, int, int], handler_level: int | str) -> None:
        name, max_bytes, backups = spec
        handler = logging.handlers.RotatingFileHandler(directory / name, maxBytes=max_bytes, backupCount=backups,
                                                       encoding="utf-8", delay=True)
        handler.setLevel(handler_level)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        setup.handlers.append((logger, handler))

    add(root, APPLICATION, level)
    add(root, ERROR, logging.ERROR)
    for logger_name, spec in ((PERFORMANCE_LOGGER, PERFORMANCE), (SECURITY_LOGGER, SECURITY)):
        logger = logging.getLogger(logger_name)
        logger.propagate = False  # each has its own file; application.log stays application logs
        logger.setLevel(logging.DEBUG)
        add(logger, spec, logging.DEBUG)
    if kafka is not None:
        handler = KafkaLogHandler(kafka, service, topic=kafka_topic)
        handler.setLevel(level)
        root.addHandler(handler)
        setup.handlers.append((root, handler))
        setup.kafka_handler = handler
    return setup


def cleanup_old_logs(log_dir: str | os.PathLike[str] | None = None, days: int = RETENTION_DAYS,
                     now: float | None = None) -> list[Path]:
    """Removes log files (``*.log``, ``*.log.N``) not modified for ``days``; returns what was removed."""
    directory = Path(log_dir or os.environ.get("LOG_DIR") or "logs")
    cutoff = (now if now is not None else time.time()) - days * 86400
    removed = []
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        if not path.is_file() or ".log" not in path.name:
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


class KafkaLogHandler(logging.Handler):
    """Sends records as LogEvents through a bounded queue; ``emit`` never blocks (drops are counted)."""

    def __init__(self, kafka: KafkaConfig, service: str, topic: str | None = None, maxsize: int = 10_000) -> None:
        super().__init__()
        from tocsin.producers.emitter import EventQueue

        self.service = service
        self.queue = EventQueue(kafka, topic or kafka.topics.logs, LOG_EVENT, maxsize=maxsize)
        self._formatter = logging.Formatter()

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extras = _extras(record)
            trace = extras.pop("trace_id", None)
            attrs = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in extras.items()}
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{self._formatter.formatException(record.exc_info)}"
            level = record.levelname if record.levelname in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") \
                else "INFO"
            self.queue.emit({
                "event_id": new_event_id(), "ts": int(record.created * 1_000_000), "service": self.service,
                "host": HOSTNAME, "level": level, "logger": record.name, "message": message,
                "trace_id": str(trace) if trace else None, "attrs": attrs,
            })
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.queue.flush()

    def close(self) -> None:
        self.queue.close()
        super().close()
