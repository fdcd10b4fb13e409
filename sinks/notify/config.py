"""Configuration of notification routing, receivers and the daily summary.

The shape follows Alertmanager's (a route tree with matchers, ``continue``,
grouping and timing; receivers by name; inhibit rules), so an operator who
knows ``alertmanager.yml`` can read it::

    notify:
      receivers:
        - {name: ops-mail, type: email, smtp_host: mail.example.com}
        - {name: oncall, type: pagerduty, routing_key: "..."}
      route:
        receiver: ops-mail
        group_by: [service]
        routes:
          - {matchers: ["severity=critical"], receiver: oncall, continue: true}

Validation is pure: regexes compile, receiver names resolve, nothing is
opened or resolved on the network.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import re2
from pydantic import BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from tocsin.core.config import ConsumerGroupConfig, StrictModel
from tocsin.sinks.clickhouse.config import ClickHouseSinkSettings
from tocsin.sinks.notify.escalation import duration_s
from tocsin.sinks.notify.timeintervals import NamedTimeIntervalConfig, unknown_references

MatcherOp = Literal["=", "!=", "=~", "!~"]
_MATCHER_RE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$')

# Alertmanager's defaults (https://prometheus.io/docs/alerting/latest/configuration/#route).
DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0


MAX_MATCHER_REGEX_CHARS = 1024
"""Longest matcher regex: Alertmanager sets none; far above any label pattern, small enough to compile at once."""
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 1 << 20  # compiled program's memory: a pattern needing more is rejected (RE2 default 8 MiB)
_RE2_OPTIONS.log_errors = False  # the error is raised as a ValueError, not printed to stderr by the C++ side


@functools.lru_cache(maxsize=4096)
def compile_matcher_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2, anchored in full as Alertmanager anchors it; raises ValueError.

    RE2 runs in time linear in the input whatever the pattern (no backtracking:
    ``(a+)+$`` against ``aaaa...!`` is instant), and does not hold the GIL while it
    matches; patterns it cannot run in linear time (backreferences, lookaround)
    are rejected, as Alertmanager (Go's regexp, RE2 syntax) rejects them.
    """
    if len(pattern) > MAX_MATCHER_REGEX_CHARS:
        raise ValueError(f"regex longer than {MAX_MATCHER_REGEX_CHARS} characters")
    try:
        return re2.compile(f"^(?:{pattern})$", options=_RE2_OPTIONS)
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"invalid regex {pattern!r} (RE2 syntax, as Alertmanager): {why}") from None


