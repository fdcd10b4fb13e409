"""Request and query timing for applications: WSGI and ASGI middleware, and a query timer.

Each request yields one ``api_response_time`` MetricEvent (unit ms, labels
``route``, ``method``, ``status``) and each timed query one
``database_query_time`` (unit ms, labels ``query``, ``db``): the metrics the
processor's default rules read with the seed's thresholds (500/2000 ms and
100/500 ms). The route label is a template (``/orders/{id}``), never the raw
path, so series stay bounded: the framework's route when it knows one
(Starlette/FastAPI ``scope["route"]``, or a ``route_of`` callable), else
``tocsin.producers.routes`` templating capped by ``max_routes``.

Emitting goes through a ``MetricSink``: ``KafkaMetricSink`` queues without
blocking (drops counted); ``ListMetricSink`` keeps them in memory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol

from tocsin.core.config import KafkaConfig
from tocsin.core.events import HOSTNAME, METRIC_EVENT, new_event_id, now_us
from tocsin.producers.routes import RouteLimiter

API_RESPONSE_TIME = "api_response_time"
DATABASE_QUERY_TIME = "database_query_time"


class MetricSink(Protocol):
    def emit(self, record: dict[str, Any]) -> bool: ...


def metric_event(service: str, name: str, value_ms: float, labels: dict[str, str]) -> dict[str, Any]:
    return {"event_id": new_event_id(), "ts": now_us(), "service": service, "host": HOSTNAME, "name": name,
            "value": float(value_ms), "unit": "ms", "labels": labels}


class ListMetricSink:
    """Keeps emitted events in a bounded list (tests, or an app that reports them itself)."""

    def __init__(self, maxlen: int = 100_000) -> None:
        self.events: list[dict[str, Any]] = []
        self.maxlen = maxlen
        self.dropped = 0

    def emit(self, record: dict[str, Any]) -> bool:
        if len(self.events) >= self.maxlen:
            self.dropped += 1
            return False
        self.events.append(record)
        return True


class KafkaMetricSink:
    """MetricEvents to the metrics topic through a bounded non-blocking queue."""

    def __init__(self, kafka: KafkaConfig, maxsize: int = 10_000) -> None:
        from tocsin.producers.emitter import EventQueue

        self.queue = EventQueue(kafka, kafka.topics.metrics, METRIC_EVENT, maxsize=maxsize)

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def emit(self, record: dict[str, Any]) -> bool:
        return self.queue.emit(record)

    def close(self) -> None:
        self.queue.close()


class _Recorder:
    def __init__(self, sink: MetricSink, service: str, max_routes: int) -> None:
        self.sink = sink
        self.service = service
        self.routes = RouteLimiter(max_routes)

    def record(self, route: str, method: str, status: int, started: float) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        labels = {"route": route, "method": method, "status": str(status)}
        self.sink.emit(metric_event(self.service, API_RESPONSE_TIME, elapsed_ms, labels))


class WsgiTimingMiddleware:
    """Times WSGI requests until the response body is closed (the whole response, as a client sees it).

    ``route_of(environ)`` may return the route template; Flask users can pass
    ``lambda env: env.get("tocsin.route")`` and set it from ``request.url_rule``.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], sink: MetricSink, service: str,
                 route_of: Callable[[dict[str, Any]], str | None] | None = None, max_routes: int = 500) -> None:
        self.app = app
        self.route_of = route_of
        self._rec = _Recorder(sink, service, max_routes)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        status_box = [500]

        def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            with contextlib.suppress(ValueError, IndexError):
                status_box[0] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        def finish() -> None:
            route = (self.route_of(environ) if self.route_of else None) or self._rec.routes(
                environ.get("PATH_INFO") or "/")
            self._rec.record(route, environ.get("REQUEST_METHOD", "GET"), status_box[0], started)

        try:
            body = self.app(environ, _start_response)
        except Exception:
            status_box[0] = 500
            finish()
            raise
        return _ClosingIterable(body, finish)


class _ClosingIterable:
    """Passes the body through and calls ``on_close`` once when the server closes it."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._on_close()


class AsgiTimingMiddleware:
    """Times ASGI HTTP requests to the end of the response; other scopes pass through untimed."""

    def __init__(self, app: Callable[..., Awaitable[None]], sink: MetricSink, service: str,
                 max_routes: int = 500) -> None:
        self.app = app
        self._rec = _Recorder(sink, service, max_routes)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_box = [500]

        async def _send(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status_box[0] = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            self._rec.record(self._route(scope), scope.get("method", "GET"), status_box[0], started)

    def _route(self, scope: dict[str, Any]) -> str:
        route = scope.get("route")  # set by Starlette's router once a route matched
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(template, str) and template:
            return template
        return self._rec.routes(scope.get("path") or "/")


class query_timer(contextlib.ContextDecorator):
    """Times a database query: ``with query_timer("load_order", sink, "shop"):`` or as a decorator.

    The query name is a label, so it must be a fixed name, not SQL text with values.
    """

    def __init__(self, query: str, sink: MetricSink, service: str, db: str = "default") -> None:
        self.labels = {"query": query, "db": db}
        self.sink = sink
        self.service = service
        self._started: list[float] = []

    def __enter__(self) -> query_timer:
        self._started.append(time.perf_counter())  # a stack: the decorator may be re-entered
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed_ms = (time.perf_counter() - self._started.pop()) * 1000
        labels = dict(self.labels)
        if exc[0] is not None:
            labels["error"] = getattr(exc[0], "__name__", "error")
        self.sink.emit(metric_event(self.service, DATABASE_QUERY_TIME, elapsed_ms, labels))
