"""Helpers of the notification tests: AlertEvents, the sink on a thread, HTTP receivers that record requests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug import Request, Response

from tests.conftest import make_config
from tests.kafkautil import produce, wait_for
from tocsin.app.config import TocsinConfig
from tocsin.core.events import ALERT_EVENT, CONTROL_EVENT, now_us
from tocsin.core.kafka import create_topics


def fingerprint(rule: str, labels: dict[str, str]) -> str:
    return hashlib.sha256((rule + json.dumps(labels, sort_keys=True)).encode()).hexdigest()[:16]


def alert_event(rule: str = "error_rate", service: str = "shop", state: str = "firing", severity: str = "warning",
                previous_state: str = "pending", previous_severity: str = "none", ts: int | None = None,
                started_at: int | None = None, alert_id: str | None = None, labels: dict[str, str] | None = None,
                value: float | None = 7.0, threshold: float | None = 5.0, **extra: Any) -> dict[str, Any]:
    """An AlertEvent record as the processor emits it."""
    labels = {"service": service, **(labels or {})}
    fp = extra.pop("fingerprint", None) or fingerprint(rule, labels)
    ts = ts or now_us()
    started_at = started_at or ts
    alert_id = alert_id or f"{fp}-{started_at}"
    return {
        "event_id": hashlib.sha256(f"{alert_id}|{state}|{severity}|{ts}".encode()).hexdigest()[:32],
        "ts": ts, "alert_id": alert_id, "fingerprint": fp, "rule": rule, "severity": severity,
        "previous_severity": previous_severity, "state": state, "previous_state": previous_state, "value": value,
        "threshold": threshold, "labels": labels, "annotations": {"summary": f"{rule} high on {service}"},
        "started_at": started_at, "ended_at": extra.pop("ended_at", None),
        "resolved_by": extra.pop("resolved_by", None),
        **extra,
    }


def resolved_of(ev: dict[str, Any], ts: int | None = None) -> dict[str, Any]:
    """The auto-resolve transition of a firing event."""
    ts = ts or now_us()
    return alert_event(rule=ev["rule"], service=ev["labels"]["service"], state="resolved", severity="none",
                       previous_state="firing", previous_severity=ev["severity"], ts=ts,
                       started_at=ev["started_at"], alert_id=ev["alert_id"], labels=ev["labels"],
                       fingerprint=ev["fingerprint"], ended_at=ts, resolved_by="auto")


def produce_alerts(cfg: TocsinConfig, events: list[dict[str, Any]]) -> None:
    assert produce(cfg.kafka, cfg.kafka.topics.alerts, ALERT_EVENT, events, key_field="fingerprint") == len(events)


def produce_control(cfg: TocsinConfig, events: list[dict[str, Any]]) -> None:
    assert produce(cfg.kafka, cfg.kafka.topics.control, CONTROL_EVENT, events, key_field="event_id") == len(events)


def notify_config(kafka_bootstrap: str, clickhouse_url: str, notify: dict[str, Any], **sections: Any) -> TocsinConfig:
    """A test config with fresh topics (created) and database, and the given notify section."""
    cfg = make_config(kafka_bootstrap, clickhouse_url, notify=notify, **sections)
    create_topics(cfg.kafka)
    return cfg


@pytest.fixture
def notify_env(kafka_bootstrap: str, clickhouse_url: str) -> Iterator[Callable[..., TocsinConfig]]:
    """``make(notify_section, **other_sections) -> cfg``; drops the test databases afterwards."""
    from tocsin.core.clickhouse import connect

    made: list[TocsinConfig] = []

    def make(notify: dict[str, Any], **sections: Any) -> TocsinConfig:
        cfg = notify_config(kafka_bootstrap, clickhouse_url, notify, **sections)
        made.append(cfg)
        return cfg

    yield make
    for cfg in made:
        with contextlib.suppress(Exception):
            connect(cfg.clickhouse).command(f"DROP DATABASE IF EXISTS `{cfg.clickhouse.database}`")


def iso_seconds(ts_us: int) -> str:
    """RFC 3339 to the second (Alertmanager re-formats fractions)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_us // 1_000_000))


def wait_until(predicate: Callable[[], Any], timeout_s: float = 120.0, interval_s: float = 0.05,
               what: str = "condition") -> Any:
    return wait_for(predicate, timeout_s, what, interval_s)