class MatcherSpec(StrictModel):
    """One label matcher, as Alertmanager writes them: ``service=shop``, ``severity=~"warning|critical"``."""

    label: str = Field(description="Label name; rule, severity, state and fingerprint are labels too.")
    op: MatcherOp = Field("=", description="=, !=, =~ (full-match regex) or !~.")
    value: str = Field(description="Literal value, or a regex for =~ and !~.")

    @model_validator(mode="after")
    def _regex_compiles(self) -> MatcherSpec:
        if self.op in ("=~", "!~"):
            compile_matcher_regex(self.value)
        return self

    @classmethod
    def parse(cls, text: str) -> MatcherSpec:
        """``label<op>value`` with an optionally double-quoted value; raises ``ValueError``."""
        m = _MATCHER_RE.match(text)
        if not m:
            raise ValueError(f"matcher {text!r} is not label=value, label!=value, label=~regex or label!~regex")
        label, op, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return cls(label=label, op=op, value=value)

    def __str__(self) -> str:
        return f'{self.label}{self.op}"{self.value}"'

    def matches(self, labels: dict[str, str]) -> bool:
        """A missing label matches as the empty string (Alertmanager semantics); regexes match in full."""
        v = labels.get(self.label, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = compile_matcher_regex(self.value).search(v) is not None  # anchored at both ends: a full match
        return hit if self.op == "=~" else not hit


def matches_all(matchers: Iterable[MatcherSpec], labels: dict[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def _matchers(value: Any) -> Any:
    """Accepts ``["service=shop"]`` or ``[{label, op, value}]``."""
    if isinstance(value, list):
        return [MatcherSpec.parse(v) if isinstance(v, str) else v for v in value]
    return value


class RouteConfig(StrictModel):
    """A node of the route tree; unset fields inherit from the parent route."""

    model_config = ConfigDict(populate_by_name=True)

    receiver: str | None = Field(None, description="Receiver name; inherits the parent's when unset.")
    matchers: list[MatcherSpec] = Field(default_factory=list, description="All must match (AND).")
    continue_: bool = Field(False, alias="continue", description="Keep matching sibling routes after this one.")
    group_by: list[str] | None = Field(None, description="Labels that split alerts into notification groups.")
    group_wait_s: float | None = Field(None, ge=0, description="Wait before a new group's first notification.")
    group_interval_s: float | None = Field(None, ge=0, description="Wait before notifying a group's new alerts.")
    repeat_interval_s: float | None = Field(None, gt=0, description="Re-send still-firing alerts after this long.")
    send_resolved: bool | None = Field(None, description="Notify when an alert resolves.")
    templates: dict[str, str] = Field(
        default_factory=dict, description="Template part (title, text, html) -> inline jinja2; beats the receiver's."
    )
    routes: list[RouteConfig] = Field(default_factory=list, description="Child routes, tried in order.")
    mute_time_intervals: list[str] = Field(
        default_factory=list, description="Named time intervals in which this route sends nothing (not inherited).")
    active_time_intervals: list[str] = Field(
        default_factory=list, description="Named time intervals outside which this route is quiet (not inherited).")
    escalate_after_s: Annotated[float | None, BeforeValidator(duration_s)] = Field(
        None, gt=0, alias="escalate_after",
        description="Still firing and not acked this long after it started (15m): also send to escalate_to.")
    escalate_to: str | None = Field(None, description="Receiver an unacked alert escalates to, once an incident.")

    @field_validator("matchers", mode="before")
    @classmethod
    def _norm_matchers(cls, v: Any) -> Any:
        return _matchers(v)


class InhibitRuleConfig(StrictModel):
    """While a firing alert matches ``source_matchers``, alerts matching ``target_matchers`` with equal labels mute."""

    source_matchers: list[MatcherSpec] = Field(min_length=1)
    target_matchers: list[MatcherSpec] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list, description="Labels that must be equal in source and target.")

    @field_validator("source_matchers", "target_matchers", mode="before")
    @classmethod
    def _norm(cls, v: Any) -> Any:
        return _matchers(v)


def _default_inhibit_rules() -> list[InhibitRuleConfig]:
    """A critical alert mutes the warnings of its service (and, so, of its own fingerprint)."""
    return [InhibitRuleConfig(source_matchers=[MatcherSpec(label="severity", value="critical")],
                              target_matchers=[MatcherSpec(label="severity", value="warning")],
                              equal=["service"])]


class SmtpConfig(StrictModel):
    """How to reach an SMTP server."""

    smtp_host: str = Field("localhost", description="SMTP server host name.")
    smtp_port: int | None = Field(None, ge=1, le=65535, description="Default: 465 for ssl, 587 starttls, 25 none.")
    security: Literal["starttls", "ssl", "none"] = Field("starttls", description="Transport security.")
    username: str | None = Field(None, description="SMTP AUTH user; no AUTH when unset.")
    password: SecretStr | None = Field(None, description="SMTP AUTH password.")
    from_addr: str = Field("tocsin@localhost", description="The From: address.")
    timeout_s: float = Field(10.0, gt=0, description="Connect and command timeout.")
    ca_file: Path | None = Field(None, description="CA bundle to verify the server with (default: the system's).")

    @property
    def port(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {"ssl": 465, "starttls": 587, "none": 25}[self.security]


class _ReceiverBase(StrictModel):
    """Delivery settings every receiver has: retries, rate limit, templates."""

    name: str = Field(min_length=1, description="Referenced by routes and `tocsin notify test --receiver`.")
    timeout_s: float = Field(10.0, gt=0, description="Per-request timeout.")
    max_attempts: int = Field(12, ge=1, description="Attempts before a notification finally fails.")
    max_retry_s: float = Field(900.0, gt=0, description="Give up retrying after this long since the first attempt.")
    backoff_initial_s: float = Field(1.0, gt=0, description="First retry delay; doubles each retry, with jitter.")
    backoff_max_s: float = Field(60.0, gt=0, description="Cap of the retry delay.")
    retry_after_max_s: float = Field(300.0, gt=0, description="Cap on a 429's Retry-After that is honoured.")
    rate_limit_per_s: float = Field(10.0, gt=0, description="Sustained requests per second (token bucket rate).")
    rate_limit_burst: int = Field(10, ge=1, description="Requests allowed back to back (token bucket size).")
    templates: dict[str, str] = Field(default_factory=dict, description="Template part -> inline jinja2 source.")


class EmailReceiverConfig(_ReceiverBase, SmtpConfig):
    """SMTP email, multipart text + HTML, to ``to`` or else ALERT_EMAIL_RECIPIENTS."""

    type: Literal["email"] = "email"
    to: list[str] = Field(default_factory=list, description="Recipients; empty means alert_email_recipients.")
    rate_limit_per_s: float = Field(1.0, gt=0, description="Mails per second; one a second keeps relays friendly.")
    rate_limit_burst: int = Field(5, ge=1, description="Mails back to back.")


class WebhookReceiverConfig(_ReceiverBase):
    """Alertmanager webhook v4 JSON to ``url``, optionally signed with HMAC-SHA256."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://", description="Where to POST.")
    hmac_secret: SecretStr | None = Field(None, description="Signs the body; the hex digest goes in signature_header.")
    signature_header: str = Field("X-Tocsin-Signature", description="Header carrying sha256=<hex HMAC of the body>.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    max_alerts: int = Field(0, ge=0, description="Truncate alerts[] to this many (0 = all), as Alertmanager does.")


class SlackReceiverConfig(_ReceiverBase):
    """Slack incoming webhook: blocks plus an attachment coloured by severity."""

    type: Literal["slack"] = "slack"
    url: SecretStr = Field(description="The incoming-webhook URL (a secret: it grants posting).")
    channel: str | None = Field(None, description="Override the webhook's channel, where the app allows it.")
    username: str | None = Field(None, description="Override the posting name.")
    # Slack: "1 message per second per webhook, short bursts allowed" (api.slack.com/docs/rate-limits).
    rate_limit_per_s: float = Field(1.0, gt=0, description="Slack allows about one message a second per webhook.")
    rate_limit_burst: int = Field(3, ge=1, description="Short bursts Slack tolerates.")


class PagerDutyReceiverConfig(_ReceiverBase):
    """PagerDuty Events API v2: one trigger or resolve per alert, dedup_key = fingerprint."""

    type: Literal["pagerduty"] = "pagerduty"
    url: str = Field("https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://", description="Events endpoint.")
    routing_key: SecretStr = Field(description="The integration's routing key.")
    source: str | None = Field(None, description="payload.source; default: the alert's host or service label.")
    client: str = Field("Tocsin", description="Shown in PagerDuty as the sender.")
    client_url: str | None = Field(None, description="Link back to the dashboard.")
    # PagerDuty Events API v2 allows 120 events a minute per routing key.
    rate_limit_per_s: float = Field(2.0, gt=0, description="PagerDuty allows 120 events/min per routing key.")
    rate_limit_burst: int = Field(10, ge=1, description="Events back to back.")


class AlertmanagerReceiverConfig(_ReceiverBase):
    """A real Alertmanager: POST /api/v2/alerts; resolved alerts carry endsAt."""

    type: Literal["alertmanager"] = "alertmanager"
    url: str = Field(pattern=r"^https?://", description="Base URL, e.g. http://alertmanager:9093.")
    firing_ttl_s: float = Field(
        86400.0, gt=0,
        description="endsAt of a firing alert is now + this; repeats refresh it (Alertmanager's 5 m default "
                    "would resolve long incidents that are not re-sent).",
    )


ReceiverConfig = Annotated[
    EmailReceiverConfig | WebhookReceiverConfig | SlackReceiverConfig | PagerDutyReceiverConfig
    | AlertmanagerReceiverConfig,
    Field(discriminator="type"),
]


class NotifyConfig(ConsumerGroupConfig):
    """Notification routing and receivers (the ``sink-notify`` service)."""

    group_id: str = Field("tocsin-sink-notify", description="Kafka consumer group over the alerts topic.")
    receivers: list[ReceiverConfig] = Field(default_factory=list, description="Named receivers routes send to.")
    route: RouteConfig = Field(default_factory=RouteConfig, description="The root of the route tree.")
    group_by: list[str] = Field(["service"], description="Root default of route.group_by.")
    group_wait_s: float = Field(DEFAULT_GROUP_WAIT_S, ge=0, description="Root default (Alertmanager's 30 s).")
    group_interval_s: float = Field(DEFAULT_GROUP_INTERVAL_S, ge=0, description="Root default (Alertmanager's 5 m).")
    repeat_interval_s: float = Field(DEFAULT_REPEAT_INTERVAL_S, gt=0, description="Root default (Alertmanager's 4 h).")
    send_resolved: bool = Field(True, description="Root default: resolved notifications are sent.")
    inhibit_rules: list[InhibitRuleConfig] = Field(
        default_factory=_default_inhibit_rules, description="Default: critical mutes warning of the same service."
    )
    template_dir: Path | None = Field(None, description="Directory searched before the built-in templates.")
    external_url: str = Field("", description="Link to this Tocsin (webhook externalURL, generatorURL).")
    max_pending_transitions: int = Field(
        20_000, ge=100, description="Unsettled transitions in memory before the consumer pauses (backpressure)."
    )
    tick_s: float = Field(0.1, gt=0, le=5, description="How often group timers are checked.")
    commit_interval_s: float = Field(
        0.2, gt=0, le=3600, description="Settled offsets are committed at most this often (and on close/rebalance)."
    )
    log_table: str = Field("notifications", description="ClickHouse table of the notification log.")
    time_intervals: list[NamedTimeIntervalConfig] = Field(
        default_factory=list, description="Named intervals routes mute or activate by (sinks/notify/timeintervals.py).")

    @model_validator(mode="after")
    def _receivers_resolve(self) -> NotifyConfig:
        names = [r.name for r in self.receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"receiver names must be unique: {', '.join(dupes)}")
        known = set(names)
        problems: list[str] = []

        def walk(route: RouteConfig, path: str) -> None:
            if route.receiver is not None and route.receiver not in known:
                problems.append(f"{path}.receiver: unknown receiver {route.receiver!r} (known: {sorted(known)})")
            if (route.escalate_after_s is None) != (route.escalate_to is None):
                problems.append(f"{path}: escalate_after and escalate_to go together")
            elif route.escalate_to is not None and route.escalate_to not in known:
                problems.append(f"{path}.escalate_to: unknown receiver {route.escalate_to!r} (known: {sorted(known)})")
            for i, child in enumerate(route.routes):
                walk(child, f"{path}.routes[{i}]")

        walk(self.route, "route")
        problems += unknown_references(self.route, {t.name for t in self.time_intervals})
        if self.receivers and self.route.receiver is None:
            problems.append("route.receiver: the root route needs a receiver when receivers are configured")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def receiver(self, name: str) -> ReceiverConfig:
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(name)


class SummaryConfig(StrictModel):
    """The daily summary email to MONITORING_SUMMARY_RECIPIENTS (the seed's Celery task).

    The time of day is ``jobs.daily_summary.at`` (UTC); the ``sink-notify``
    service runs it, and the notification log makes it once per day.
    """

    enabled: bool = Field(True, description="Send the daily summary (needs monitoring_summary_recipients).")
    hours: float = Field(24.0, gt=0, le=24 * 31, description="Period covered; compared with the period before it.")
    smtp: SmtpConfig = Field(default_factory=SmtpConfig, description="Server the summary is sent through.")
    use_receiver: str | None = Field(None, description="Take the SMTP settings of this email receiver instead.")
    subject_prefix: str = Field("[tocsin]", description="Start of the subject line.")
    title: str = Field("Tocsin daily summary", description="Heading of the summary.")
    output_dir: Path | None = Field(None, description="Also write each summary's HTML and text here.")
    max_attempts: int = Field(6, ge=1, description="SMTP attempts before the day's summary finally fails.")
    backoff_initial_s: float = Field(5.0, gt=0, description="First retry delay; doubles, with jitter.")


class NotifySettings(ClickHouseSinkSettings, Protocol):
    """The configuration the notify sink and the summary read (the notification log is a store table)."""

    @property
    def notify(self) -> NotifyConfig: ...
    @property
    def summary(self) -> SummaryConfig: ...
    @property
    def alert_email_recipients(self) -> list[str]: ...
    @property
    def monitoring_summary_recipients(self) -> list[str]: ...
