"""The daily summary: the performance report of the last day, compared with the day before, by email.

Data and rendering are the report's (``sinks/clickhouse/reports.py``: ``build_report``
for per-service volume, errors, latency, alerts and MTTR, health failures,
each beside the previous period; ``render_report`` for the text and the HTML
with inline SVG charts); this module adds the subject line, the
multipart/alternative mail to MONITORING_SUMMARY_RECIPIENTS and the schedule.

Scheduling: ``SummaryScheduler`` runs ``jobs.daily_summary`` (UTC, HH:MM)
inside the ``sink-notify`` service. Each day's summary is recorded in the
notification log under ``daily-summary:YYYY-MM-DD``, so a restart neither
sends it twice nor, when it was down at the due time, skips it: on start the
day's summary is sent late if it is due and missing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tocsin.core.component import Component
from tocsin.core.errors import ConfigError
from tocsin.sinks.notify.config import EmailReceiverConfig, NotifySettings, SmtpConfig
from tocsin.sinks.notify.delivery import RetryPolicy
from tocsin.sinks.notify.receivers.base import DeliveryResult
from tocsin.sinks.notify.receivers.email import build_message, send_email

log = logging.getLogger(__name__)

RECEIVER = "daily-summary"


@dataclass(frozen=True)
class Summary:
    subject: str
    text: str
    html: str
    doc: dict[str, Any]


def _signed(v: float | None, unit: str = " %") -> str:
    return "n/a" if v is None else f"{'+' if v >= 0 else ''}{v:.0f}{unit}"


def subject_line(doc: dict[str, Any], prefix: str, title: str) -> str:
    """``[tocsin] Tocsin daily summary 2026-05-04: 1.2M requests (+3 %), 532 errors, 4 alerts, 2 health failures``."""
    t, a, h = doc["totals"], doc["alerts"], doc["health"]
    day = (doc["period"]["end"] or "")[:10]
    return (f"{prefix} {title} {day}: {t['requests']:,} requests ({_signed(t['change']['requests_pct'])}), "
            f"{t['errors']:,} errors ({_signed(t['change']['errors_pct'])}), {a['fired']} alerts, "
            f"{h['failures']} health failures").strip()


def render_summary(doc: dict[str, Any], prefix: str = "[tocsin]", title: str = "Tocsin daily summary") -> Summary:
    """The mail's three parts, from a ``build_report`` document."""
    from tocsin.sinks.clickhouse.reports import render_report

    doc = {**doc, "title": title}
    return Summary(subject_line(doc, prefix, title), render_report(doc, "text"), render_report(doc, "html"), doc)


def smtp_settings(cfg: NotifySettings) -> SmtpConfig:
    """``summary.smtp``, or the SMTP part of the email receiver named by ``summary.use_receiver``."""
    name = cfg.summary.use_receiver
    if name is None:
        return cfg.summary.smtp
    try:
        receiver = cfg.notify.receiver(name)
    except KeyError:
        raise ConfigError(f"summary.use_receiver: no receiver named {name!r}") from None
    if not isinstance(receiver, EmailReceiverConfig):
        raise ConfigError(f"summary.use_receiver: receiver {name!r} is {receiver.type}, not email")
    return SmtpConfig(**{k: getattr(receiver, k) for k in SmtpConfig.model_fields})


def send_summary(cfg: NotifySettings, doc: dict[str, Any], recipients: list[str] | None = None,
                 sleep: Any = time.sleep) -> DeliveryResult:
    """Renders and mails a report document (``tocsin report --email`` and the daily job); retries 4xx/network."""
    from tocsin.sinks.notify.delivery import deliver

    to = list(recipients if recipients is not None else cfg.monitoring_summary_recipients)
    summary = render_summary(doc, cfg.summary.subject_prefix, cfg.summary.title)
    if cfg.summary.output_dir is not None:
        write_files(cfg.summary.output_dir, summary)
    smtp = smtp_settings(cfg)
    msg = build_message(summary.subject, summary.text, summary.html, smtp.from_addr, to)
    policy = RetryPolicy(max_attempts=cfg.summary.max_attempts, max_retry_s=3600.0,
                         backoff_initial_s=cfg.summary.backoff_initial_s, backoff_max_s=300.0)
    return deliver(_MailSender(smtp, msg, to), None, policy, sleep=sleep)  # type: ignore[arg-type]


