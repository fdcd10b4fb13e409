"""OTLP/HTTP receiver for logs and metrics (``POST /v1/logs``, ``POST /v1/metrics``; protobuf or JSON, gzip).

Mapping: the resource's ``service.name`` is the event's service (``otlp.service`` or ``agents.service``
when absent), ``host.name`` its host (the peer's address when absent); the other resource attributes
(but ``telemetry.*``) and the record's or point's attributes become ``attrs``/``labels``, bounded by
``max_attributes``. A log's ``severity_number`` gives the level (1-8 DEBUG, 9-12 INFO, 13-16 WARNING,
17-20 ERROR, 21-24 CRITICAL; ``severity_text`` when the number is unset), its scope name the logger,
its body the message. Metrics as the scrape input does (``series``): gauges and non-monotonic sums as
they are, monotonic sums as ``<name>_per_s``, histograms (explicit and exponential) and summaries as
one MetricEvent per quantile with a ``quantile`` label plus ``<name>_count_per_s``. Before anything is
encoded, ``otlp.redact`` (``tocsin.producers.redact``) rewrites a log's message and attribute values
(the resource's included), a point's label values, and what is dead-lettered.

Answers, as the OTLP/HTTP specification's retry rules want them:

1. 401 without the configured bearer token; 429 + Retry-After when ``max_concurrent_requests`` are busy;
   413 over the body limits; 415 for another content type; 404 for another path.
2. 400 for a body that does not decode (not retried by SDKs): it is dead-lettered first, and if
   the dead letter cannot be acknowledged the answer is 503 instead, so nothing is dropped silently.
3. Every event (and the dead letter of every record that does not map) is published; only when
   Kafka acknowledged all of them the answer is 200 (``partial_success`` counts the rejected);
   otherwise 503 + Retry-After and the SDK sends the request again. Event ids derive from the
   request's bytes and the record's position, so a retried request keeps its ids downstream.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtoDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from tocsin.core.component import Component
from tocsin.core.errors import KafkaError
from tocsin.core.events import LOG_EVENT, METRIC_EVENT, now_us
from tocsin.producers.config import AgentSettings
from tocsin.producers.inputs.config import OtlpConfig
from tocsin.producers.inputs.publish import (
    AckedPublisher,
    InputCounters,
    Record,
    content_id,
    input_stats,
)
from tocsin.producers.inputs.series import LruTracker, histogram_quantile
from tocsin.producers.redact import redactor_of

log = logging.getLogger("tocsin.otlp")
MAX_MESSAGE_BYTES = 512 * 1024
"""A log body longer than this is cut (marked ``truncated``): the event must stay under the broker's 1 MB."""
_LEVELS = ((4, "DEBUG"), (8, "DEBUG"), (12, "INFO"), (16, "WARNING"), (20, "ERROR"), (24, "CRITICAL"))
_TEXT_LEVELS = {"TRACE": "DEBUG", "DEBUG": "DEBUG", "INFO": "INFO", "NOTICE": "INFO", "WARN": "WARNING",
                "WARNING": "WARNING", "ERROR": "ERROR", "FATAL": "CRITICAL", "CRITICAL": "CRITICAL"}
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_HEX_ID_KEYS = ("traceId", "spanId", "trace_id", "span_id")
_MONOTONIC_CUMULATIVE = 2  # AggregationTemporality.CUMULATIVE
_DELTA = 1


class BadRequest(Exception):
    """A request that cannot be read (the 400's reason)."""


def level_of(severity_number: int, severity_text: str) -> str:
    if severity_number > 0:
        return next((name for top, name in _LEVELS if severity_number <= top), "CRITICAL")
    return _TEXT_LEVELS.get(severity_text.strip().upper(), "INFO")


def any_value(v: Any) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON reader wants bytes as base64."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in _HEX_ID_KEYS and isinstance(v, str) and v:
                try:
                    v = base64.b64encode(bytes.fromhex(v)).decode()
                except ValueError:
                    raise BadRequest(f"{k} is not hex: {v[:40]!r}") from None
            out[k] = _hex_ids_to_base64(v)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(x) for x in node]
    return node


GZIP_MAGIC = b"\x1f\x8b"
SALVAGE_CHUNK = 512


class CorruptGzip(BadRequest):
    """A gzip body that stops decompressing part way; ``readable`` is what came out before the damage."""

    def __init__(self, message: str, readable: bytes) -> None:
        super().__init__(message)
        self.readable = readable


