"""One simulated shop service: a WSGI app behind the timing middleware, logging through
``tocsin.producers.logging``, driven by worker threads, its mode read from a control file.

Run as ``python -m tocsin.app.demo.shop --service checkout --log-dir DIR --control FILE``;
the demo starts three. Modes (the control file maps service -> mode):
``normal``, ``errors`` (a third of the requests fail with ERROR logs and 500s),
``slow`` (requests take 2.2-3 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tocsin.app.config import load_config
from tocsin.producers.logging import configure_logging
from tocsin.producers.middleware import KafkaMetricSink, WsgiTimingMiddleware

ROUTES = ("/", "/products/{id}", "/cart", "/api/orders/{id}", "/checkout")
WORKERS = 6
log = logging.getLogger("shop")


class Mode:
    """The service's current mode, re-read from the control file at most twice a second."""

    def __init__(self, service: str, control: Path) -> None:
        self.service, self.control = service, control
        self._value, self._read_at = "normal", 0.0

    def get(self) -> str:
        now = time.monotonic()
        if now - self._read_at > 0.5:
            self._read_at = now
            try:
                self._value = json.loads(self.control.read_text()).get(self.service, "normal")
            except (OSError, ValueError):
                self._value = "normal"
        return self._value


def shop_app(mode: Mode) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        current = mode.get()
        path = environ["PATH_INFO"]
        time.sleep(random.uniform(2.2, 3.0) if current == "slow" else random.uniform(0.02, 0.15))
        if current == "errors" and random.random() < 0.33:
            log.error("payment provider rejected the order", extra={"path": path, "provider": "acme-pay"})
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"error"]
        log.info("request handled", extra={"path": path, "method": environ["REQUEST_METHOD"]})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


def worker(app: Callable[..., Iterable[bytes]], stop: threading.Event) -> None:
    while not stop.is_set():
        route = random.choice(ROUTES)
        environ = {"REQUEST_METHOD": random.choice(("GET", "GET", "POST")), "PATH_INFO":
                   route.replace("{id}", str(random.randint(1, 5000))), "wsgi.input": None}
        body = app(environ, lambda status, headers: None)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close:
            close()
        stop.wait(random.uniform(0.05, 0.2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--service", required=True)
    parser.add_argument("--log-dir", required=True, type=Path)
    parser.add_argument("--control", required=True, type=Path)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    setup = configure_logging(args.service, log_dir=args.log_dir)
    sink = KafkaMetricSink(cfg.kafka)
    app = WsgiTimingMiddleware(shop_app(Mode(args.service, args.control)), sink, args.service)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=worker, args=(app, stop), daemon=True) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        stop.set()
    for t in threads:
        t.join(5)
    sink.close()
    setup.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