def deliver_one(cfg: TocsinConfig, rec: Any, service: str = "shop", severity: str = "critical") -> dict[str, Any]:
    """Runs the sink over one firing alert until its first attempt settled; returns the sink's stats."""
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [alert_event("error_rate", service, severity=severity)])
        wait_until(lambda: rec.count() >= 1, what="one attempt")
        wait_until(sink.idle, what="settled")
        return sink.stats()


@contextlib.contextmanager
def running_sink(cfg: TocsinConfig) -> Iterator[Any]:
    """The notify sink on a thread; stopped and closed on exit."""
    from tocsin.sinks.notify.sink import NotifySink

    sink = NotifySink(cfg)
    sink.start()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            sink.run()
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)

    thread = threading.Thread(target=loop, name="notify-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.close()
        thread.join(30)
        assert not errors, f"the sink loop raised: {errors[0]!r}"


@dataclass
class Recorded:
    path: str
    at: float
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """Records every request to a path of a pytest-httpserver and answers from a script of statuses."""

    script: list[int] = field(default_factory=list)  # statuses to answer first, then `default`
    default: int = 200
    retry_after: str | None = None
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, request: Request) -> Response:
        with self.lock:
            status = self.script.pop(0) if self.script else self.default
            self.requests.append(Recorded(request.path, time.monotonic(), dict(request.headers), request.get_data()))
        headers = {"Retry-After": self.retry_after} if status == 429 and self.retry_after else {}
        return Response("ok" if status < 300 else f"status {status}", status=status, headers=headers)

    def bodies(self) -> list[Any]:
        with self.lock:
            return [r.json() for r in self.requests]

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


def record(httpserver: Any, path: str, **kw: Any) -> Recorder:
    rec = Recorder(**kw)
    httpserver.expect_request(path, method="POST").respond_with_handler(rec.handler)
    return rec


def query(cfg: TocsinConfig, sql: str) -> list[tuple[Any, ...]]:
    """Runs SQL with ``{log}`` standing for this test's notifications table."""
    from tocsin.core.clickhouse import connect

    client = connect(cfg.clickhouse)
    return list(client.query(sql.replace("{log}", f"`{cfg.clickhouse.database}`.notifications")).result_rows)


# ----------------------------------------------------------------------------- a real SMTP server (aiosmtpd)

SMTP_USER = "tocsin"
SMTP_PASSWORD = "hunter2"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    def message(self) -> Any:
        from email import policy
        from email.parser import BytesParser

        return BytesParser(policy=policy.default).parsebytes(self.content)


@dataclass
class SmtpServer:
    host: str
    port: int
    ca_file: str
    inbox: list[Received]
    replies: list[str]  # scripted DATA replies ("451 ..."), then 250

    def smtp_config(self, security: str, **kw: Any) -> dict[str, Any]:
        return {"smtp_host": self.host, "smtp_port": self.port, "security": security, "ca_file": self.ca_file,
                "username": SMTP_USER, "password": SMTP_PASSWORD, "from_addr": "tocsin@example.com", **kw}


def self_signed_cert(directory: Any) -> tuple[str, str]:
    """A certificate for localhost/127.0.0.1 and its key, written as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = f"{directory}/smtp.crt", f"{directory}/smtp.key"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


@contextlib.contextmanager
def smtp_server(directory: Any, security: str = "starttls") -> Iterator[SmtpServer]:
    """aiosmtpd on a free port: STARTTLS (TLS required before AUTH), implicit TLS (``ssl``), or ``none``."""
    import socket
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = self_signed_cert(directory)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    inbox: list[Received] = []
    replies: list[str] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if replies:
                return replies.pop(0)
            inbox.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 Message accepted"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 235 or 535

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kwargs: dict[str, Any] = {"authenticator": authenticator, "auth_require_tls": True}
    if security == "none":  # a plain relay on loopback: no TLS, no AUTH
        controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    elif security == "ssl":
        # Implicit TLS: the whole session is encrypted, which aiosmtpd's auth_require_tls cannot see.
        kwargs["auth_require_tls"] = False
        controller = Controller(Handler(), hostname="127.0.0.1", port=port, ssl_context=ctx, **kwargs)
    else:
        controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx,
                                require_starttls=True, **kwargs)
    controller.start()
    try:
        yield SmtpServer("localhost", port, cert, inbox, replies)
    finally:
        controller.stop()