def _readable_prefix(body: bytes, limit: int) -> bytes:
    """What a damaged gzip stream yields before its damage (at most ``limit`` bytes), fed in small chunks."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    for i in range(0, len(body), SALVAGE_CHUNK):
        try:
            out += d.decompress(body[i:i + SALVAGE_CHUNK], limit + 1 - len(out))
        except zlib.error:
            break
        if len(out) > limit or d.unconsumed_tail:
            break
    return bytes(out[:limit])


def gunzip(body: bytes, limit: int) -> bytes:
    """The gzip body decompressed, refusing more than ``limit`` bytes (a zip bomb is a 413, not an OOM).

    A damaged stream raises ``CorruptGzip`` with its readable prefix: the dead letter keeps that, redacted,
    never the compressed bytes (which the redactor cannot read and anyone can decompress up to the damage).
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        readable = _readable_prefix(body, limit) if body.startswith(GZIP_MAGIC) else body
        raise CorruptGzip(f"gzip body does not decompress: {exc}", readable) from exc
    if len(out) > limit or d.unconsumed_tail:
        raise _TooLarge(f"decompressed body exceeds max_decompressed_bytes ({limit})")
    if not d.eof:
        raise CorruptGzip("gzip body is truncated (no end of stream)", out)
    return out


class _TooLarge(Exception):
    pass


