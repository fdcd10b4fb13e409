"""The receiver contract: what a notification is, what one delivery attempt returns, how failures classify.

A ``Notifier`` makes exactly one attempt per ``send()`` and never raises for a
delivery problem: it returns a ``DeliveryResult`` whose ``outcome`` says
whether the attempt was ``sent``, worth a ``retry`` (5xx, 429, network
errors) or ``failed`` for good (any other 4xx, a refused recipient).
Retries, backoff and rate limits live in ``sinks/notify/delivery.py``, so every
receiver gets the same policy.
"""

from __future__ import annotations

import email.utils
import importlib
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import requests

from tocsin.core.events import iso

Outcome = Literal["sent", "retry", "failed"]
USER_AGENT = "tocsin-notify/0.1"
MAX_ERROR_CHARS = 500  # enough for a receiver's error message, bounded for the log table


@dataclass(frozen=True)
class AlertView:
    """One alert as receivers see it: its latest transition in this notification."""

    fingerprint: str
    alert_id: str
    event_id: str
    rule: str
    severity: str
    state: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at_us: int
    ends_at_us: int | None
    ts_us: int
    value: float | None = None
    threshold: float | None = None
    previous_severity: str = "none"
    acked_by: str | None = None
    acked_at_us: int | None = None
    ack_note: str | None = None
    ack_expires_at_us: int | None = None

    @property
    def status(self) -> Literal["firing", "resolved"]:
        return "resolved" if self.state == "resolved" else "firing"

    @property
    def service(self) -> str:
        return self.labels.get("service", "")

    def acked(self, now_us: int | None = None) -> bool:
        """A live ack (tocsin.processors.ack): acked_by set and not lapsed at ``now_us`` (default: now)."""
        if not self.acked_by or self.status != "firing":
            return False
        now = int(time.time() * 1e6) if now_us is None else now_us
        return self.ack_expires_at_us is None or now < self.ack_expires_at_us

    @property
    def starts_at(self) -> str:
        return iso(self.starts_at_us)

    @property
    def ends_at(self) -> str | None:
        return iso(self.ends_at_us) if self.ends_at_us else None

    def am_labels(self, severity: str | None = None) -> dict[str, str]:
        """Labels the Alertmanager way: ``alertname`` (the rule), the alert's labels, ``severity``."""
        return {"alertname": self.rule, **self.labels, "severity": severity or self.severity}

    def am_annotations(self) -> dict[str, str]:
        """Annotations plus the measured value and threshold, which receivers like to show."""
        out = dict(self.annotations)
        if self.value is not None:
            out.setdefault("value", f"{self.value:g}")
        if self.threshold is not None:
            out.setdefault("threshold", f"{self.threshold:g}")
        return out

    def links(self, public_url: str) -> dict[str, str]:
        """The alert's page and its prefilled ack and silence pages under ``public_url`` (api.public_url).

        No token in them: the pages ask for it as the dashboard does.
        """
        if not public_url:
            return {}
        base = f"{public_url.rstrip('/')}/dashboard/alerts/{quote(self.alert_id, safe='')}"
        matchers = [f"alertname={self.rule}", *(f"{k}={v}" for k, v in sorted(self.labels.items()))]
        return {"alert": base, "ack": f"{base}?action=ack",
                "silence": f"{public_url.rstrip('/')}/dashboard/silences?"
                           + urlencode([("matcher", m) for m in matchers] + [("alert_id", self.alert_id)])}

    def generator_url(self, external_url: str) -> str:
        return f"{external_url.rstrip('/')}/dashboard#alert-{self.alert_id}" if external_url else ""

    @property
    def summary(self) -> str:
        """One line: the summary annotation, else the description, else the measurement."""
        text = self.annotations.get("summary") or self.annotations.get("description")
        if text:
            return text
        if self.value is not None and self.threshold is not None:
            return f"{self.rule} is {self.value:g} (threshold {self.threshold:g})"
        return f"{self.rule} is {self.status}"

    def context(self) -> dict[str, Any]:
        """What templates see for one alert."""
        return {"summary": self.summary, "previous_severity": self.previous_severity,
            "status": self.status, "fingerprint": self.fingerprint, "alert_id": self.alert_id, "rule": self.rule,
            "severity": self.severity, "state": self.state, "service": self.service, "labels": dict(self.labels),
            "annotations": dict(self.annotations), "starts_at": self.starts_at, "ends_at": self.ends_at,
            "value": self.value, "threshold": self.threshold,
            "acked": self.acked(), "acked_by": self.acked_by if self.acked() else None,
            "acked_at": iso(self.acked_at_us) if self.acked() and self.acked_at_us else None,
            "ack_note": self.ack_note if self.acked() else None,
            "ack_expires_at": iso(self.ack_expires_at_us) if self.acked() and self.ack_expires_at_us else None,
        }


