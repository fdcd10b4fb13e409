"""Kafka wiring shared by every component: client factories, topic admin, dead-letter records.

All clients take their connection and security settings from ``KafkaConfig``
so that SASL/TLS configured once applies everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError as _KafkaError
from kafka.errors import SaslAuthenticationFailedError, TopicAlreadyExistsError, UnsupportedSaslMechanismError

from tocsin.core import kafkafetch
from tocsin.core.config import KafkaConfig
from tocsin.core.errors import KafkaError, ReadTimeout

log = logging.getLogger(__name__)

# Producer defaults tuned for throughput on loopback and LAN: batch for up to
# 5 ms, 256 KiB batches (kafka-python's 16 KiB default costs a request per
# ~100 events), acks=all so an acknowledged event survives a broker restart.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "max_request_size": 4 * 1024 * 1024,
    "retries": 2**31 - 1,
    "delivery_timeout_ms": 120_000,
    # Back within 2 s of a broker restart (kafka-python's default backs off to 30 s): what a service buffered
    # then lands while the processor's hold after the outage lasts, not after it (counted late).
    "reconnect_backoff_max_ms": 2000,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "max_poll_records": 5000,
    "fetch_max_bytes": 50 * 1024 * 1024,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_min_bytes": 1,
    "fetch_max_wait_ms": 100,
    "reconnect_backoff_max_ms": 2000,
}


def _wrap(exc: Exception, what: str, cfg: KafkaConfig, seen: Sequence[BaseException] = ()) -> KafkaError:
    servers = ",".join(cfg.client_kwargs()["bootstrap_servers"])
    diagnosis = diagnose(cfg, seen)
    if diagnosis:
        return KafkaError(diagnosis)
    return KafkaError(
        f"{what} failed against {servers}: {type(exc).__name__}: {exc}. "
        "Is the broker running (`tocsin kafka up`, or set KAFKA_BOOTSTRAP_SERVERS)?"
    )


class _Seen(logging.Handler):
    """Collects the exceptions kafka-python logs while a client bootstraps.

    kafka-python 3 retries a failing bootstrap until its deadline and then raises a bare
    "Unable to bootstrap"; the cause (a SASL rejection, a certificate error, a closed socket)
    only reaches its log records' arguments.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.seen += [a for a in args if isinstance(a, BaseException)][:4]
        del self.seen[:-64]


@contextlib.contextmanager
def _watching() -> Any:
    handler = _Seen()
    logger = logging.getLogger("kafka")
    logger.addHandler(handler)
    try:
        yield handler.seen
    finally:
        logger.removeHandler(handler)


def _chain(exc: BaseException) -> Iterable[BaseException]:
    for _ in range(8):
        yield exc
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            return
        exc = nxt


def _speaks_tls(host: str, port: int, timeout_s: float = 5.0) -> bool | None:
    """Whether host:port completes a TLS handshake (certificate unchecked); None if unreachable."""
    import socket

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock, \
                ctx.wrap_socket(sock, server_hostname=host):
            return True
    except ssl.SSLError:
        return False
    except OSError:
        return None


def diagnose(cfg: KafkaConfig, seen: Sequence[BaseException]) -> str | None:
    """One line naming the setting at fault when a client could not connect, or None if it is not a
    security mistake (the broker down, say): kafka-python's exceptions classified, and for a socket the
    broker closed, a TLS probe of the first bootstrap server (plaintext client on a TLS port)."""
    kw = cfg.client_kwargs()
    server = kw["bootstrap_servers"][0]
    host, _, port = server.rpartition(":")
    uses_tls = cfg.security_protocol in ("SSL", "SASL_SSL")
    closed = False
    for exc in (e for top in seen for e in _chain(top)):
        if isinstance(exc, SaslAuthenticationFailedError):
            return (f"kafka.sasl_plain_password: the broker rejected the credentials for user "
                    f"{cfg.sasl_plain_username} (SASL authentication failed: {exc})")
        if isinstance(exc, UnsupportedSaslMechanismError):
            return f"kafka.sasl_mechanism: {exc}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (f"kafka.ssl_cafile: the broker's certificate is not signed by a CA in "
                    f"{cfg.ssl_cafile or 'the system trust store'} ({exc.verify_message})")
        if isinstance(exc, ssl.SSLError) and uses_tls:
            return (f"kafka.security_protocol: {server} does not speak TLS ({exc.reason or exc}); "
                    f"{cfg.security_protocol} needs a TLS listener (use PLAINTEXT or SASL_PLAINTEXT for this port)")
        closed = closed or "disconnected" in str(exc) or isinstance(exc, ConnectionError)
    if not closed or not port.isdigit():
        return None
    if not uses_tls and _speaks_tls(host, int(port)):
        return (f"kafka.security_protocol: {server} speaks TLS but security_protocol is "
                f"{cfg.security_protocol} (use SSL or SASL_SSL)")
    if cfg.sasl_mechanism:
        return (f"kafka.sasl_plain_password: the broker rejected the credentials for user "
                f"{cfg.sasl_plain_username} (SASL authentication failed: it closed the connection "
                f"during {cfg.sasl_mechanism} authentication)")
    if not cfg.security_protocol.startswith("SASL"):
        return (f"kafka.security_protocol: {server} closed the connection during the handshake: its listener "
                f"expects SASL (set security_protocol SASL_SSL or SASL_PLAINTEXT and sasl_mechanism)")
    return None