class _MailSender:
    """A ``Notifier``-shaped sender of one prepared message (so ``deliver`` can retry it)."""

    name = RECEIVER

    def __init__(self, smtp: SmtpConfig, msg: Any, to: list[str]) -> None:
        self.smtp, self.msg, self.to = smtp, msg, to

    def send(self, _notification: Any) -> DeliveryResult:
        return send_email(self.smtp, self.msg, self.to)

    def close(self) -> None:
        """Nothing held open between attempts."""


def write_files(directory: Path, summary: Summary) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    day = (summary.doc["period"]["end"] or "summary")[:10]
    paths = [directory / f"summary-{day}.html", directory / f"summary-{day}.txt"]
    paths[0].write_text(summary.html, encoding="utf-8")
    paths[1].write_text(summary.text, encoding="utf-8")
    return paths


def day_key(due_s: float) -> str:
    return f"{RECEIVER}:{dt.datetime.fromtimestamp(due_s, dt.UTC).date().isoformat()}"


def previous_due(schedule: Any, now_s: float) -> float:
    """The last due time at or before ``now_s`` of a daily ``JobConfig``."""
    nxt = schedule.next_due(now_s)
    return nxt - 86400.0 if schedule.weekday is None else nxt - 7 * 86400.0


class SummaryScheduler(Component):
    """Sends the daily summary when ``jobs.daily_summary`` is due; once per day, also across restarts."""

    name = "daily-summary"

    def __init__(self, cfg: NotifySettings, notification_log: Any, clock: Any = time.time) -> None:
        super().__init__()
        self.cfg = cfg
        self.log = notification_log
        self.clock = clock
        self.schedule = cfg.jobs.daily_summary
        self.sent: list[str] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.schedule.enabled:
            self._thread = threading.Thread(target=self.run, name="daily-summary", daemon=True)
            self._thread.start()

    def run(self) -> None:
        # Catch up: the day's summary is due and was not sent (the service was down at the time).
        self.run_if_missing(previous_due(self.schedule, self.clock()))
        while not self.stopping:
            due = self.schedule.next_due(self.clock())
            while not self.stopping and self.clock() < due:
                self._stop.wait(min(60.0, max(0.05, due - self.clock())))
            if self.stopping:
                return
            self.run_if_missing(due)

    def run_if_missing(self, due_s: float) -> DeliveryResult | None:
        """Sends the summary of the period ending at ``due_s`` unless the log says it went out."""
        from tocsin.sinks.notify.log import LogRow

        key = day_key(due_s)
        try:
            if self.log.summary_sent(key):
                return None
            doc = self._report(due_s)
            started = time.perf_counter()
            result = send_summary(self.cfg, doc, sleep=lambda s: self._stop.wait(s))
        except Exception as exc:  # a failed summary must not take the notify sink down
            log.exception("Daily summary failed.", extra={"key": key})
            result = DeliveryResult.failed(f"{type(exc).__name__}: {exc}")
            started = time.perf_counter()
        event = {"event_id": key, "alert_id": "", "fingerprint": "", "rule": "daily_summary", "labels": {},
                 "severity": "none", "state": ""}
        status = "sent" if result.outcome == "sent" else "failed"
        try:
            self.log.write([LogRow(event, RECEIVER, "email", 1, status, result.http_status, result.error,
                                   (time.perf_counter() - started) * 1000.0, "", key)])
        except Exception:
            log.exception("Recording the daily summary failed.", extra={"key": key})
        if status == "sent":
            self.sent.append(key)
            log.info("Daily summary sent.",
                     extra={"key": key, "recipients": len(self.cfg.monitoring_summary_recipients)})
        return result

    def _report(self, due_s: float) -> dict[str, Any]:
        """The report document through the store API the CLI uses (this process owns an embedded store)."""
        from tocsin.sinks.clickhouse.store_access import open_store

        store = open_store(self.cfg)
        try:
            return store.report(self.cfg.summary.hours, end=dt.datetime.fromtimestamp(due_s, dt.UTC))
        finally:
            store.close()

    def _release(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30)