@dataclass(frozen=True)
class Notification:
    """One message to one receiver: a group's alerts plus the texts rendered for this receiver."""

    id: str
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: tuple[AlertView, ...]
    rendered: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    repeat: bool = False
    test: bool = False
    public_url: str = ""
    """api.public_url: the base of each alert's links (``AlertView.links``)."""

    @property
    def status(self) -> Literal["firing", "resolved"]:
        return "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    @property
    def firing(self) -> list[AlertView]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertView]:
        return [a for a in self.alerts if a.status == "resolved"]

    @property
    def common_labels(self) -> dict[str, str]:
        return _common([a.am_labels() for a in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        return _common([a.am_annotations() for a in self.alerts])

    @property
    def severity(self) -> str:
        """The worst severity among firing alerts (else among all)."""
        pool = self.firing or list(self.alerts)
        return max((a.severity for a in pool), key=SEVERITY_RANK.get, default="none")

    def text(self, part: str, fallback: str = "") -> str:
        return self.rendered.get(part) or fallback

    def context(self) -> dict[str, Any]:
        """What templates see: Alertmanager's template data, in snake_case."""
        alerts = [{**a.context(), "links": a.links(self.public_url)} for a in self.alerts]
        return {
            "receiver": self.receiver, "status": self.status, "group_key": self.group_key,
            "group_labels": dict(self.group_labels), "common_labels": self.common_labels,
            "common_annotations": self.common_annotations, "external_url": self.external_url,
            "alerts": alerts, "firing": [a for a in alerts if a["status"] == "firing"],
            "resolved": [a for a in alerts if a["status"] == "resolved"], "severity": self.severity,
            "repeat": self.repeat, "test": self.test,
        }


SEVERITY_RANK = {"none": 0, "info": 1, "warning": 2, "critical": 3}


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one attempt; ``retry_after_s`` when the receiver said how long to wait."""

    outcome: Outcome
    http_status: int = 0
    error: str = ""
    retry_after_s: float | None = None

    @classmethod
    def sent(cls, http_status: int = 0) -> DeliveryResult:
        return cls("sent", http_status)

    @classmethod
    def retry(cls, error: str, http_status: int = 0, retry_after_s: float | None = None) -> DeliveryResult:
        return cls("retry", http_status, error[:MAX_ERROR_CHARS], retry_after_s)

    @classmethod
    def failed(cls, error: str, http_status: int = 0) -> DeliveryResult:
        return cls("failed", http_status, error[:MAX_ERROR_CHARS])


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def classify_http(status: int, body: str = "", retry_after: str | None = None) -> DeliveryResult:
    """2xx sent; 429 and 5xx retry (429 with its Retry-After); any other status fails for good.

    408 (request timeout) is retried too: it says the request never got processed.
    """
    if 200 <= status < 300:
        return DeliveryResult.sent(status)
    detail = f"HTTP {status}: {body.strip()[:300]}" if body.strip() else f"HTTP {status}"
    if status == 429:
        return DeliveryResult.retry(detail, status, parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return DeliveryResult.retry(detail, status)
    return DeliveryResult.failed(detail, status)


C = TypeVar("C")


class Notifier(Generic[C]):
    """Base of every receiver: typed config in, one attempt per ``send()``.

    Subclasses set ``type`` and ``parts`` (the template parts they use) and
    implement ``send``. HTTP receivers use ``post_json``, which keeps one
    ``requests.Session`` (connection reuse) and maps every outcome.
    """

    type: ClassVar[str] = ""
    parts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: C) -> None:
        self.config = config
        self._session: requests.Session | None = None

    @property
    def name(self) -> str:
        return str(getattr(self.config, "name", self.type))

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
            self._session.headers["User-Agent"] = USER_AGENT
        return self._session

    def send(self, notification: Notification) -> DeliveryResult:
        raise NotImplementedError

    def post_json(self, url: str, body: bytes, headers: dict[str, str] | None = None,
                  accept: tuple[int, ...] = ()) -> DeliveryResult:
        """POSTs a JSON body; network errors and timeouts are retryable, statuses classified."""
        timeout = float(getattr(self.config, "timeout_s", 10.0))
        try:
            resp = self.session.post(url, data=body, timeout=timeout,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        except requests.Timeout as exc:
            return DeliveryResult.retry(f"timeout after {timeout:g} s: {type(exc).__name__}")
        except requests.RequestException as exc:
            return DeliveryResult.retry(f"network error: {type(exc).__name__}: {_redact(str(exc), url)}")
        if resp.status_code in accept:
            return DeliveryResult.sent(resp.status_code)
        return classify_http(resp.status_code, resp.text, resp.headers.get("Retry-After"))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _redact(text: str, url: str) -> str:
    """Never log a secret URL: Slack webhooks carry their token in the path, some hooks in the query."""
    if url:
        parsed = urlsplit(url)
        text = text.replace(url, "<url>")
        for secret in (parsed.path, parsed.query):
            if len(secret) > 1:
                text = text.replace(secret, "/<redacted>")
    return re.sub(r"url: \S+", "url: <redacted>", text)


_MODULES = {
    "email": "tocsin.sinks.notify.receivers.email:EmailNotifier",
    "webhook": "tocsin.sinks.notify.receivers.webhook:WebhookNotifier",
    "slack": "tocsin.sinks.notify.receivers.slack:SlackNotifier",
    "pagerduty": "tocsin.sinks.notify.receivers.pagerduty:PagerDutyNotifier",
    "alertmanager": "tocsin.sinks.notify.receivers.alertmanager:AlertmanagerNotifier",
}


def notifier_class(receiver_type: str) -> type[Notifier[Any]]:
    module, _, attr = _MODULES[receiver_type].partition(":")
    return getattr(importlib.import_module(module), attr)


def build_notifier(receiver: Any, alert_email_recipients: list[str] | None = None) -> Notifier[Any]:
    """The notifier for one receiver config; email falls back to ALERT_EMAIL_RECIPIENTS."""
    cls = notifier_class(receiver.type)
    if receiver.type == "email":
        return cls(receiver, default_recipients=list(alert_email_recipients or []))  # type: ignore[call-arg]
    return cls(receiver)