def producer(cfg: KafkaConfig, **overrides: Any) -> KafkaProducer:
    with _watching() as seen:
        try:
            return KafkaProducer(**{**cfg.client_kwargs(), **PRODUCER_DEFAULTS, **overrides})
        except _KafkaError as exc:
            raise _wrap(exc, "connecting a producer", cfg, seen) from exc


def consumer(cfg: KafkaConfig, *topics: str, group_id: str | None = None, **overrides: Any) -> KafkaConsumer:
    """A consumer with manual commits; subscribe later if ``topics`` is empty.

    With ``cfg.lean_reader`` (the default) its fetched batches are read by ``tocsin.core.kafkafetch``.
    """
    with _watching() as seen:
        try:
            client = KafkaConsumer(*topics, **{**cfg.client_kwargs(), **CONSUMER_DEFAULTS, "group_id": group_id,
                                               **overrides})
        except _KafkaError as exc:
            raise _wrap(exc, "connecting a consumer", cfg, seen) from exc
    if cfg.lean_reader and not kafkafetch.install(client):
        log.debug("kafka-python's internals differ from 3.0's: its own record reader stays")
    return client


def admin(cfg: KafkaConfig) -> KafkaAdminClient:
    with _watching() as seen:
        try:
            # Admin work is interactive (CLI): say "unreachable" after 10 s, not 30+.
            return KafkaAdminClient(**{"bootstrap_timeout_ms": 10_000, **cfg.client_kwargs()})
        except _KafkaError as exc:
            raise _wrap(exc, "connecting an admin client", cfg, seen) from exc


def read_to_end(consumer: KafkaConsumer, handle: Callable[[TopicPartition, Any], None], *,
                timeout_s: float, what: str, partitions: Sequence[TopicPartition] | None = None,
                until: dict[TopicPartition, int] | None = None, poll_ms: int = 200) -> int:
    """Reads the assigned partitions from their positions up to the end offsets they have now
    (or up to ``until``: records at or past a partition's bound are not handed over).

    Every record goes to ``handle`` (tombstones too: ``value`` is None). The one behaviour every caller
    gets: the end is reached, or ``ReadTimeout`` is raised naming what is left. A partial result is never
    returned as if it were whole; the caller decides to retry, degrade (and say so) or fail. The records
    handed over before a timeout stay handed over, and the consumer's positions say where to go on.
    Returns the number of records read.
    """
    parts = list(partitions if partitions is not None else (until or consumer.assignment()))
    if not parts:
        return 0
    if until is not None:
        ends = dict(until)
    else:
        try:
            ends = consumer.end_offsets(parts)
        except _KafkaError as exc:
            raise ReadTimeout(f"reading {what}: end offsets unavailable: {type(exc).__name__}: {exc}") from exc
    todo = {tp for tp in parts if consumer.position(tp) < ends[tp]}
    deadline = time.monotonic() + timeout_s
    n = 0
    while todo:
        left = deadline - time.monotonic()
        if left <= 0:
            behind = {tp: ends[tp] - consumer.position(tp) for tp in todo}
            raise ReadTimeout(f"could not read {what} to its end within {timeout_s:g} s "
                              f"({sum(behind.values())} records left in {len(behind)} partitions)", behind)
        try:
            batch = consumer.poll(timeout_ms=max(1, min(poll_ms, int(left * 1000))))
        except _KafkaError as exc:
            log.debug("poll failed while reading to the end", extra={"what": what, "error": str(exc)})
            continue
        for tp, records in batch.items():
            end = ends.get(tp)
            for rec in records:
                if end is not None and rec.offset >= end:
                    break
                handle(tp, rec)
                n += 1
        todo = {tp for tp in todo if consumer.position(tp) < ends[tp]}
    return n


