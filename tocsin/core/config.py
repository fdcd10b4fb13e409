"""Config shared by every component: the strict model base, the YAML reader, error lines, and the
Kafka, ClickHouse and API connection sections.

The root model that gathers the components' sections lives above them, in ``tocsin.app.config``;
this module imports no component.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from tocsin.core import paths
from tocsin.core.errors import ConfigError


class StrictModel(BaseModel):
    """A frozen config section that rejects unknown keys (a typo is an error, not a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ConsumerGroupConfig(StrictModel):
    """What every consumer-group service shares; each sets its own ``group_id`` default."""

    group_id: str = Field(description="Kafka consumer group.")
    group_instance_id: str | None = Field(
        None, description="Static group membership: a restarted instance with the same id resumes without a rebalance."
    )
    session_timeout_ms: int = Field(
        10_000, ge=6_000, le=300_000,
        description="Consumer session timeout: how soon a crashed instance's partitions move (broker min 6000).",
    )


def read_yaml(path: str | Path, what: str, error: type[ConfigError] = ConfigError) -> Any:
    """A YAML file's content; unreadable or malformed files raise ``error`` naming the file and line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(origin: str, exc: ValidationError) -> list[str]:
    """One ``origin: field: reason (got value)`` line per pydantic error."""
    lines = []
    for err in exc.errors():
        field = _dotted(tuple(p for p in err["loc"] if p not in ("function-after",)))
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
        lines.append(f"{origin}: {field}: {msg}{got}")
    return lines


class TopicsConfig(StrictModel):
    """Topic names and how ``tocsin topics create`` makes them."""

    logs: str = Field("tocsin.logs", description="LogEvent/LogBatch topic, keyed by service.")
    metrics: str = Field("tocsin.metrics", description="MetricEvent/MetricBatch topic, keyed by service.")
    health: str = Field("tocsin.health", description="HealthEvent topic, keyed by service.")
    alerts: str = Field("tocsin.alerts", description="AlertEvent changelog, keyed by fingerprint, compacted.")
    control: str = Field("tocsin.control", description="ControlEvent topic: manual resolve, ack.")
    silences: str = Field("tocsin.silences", description="Silences by silence id, compacted: kept while they last.")
    deadletter: str = Field("tocsin.deadletter", description="Bad input with the reason in its headers.")
    patterns: str = Field("tocsin.patterns", description="Seen error patterns (new_pattern), compacted.")
    partitions: int = Field(6, ge=1, description="Partitions of every topic; more means more processor instances.")
    replication_factor: int = Field(1, ge=1, description="Replicas of every topic; 3 on a production cluster.")
    retention_hours: int = Field(72, ge=1, description="Retention of the input topics (alerts is compacted).")

    @field_validator("logs", "metrics", "health", "alerts", "control", "deadletter", "silences", "patterns")
    @classmethod
    def _legal_topic(cls, v: str) -> str:
        # Kafka's own rule (org.apache.kafka.common.internals.Topic): 1-249 of [a-zA-Z0-9._-], not "." or "..".
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v) or v in (".", ".."):
            raise ValueError("must be 1-249 characters of letters, digits, '.', '_' or '-'")
        return v


class KafkaConfig(StrictModel):
    """Kafka connection; security settings pass through to every client."""

    bootstrap_servers: str = Field(
        "", description="host:port[,host:port]; empty means the local broker started by `tocsin kafka up`."
    )
    client_id: str = Field("tocsin", description="Client id the broker sees (quotas, logs).")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*.")
    sasl_plain_username: str | None = Field(None, description="SASL user (PLAIN, SCRAM).")
    sasl_plain_password: SecretStr | None = Field(None, description="SASL password; never printed.")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates.")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client private key for mutual TLS.")
    request_timeout_ms: int = Field(30_000, ge=1000, description="Kafka request timeout.")
    lean_reader: bool = Field(
        True, description="Consumers read fetched record batches with tocsin's inline reader (same records, "
        "about 2.5 us less CPU per record); false uses kafka-python's own.")
    topics: TopicsConfig = TopicsConfig()

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python keyword arguments shared by producers, consumers and admin clients."""
        from tocsin.core.localkafka import resolve_bootstrap

        kw: dict[str, Any] = {
            "bootstrap_servers": resolve_bootstrap(self.bootstrap_servers).split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_plain_username
            if self.sasl_plain_password is not None:
                kw["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, key)
            if value is not None:
                kw[key] = str(value)
        return kw


class ClickHouseConfig(StrictModel):
    """Which ClickHouse: ``chdb://PATH`` (embedded engine) or ``http(s)://user:pass@host:port/db``."""

    url: str = Field("", description="Empty means chdb://$TOCSIN_HOME/clickhouse.")
    database: str = Field("tocsin", description="Database holding every Tocsin table.")
    username: str | None = Field(None, description="ClickHouse user (overrides the URL's).")
    password: SecretStr | None = Field(None, description="ClickHouse password (overrides the URL's); never printed.")
    retention_days: int = Field(30, ge=1, description="TTL of every table; the seed kept 30 days.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Connect timeout of a ClickHouse server.")

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v and not v.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return v

    def resolved_url(self) -> str:
        return self.url or f"chdb://{paths.home() / 'clickhouse'}"


ApiScope = Literal["read", "operate", "admin"]


class ApiTokenConfig(StrictModel):
    """A named bearer token with a scope: read < operate < admin (each includes the ones before)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$",
                      description="Who this token is: recorded as the actor of every action taken with it.")
    scope: ApiScope = Field(description="read (dashboard, alerts, health, metrics), operate (+ resolve, "
                                        "acknowledge, silence), admin (+ store query, cleanup, archive, reload).")
    token: SecretStr = Field(description="The bearer secret (at least 16 characters).", min_length=16)


class ApiConfig(StrictModel):
    """The processor service's HTTP API."""

    http_addr: str = Field("127.0.0.1:8080", description="host:port the HTTP API listens on.")
    token: SecretStr | None = Field(None, description="Bearer token for everything but /health: an admin "
                                                      "token named `admin` (kept for compatibility).")
    tokens: list[ApiTokenConfig] = Field(default_factory=list, description="Named, scoped bearer tokens.")
    tokens_file: str | None = Field(None, description="YAML list of tokens like `tokens`, re-read when it "
                                                      "changes (rotation without a restart).")
    tls_certfile: str | None = Field(None, description="PEM certificate (chain): the API serves HTTPS with it.")
    tls_keyfile: str | None = Field(None, description="PEM private key of tls_certfile.")
    tls_cafile: str | None = Field(None, description="CA the CLI trusts for the API (default: tls_certfile, "
                                                     "for a self-signed one; else the system store).")

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certfile else "http"
    service_name: str = Field("tocsin", description="Reported as `service` by /health.")
    public_url: str = Field("", description="Where people reach this API (https://tocsin.example.com): the base of "
                            "the alert, ack and silence links in notifications; empty: no links.")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        if not v:
            return v
        u = urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment or u.username or u.password:
            raise ValueError("must be an http(s) URL without credentials, query or fragment, e.g. "
                             "https://tocsin.example.com (a token never travels in a URL)")
        return v.rstrip("/")

    @field_validator("http_addr")
    @classmethod
    def _addr(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port with a port from 1 to 65535")
        return v

    @property
    def host(self) -> str:
        return self.http_addr.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.http_addr.rpartition(":")[2])


class Wiring(Protocol):
    """What every component reads of the whole configuration: how to reach Kafka, ClickHouse and the API.

    Components depend on this shape (and their own section), never on ``tocsin.app.config.TocsinConfig``,
    which gathers them all and so sits above them.
    """

    @property
    def kafka(self) -> KafkaConfig: ...
    @property
    def clickhouse(self) -> ClickHouseConfig: ...
    @property
    def api(self) -> ApiConfig: ...


# -- secret masking -------------------------------------------------------------------------------

MASK = "***"
SECRET_PARAMS = ("token", "key", "secret", "password", "passwd", "pwd", "sig", "signature", "auth",
                 "credential", "session", "code")
"""Query parameters whose values are credentials when their name contains one of these (api_key, X-Amz-Signature)."""
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:?#]*):(?P<pw>[^@\s/?#]*)@")
_PARAM_RE = re.compile(r"(?P<name>[?&;][^=&#\s]*(?:" + "|".join(SECRET_PARAMS) + r")[^=&#\s]*)=(?P<value>[^&#\s'\"]+)",
                       re.IGNORECASE)
_BEARER_RE = re.compile(r"(?P<kind>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with credentials inside URLs and DSNs masked: ``user:pass@`` passwords, secret-looking query
    parameters (``?token=``, ``api_key=``, ``X-Amz-Signature=``) and ``Bearer``/``Basic`` credentials."""
    if "://" not in text and "=" not in text and "earer" not in text and "asic" not in text:
        return text
    text = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _PARAM_RE.sub(lambda m: f"{m['name']}={MASK}", text)
    return _BEARER_RE.sub(lambda m: f"{m['kind']} {MASK}", text)


def redact_tree(value: Any) -> Any:
    """Every string in a JSON-like tree ``redact``-ed (for ``config show``, health details, API documents)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in the message, its arguments and string extras."""

    _STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg = redact(record.getMessage())
            record.args = None
        except Exception:  # a broken format must still be logged, as logging itself would
            pass
        for k, v in list(record.__dict__.items()):
            if k not in self._STANDARD and isinstance(v, str):
                setattr(record, k, redact(v))
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