class OtlpMapper:
    """Decodes export requests and maps them to event records (pure; no network)."""

    def __init__(self, settings: OtlpConfig, service: str, host: str = "") -> None:
        self.settings = settings
        self.service = settings.service or service
        self.tracker = LruTracker()
        self.counters = InputCounters()
        self.redactor = redactor_of(settings.redact)
        # Label values are redacted where they are published; the trackers keep the originals as keys, so
        # two series that differ only in a redacted value keep their own rates.
        self._shown = self.redactor.labels if self.redactor is not None else _same

    def decode(self, kind: str, body: bytes, content_type: str) -> Any:
        message = ExportLogsServiceRequest() if kind == "logs" else ExportMetricsServiceRequest()
        try:
            if content_type == _PROTOBUF:
                message.ParseFromString(body)
            else:
                data = json.loads(body)
                json_format.ParseDict(_hex_ids_to_base64(data), message, ignore_unknown_fields=True)
        except (ProtoDecodeError, json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise BadRequest(f"not an OTLP {kind} export request ({content_type}): {type(exc).__name__}: "
                             f"{str(exc)[:300]}") from exc
        return message

    # -- attributes ---------------------------------------------------------------------------------

    def _attrs(self, *groups: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        limit = self.settings.max_value_bytes
        dropped = 0
        for group in groups:
            for kv in group:
                if len(out) >= self.settings.max_attributes:
                    dropped += 1
                    continue
                text = _text(any_value(kv.value))
                if len(text) > limit:
                    text = text[:limit - 3] + "..."
                out[kv.key[:256]] = text
        if dropped:
            self.counters.add("dropped_attributes", dropped)
        return out

    def _resource(self, resource: Any, peer: str) -> tuple[str, str, list[Any]]:
        service, host, rest = self.service, peer, []
        for kv in resource.attributes:
            if kv.key == "service.name" and kv.value.string_value:
                service = kv.value.string_value[:256]
            elif kv.key == "host.name" and kv.value.string_value:
                host = kv.value.string_value[:256]
            elif not kv.key.startswith("telemetry."):
                rest.append(kv)
        return service, host, rest

    # -- logs -----------------------------------------------------------------------------------------

    def logs(self, req: Any, body_id: str, peer: str) -> list[dict[str, Any]]:
        out = []
        i = 0
        for rl in req.resource_logs:
            service, host, res_attrs = self._resource(rl.resource, peer)
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    i += 1
                    body = any_value(rec.body)
                    message = _text(body)
                    attrs = self._attrs(res_attrs, rec.attributes)
                    if len(message) > MAX_MESSAGE_BYTES:
                        message = message[:MAX_MESSAGE_BYTES]
                        attrs["truncated"] = "true"
                    if rec.span_id:
                        attrs["span_id"] = rec.span_id.hex()
                    if rec.severity_text:
                        attrs.setdefault("severity_text", rec.severity_text[:64])
                    ts_ns = rec.time_unix_nano or rec.observed_time_unix_nano
                    event = {
                        "event_id": f"{body_id[:24]}{i:08x}", "ts": ts_ns // 1000 if ts_ns else now_us(),
                        "service": service, "host": host, "level": level_of(rec.severity_number, rec.severity_text),
                        "logger": sl.scope.name[:256], "message": message,
                        "trace_id": rec.trace_id.hex() if rec.trace_id else None, "attrs": attrs,
                    }
                    if self.redactor is not None:
                        self.redactor.record(event)
                    out.append(event)
        return out

    # -- metrics ----------------------------------------------------------------------------------------

    def metrics(self, req: Any, body_id: str, peer: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """(MetricEvent records, [(what, reason)] for data that cannot be mapped)."""
        out: list[dict[str, Any]] = []
        refused: list[tuple[str, str]] = []
        seq = [0]
        shown = self._shown  # labels as published: redacted once per data point

        def emit(service: str, host: str, name: str, labels: dict[str, str], value: float, ts_ns: int,
                 unit: str) -> None:
            seq[0] += 1
            if not math.isfinite(value):
                return
            out.append({"event_id": f"{body_id[:24]}{seq[0]:08x}",
                        "ts": ts_ns // 1000 if ts_ns else now_us(), "service": service, "host": host,
                        "name": name[:256], "value": float(value), "unit": unit[:32], "labels": labels})

        for rm in req.resource_metrics:
            service, host, res_attrs = self._resource(rm.resource, peer)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    name, unit = metric.name, metric.unit
                    key_base = (service, host, name)
                    if kind == "gauge" or (kind == "sum" and not metric.sum.is_monotonic):
                        points = metric.gauge.data_points if kind == "gauge" else metric.sum.data_points
                        for p in points:
                            v = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                            emit(service, host, name, shown(self._attrs(res_attrs, p.attributes)), v,
                                 p.time_unix_nano, unit)
                    elif kind == "sum":
                        delta = metric.sum.aggregation_temporality == _DELTA
                        for p in metric.sum.data_points:
                            v = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                            labels = self._attrs(res_attrs, p.attributes)
                            rate = self._rate(key_base, labels, p, v, delta)
                            if rate is not None:
                                emit(service, host, f"{name}_per_s", shown(labels), rate, p.time_unix_nano, "per_s")
                    elif kind in ("histogram", "exponential_histogram"):
                        hist = getattr(metric, kind)
                        delta = hist.aggregation_temporality == _DELTA
                        for p in hist.data_points:
                            labels = self._attrs(res_attrs, p.attributes)
                            public = shown(labels)
                            try:
                                buckets = (_explicit_buckets(p) if kind == "histogram" else _exponential_buckets(p))
                            except ValueError as exc:
                                refused.append((f"{name}{public}", f"histogram {name}: {exc}"))
                                continue
                            key = (*key_base, tuple(sorted(labels.items())))
                            inc = buckets if delta else self.tracker.increase(key, p.time_unix_nano / 1e9, buckets)
                            if inc is not None:
                                for q in self.settings.quantiles:
                                    qv = histogram_quantile(q, inc)
                                    if qv is not None:
                                        emit(service, host, name, {**public, "quantile": f"{q:g}"}, qv,
                                             p.time_unix_nano, unit)
                            rate = self._rate((*key_base, "count"), labels, p, float(p.count), delta)
                            if rate is not None:
                                emit(service, host, f"{name}_count_per_s", public, rate, p.time_unix_nano, "per_s")
                    elif kind == "summary":
                        for p in metric.summary.data_points:
                            labels = shown(self._attrs(res_attrs, p.attributes))
                            for qv in p.quantile_values:
                                emit(service, host, name, {**labels, "quantile": f"{qv.quantile:g}"}, qv.value,
                                     p.time_unix_nano, unit)
                    else:
                        refused.append((name, f"metric {name!r} has no data"))
        return out, refused

    def _rate(self, key_base: tuple[Any, ...], labels: dict[str, str], p: Any, value: float, delta: bool
              ) -> float | None:
        if delta:
            dt = (p.time_unix_nano - p.start_time_unix_nano) / 1e9
            return value / dt if dt > 0 else None
        return self.tracker.rate((*key_base, tuple(sorted(labels.items()))), p.time_unix_nano / 1e9, value)


def _same(labels: dict[str, str]) -> dict[str, str]:
    return labels


def _explicit_buckets(p: Any) -> list[tuple[float, float]]:
    bounds = list(p.explicit_bounds)
    counts = list(p.bucket_counts)
    if not counts:
        return []
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(counts)} bucket counts for {len(bounds)} bounds (expected bounds + 1)")
    out, total = [], 0.0
    for bound, count in zip([*bounds, math.inf], counts, strict=True):
        total += count
        out.append((bound, total))
    return out


_MAX_EXP_BUCKETS = 4096


def _exponential_buckets(p: Any) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of the positive range; zero and negative counts sit at bound 0."""
    counts = list(p.positive.bucket_counts)
    if len(counts) > _MAX_EXP_BUCKETS:
        raise ValueError(f"{len(counts)} exponential buckets exceed {_MAX_EXP_BUCKETS}")
    base = 2.0 ** (2.0 ** -p.scale)
    total = float(p.zero_count) + float(sum(p.negative.bucket_counts))
    out = [(0.0, total)] if total else []
    for i, count in enumerate(counts):
        total += count
        out.append((base ** (p.positive.offset + i + 1), total))
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # a client that stops sending mid-request frees its thread after this

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("otlp request", extra={"line": format % args})

    def _reply(self, status: int, body: bytes = b"", ctype: str = _PROTOBUF, retry_after: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, status: int, message: str, ctype: str, retry_after: int | None = None) -> None:
        """An error answer with a google.rpc.Status-shaped body (as OTLP specifies), in the request's encoding."""
        if ctype == _JSON:
            body = json.dumps({"code": status, "message": message}).encode()
        else:
            from google.rpc.status_pb2 import Status

            body = Status(code=status, message=message).SerializeToString()
        self._reply(status, body, ctype if ctype in (_JSON, _PROTOBUF) else _PROTOBUF, retry_after)

    def do_POST(self) -> None:
        self.server.receiver.handle(self)

    def do_GET(self) -> None:
        self._status(405, "OTLP/HTTP takes POST /v1/logs and POST /v1/metrics", _JSON)


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them: more are closed at accept."""

    daemon_threads = True
    receiver: OtlpReceiver
    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.receiver.counters.add("connections_refused")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class OtlpReceiver(Component):
    """The OTLP/HTTP receiver as an agent component; ``url`` is where it listens once started."""

    name = "otlp"

    def __init__(self, cfg: AgentSettings) -> None:
        super().__init__()
        self.cfg = cfg
        self.settings = cfg.agents.otlp
        self.mapper = OtlpMapper(self.settings, cfg.agents.service)
        self.counters = self.mapper.counters
        self.publisher = AckedPublisher(cfg.kafka, "otlp", self.settings.ack_timeout_s, self.mapper.redactor)
        self._busy = threading.BoundedSemaphore(self.settings.max_concurrent_requests)
        self._server: _Server | None = None
        token = self.settings.bearer_token
        self._auth = f"Bearer {token.get_secret_value()}" if token is not None else None

    def stats_dict(self) -> dict[str, int]:
        """The receiver's counters and its replacements per pattern (``redacted_<name>``): the agent's metrics."""
        return input_stats(self.counters, self.mapper.redactor)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        if self._server is None:
            self._server = _Server((self.settings.host, self.settings.port), _Handler)
            self._server.receiver = self
            self._server.slots = threading.BoundedSemaphore(self.settings.max_connections)
            log.info("OTLP/HTTP receiver listening.", extra={"url": self.url})

    def run(self) -> None:
        self.start()
        assert self._server is not None
        thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="otlp-http", daemon=True)
        thread.start()
        while not self._stop.wait(1.0):
            self.mark_progress()
        self._server.shutdown()
        thread.join(10)

    def _release(self) -> None:
        if self._server is not None:
            self._server.server_close()
        self.publisher.close()

    # -- one request (numbered as in the module docstring) -----------------------------------------------

    def handle(self, h: _Handler) -> None:
        s = self.settings
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        path = h.path.split("?")[0]
        kind = {"/v1/logs": "logs", "/v1/metrics": "metrics"}.get(path)
        self.counters.add("requests")
        # 1. refusals that need no body
        if kind is None:
            h.close_connection = True
            return h._status(404, f"no OTLP endpoint at {path[:100]} (use /v1/logs or /v1/metrics)", ctype)
        if self._auth is not None and h.headers.get("Authorization") != self._auth:
            h.close_connection = True
            return h._status(401, "a bearer token is required", ctype)
        if ctype not in (_PROTOBUF, _JSON):
            h.close_connection = True
            return h._status(415, f"Content-Type must be {_PROTOBUF} or {_JSON}", _JSON)
        try:
            length = int(h.headers.get("Content-Length") or "-1")
        except ValueError:
            length = -1
        if length < 0:
            h.close_connection = True
            return h._status(411, "Content-Length is required", ctype)
        if length > s.max_body_bytes:
            h.close_connection = True
            self.counters.add("too_large")
            return h._status(413, f"body of {length} bytes exceeds max_body_bytes ({s.max_body_bytes})", ctype)
        if not self._busy.acquire(blocking=False):
            h.close_connection = True
            self.counters.add("throttled")
            return h._status(429, "receiver busy; retry later", ctype, s.retry_after_s)
        try:
            body = h.rfile.read(length)
            if len(body) < length:
                h.close_connection = True
                return None  # the client went away mid-body: nothing to answer
            status, answer, retry = self._process(kind, body, ctype,
                                                  (h.headers.get("Content-Encoding") or "").strip().lower(),
                                                  h.client_address[0])
        finally:
            self._busy.release()
        if status == 200:
            h._reply(200, answer, ctype)
        else:
            h._status(status, answer.decode(), ctype, retry)
        return None

    def _process(self, kind: str, raw: bytes, ctype: str, encoding: str, peer: str
                 ) -> tuple[int, bytes, int | None]:
        topics = self.cfg.kafka.topics
        pub = self.publisher
        source = f"otlp:/v1/{kind}"
        retry = self.settings.retry_after_s
        # 2. decode; a body that does not decode is dead-lettered (and acknowledged) before the 400
        body: bytes | None = None
        try:
            if encoding == "gzip":
                body = gunzip(raw, self.settings.max_decompressed_bytes)
            elif encoding in ("", "identity"):
                body = raw
            else:
                raise BadRequest(f"Content-Encoding {encoding[:40]!r} is not supported (gzip or none)")
            request = self.mapper.decode(kind, body, ctype)
        except _TooLarge as exc:
            self.counters.add("too_large")
            return 413, str(exc).encode(), None
        except BadRequest as exc:
            self.counters.add("bad_requests")
            try:
                # Decompressed where it could be: the dead letter is redacted, which a gzip stream cannot be.
                evidence = body if body is not None else exc.readable if isinstance(exc, CorruptGzip) else raw
                pub.publish([pub.dead(source, evidence, str(exc))])
            except KafkaError as kexc:
                return 503, f"bad request, and it could not be dead-lettered: {kexc}".encode(), retry
            return 400, str(exc).encode(), None
        # 3. map, publish, wait for the ack; ids are the request's hash plus the record's position
        body_id = content_id(kind, body)
        started = time.perf_counter()
        records: list[Record]
        if kind == "logs":
            events = self.mapper.logs(request, body_id, peer)
            records, rejected = pub.encode_all(topics.logs, LOG_EVENT, events, source)
        else:
            events, refused = self.mapper.metrics(request, body_id, peer)
            records, rejected = pub.encode_all(topics.metrics, METRIC_EVENT, events, source)
            records.extend(pub.dead(source, what.encode("utf-8", "replace"), why) for what, why in refused)
            rejected += len(refused)
        try:
            pub.publish(records)
        except KafkaError as exc:
            self.counters.add("unavailable")
            log.warning("OTLP export not acknowledged by Kafka; answered 503.", extra={"error": str(exc)})
            return 503, f"Kafka did not acknowledge: {exc}".encode(), retry
        self.counters.add(f"{kind}_events", len(events) - (rejected if kind == "logs" else 0))
        self.counters.add("rejected", rejected)
        self.counters.add("ack_ms_total", int((time.perf_counter() - started) * 1000))
        if kind == "logs":
            resp: Any = ExportLogsServiceResponse()
            if rejected:
                resp.partial_success.rejected_log_records = rejected
                resp.partial_success.error_message = "records that do not fit a LogEvent were dead-lettered"
        else:
            resp = ExportMetricsServiceResponse()
            if rejected:
                resp.partial_success.rejected_data_points = rejected
                resp.partial_success.error_message = "data points that cannot be mapped were dead-lettered"
        if ctype == _JSON:
            return 200, json_format.MessageToJson(resp, indent=None).encode(), None
        return 200, resp.SerializeToString(), None


__all__ = ["OtlpMapper", "OtlpReceiver", "gunzip", "level_of"]