def read_topic(cfg: KafkaConfig, topic: str, handle: Callable[[TopicPartition, Any], None], *,
               timeout_s: float, missing_ok: bool = False) -> int:
    """A whole topic, from the beginning to its current end, through ``read_to_end``.

    A topic that does not exist raises ``KafkaError`` (or reads as empty with ``missing_ok``).
    """
    client = consumer(cfg, group_id=None)
    try:
        try:
            found = client.partitions_for_topic(topic)
        except _KafkaError as exc:
            raise _wrap(exc, f"reading {topic}", cfg) from exc
        if not found:
            if missing_ok:
                return 0
            raise KafkaError(f"topic {topic} does not exist; run `tocsin topics create`")
        parts = [TopicPartition(topic, q) for q in sorted(found)]
        client.assign(parts)
        client.seek_to_beginning(*parts)
        return read_to_end(client, handle, timeout_s=timeout_s, what=topic, partitions=parts)
    finally:
        client.close(autocommit=False)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def topic_specs(cfg: KafkaConfig) -> list[TopicSpec]:
    """What ``tocsin topics create`` makes: inputs with time retention, alerts compacted."""
    t = cfg.topics
    retention = {"retention.ms": str(t.retention_hours * 3600 * 1000)}
    # The alerts topic is the alert changelog: latest state per fingerprint is
    # kept forever, and compacted often enough for restarts to read little.
    compact = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "3600000"}
    spec = [
        (t.logs, retention), (t.metrics, retention), (t.health, retention),
        (t.alerts, compact), (t.control, retention), (t.deadletter, {"retention.ms": str(14 * 86400 * 1000)}),
        # A silence may last 90 days, longer than any time retention: its latest record (keyed by silence
        # id) is kept by compaction whatever retention.ms says (sinks/notify/silences.py).
        (t.silences, compact),
        (t.patterns, compact),  # new_pattern rules' seen set: latest sighting per (rule, service, pattern)
    ]
    return [TopicSpec(name, t.partitions, t.replication_factor, conf) for name, conf in spec]


def create_topics(cfg: KafkaConfig, specs: Iterable[TopicSpec] | None = None) -> dict[str, str]:
    """Creates missing topics (idempotent); returns ``{topic: "created" | "exists"}``."""
    specs = list(specs if specs is not None else topic_specs(cfg))
    client = admin(cfg)
    result: dict[str, str] = {}
    try:
        existing = set(client.list_topics())
        new = [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs)
               for s in specs if s.name not in existing]
        for s in specs:
            result[s.name] = "exists" if s.name in existing else "created"
        if new:
            # A concurrent creator winning the race is the same outcome.
            with contextlib.suppress(TopicAlreadyExistsError):
                client.create_topics(new, timeout_ms=30_000)
    except _KafkaError as exc:
        raise _wrap(exc, "creating topics", cfg) from exc
    finally:
        client.close()
    return result


def describe_topics(cfg: KafkaConfig) -> list[dict[str, Any]]:
    """Name, partitions and the non-default configs of every non-internal topic."""
    client = admin(cfg)
    try:
        names = sorted(n for n in client.list_topics() if not n.startswith("__"))
        described = {d["name"]: d for d in client.describe_topics(names)} if names else {}
        configs: dict[str, dict[str, str]] = {}
        if names:
            res = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
            # kafka-python 3: {"topic": {name: {config: {"value": ...}}}}
            for name, entries in res.get("topic", {}).items():
                configs[name] = {
                    key: entry["value"] for key, entry in entries.items()
                    if key in ("cleanup.policy", "retention.ms")
                }
    except _KafkaError as exc:
        raise _wrap(exc, "listing topics", cfg) from exc
    finally:
        client.close()
    return [
        {"name": n, "partitions": len(described.get(n, {}).get("partitions", [])), "configs": configs.get(n, {})}
        for n in names
    ]


def deadletter_headers(error: str, topic: str, partition: int, offset: int, stage: str) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record: why it failed and where it came from."""
    return [
        ("error", error.encode("utf-8", "replace")[:4096]),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        ("stage", stage.encode()),
    ]


async def wait_on_io_thread(consumer: KafkaConsumer, done: Callable[[], bool], timeout_s: float,
                            step_s: float = 0.05) -> bool:
    """Awaits ``done()`` inside an ``AsyncConsumerRebalanceListener`` without blocking kafka-python's IO loop.

    kafka-python 3 runs rebalance listeners on its IO thread, where a blocking
    call (``commit()``, a ``Future.result()``) stalls heartbeats or raises
    RuntimeError; awaiting the loop's own sleep lets heartbeats flow while a sink
    finishes the work it must hand over. Returns whether ``done()`` came true in time.
    """
    net = consumer._coordinator._net  # kafka-python 3.0's event loop (its sleep is a kernel event)
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        await net.sleep(step_s)
    return True


def broker_connected(consumer: Any) -> bool | None:
    """Whether a kafka-python client holds a live connection to any broker; None if it cannot tell.

    Reads the client's connection table (no request is sent): a stopped
    broker shows at once, a returning one as soon as the client reconnects,
    where a consumer's ``poll()`` just returns nothing either way.
    """
    try:
        client = consumer._client
        brokers = client.cluster.brokers()
        return any(client.connected(getattr(b, "node_id", getattr(b, "nodeId", None))) for b in brokers)
    except Exception:  # no consumer yet, or kafka-python internals moved: defer to the loop's own verdict
        return None
