"""Network inputs: samples/s through a Prometheus scrape, log records/s through the OTLP/HTTP receiver,
lines/s through syslog over TCP (and UDP, with its loss), each counted only once Kafka acknowledged.

Compare with the file shipper's lines/s: ``python -m bench ship inputs``. Every input runs in this
process against the harness's broker; the peers are a local HTTP server with a generated exposition
(scrape), protobuf export requests of ``BATCH`` records posted with requests (OTLP, as an SDK's
batch processor sends them) and one TCP connection / a UDP socket writing RFC 3164 lines (syslog).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from bench.harness import BenchContext
from tocsin.app.config import TocsinConfig
from tocsin.core import kafka as kafka_api

DESCRIPTION = "scrape samples/s, OTLP log records/s, syslog TCP/UDP lines/s (acknowledged by Kafka)"
RATIOS: dict[str, tuple[str, str]] = {}
BATCH = 512


def _cfg(ctx: BenchContext, **agents: object) -> TocsinConfig:
    prefix = f"bench.inputs.{uuid.uuid4().hex[:8]}"
    topics = {n: f"{prefix}.{n}" for n in ("logs", "metrics", "health", "alerts", "control", "deadletter")}
    cfg = TocsinConfig.model_validate({"kafka": {"bootstrap_servers": ctx.bootstrap, "topics": {**topics,
                                                                                               "partitions": 3}},
                                       "agents": {"service": "shop", **agents}})
    kafka_api.create_topics(cfg.kafka)
    return cfg


def _exposition(series: int, step: int) -> bytes:
    lines = ["# TYPE http_requests_total counter"]
    lines += [f'http_requests_total{{route="/r{i}",code="200"}} {step * (i + 1)}' for i in range(series // 2)]
    lines.append("# TYPE queue_depth gauge")
    lines += [f'queue_depth{{queue="q{i}"}} {i % 50}' for i in range(series - series // 2)]
    return ("\n".join(lines) + "\n").encode()


def _bench_scrape(ctx: BenchContext) -> dict[str, float]:
    from tocsin.producers.inputs.scrape import ScrapeInput

    series = ctx.n(20_000, 4_000)
    rounds = ctx.n(10, 4)
    step = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            step[0] += 1
            body = _exposition(series, step[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = _cfg(ctx, scrape={"targets": [{"name": "bench", "url": f"http://127.0.0.1:{server.server_port}/m",
                                             "interval_s": 60, "timeout_s": 30}]})
        scrape = ScrapeInput(cfg)
        scraper = scrape.scrapers[0]
        scrape.deliver(scrape.scrape_target(scraper))  # baseline for the rates (and the connection)
        before = scrape.counters.get("samples")
        started = time.perf_counter()
        for _ in range(rounds):
            if not scrape.deliver(scrape.scrape_target(scraper)):
                raise RuntimeError("a scrape was not acknowledged")
        elapsed = time.perf_counter() - started
        samples = scrape.counters.get("samples") - before
        scrape.close()
    finally:
        server.shutdown()
        server.server_close()
    return {"scrape.samples_per_s": samples / elapsed, "scrape.ms_per_scrape": elapsed / rounds * 1000,
            "scrape.series": float(series)}


def _otlp_body(n: int, seq: int) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    attr = rl.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", "checkout"
    sl = rl.scope_logs.add()
    sl.scope.name = "shop.checkout"
    now = time.time_ns()
    for i in range(n):
        rec = sl.log_records.add()
        rec.time_unix_nano = now + i
        rec.severity_number = 9
        rec.body.string_value = f"order {seq}-{i} placed for customer 1234 total 99.90 EUR"
        a = rec.attributes.add()
        a.key, a.value.int_value = "order_id", seq * n + i
    return req.SerializeToString()


def _bench_otlp(ctx: BenchContext) -> dict[str, float]:
    from tests.producers.inpututil import running  # the same start/run/stop a test uses
    from tocsin.producers.inputs.otlp import OtlpReceiver

    requests_n = ctx.n(200, 40)
    cfg = _cfg(ctx, otlp={"enabled": True, "port": 0})
    bodies = [_otlp_body(BATCH, i) for i in range(requests_n)]
    with running(OtlpReceiver(cfg)) as rx, requests.Session() as http:
        url = f"{rx.url}/v1/logs"
        headers = {"Content-Type": "application/x-protobuf"}
        http.post(url, data=_otlp_body(10, -1), headers=headers, timeout=60).raise_for_status()
        started = time.perf_counter()
        for body in bodies:
            http.post(url, data=body, headers=headers, timeout=60).raise_for_status()
        elapsed = time.perf_counter() - started
    records = requests_n * BATCH
    return {"otlp.records_per_s": records / elapsed, "otlp.ms_per_request": elapsed / requests_n * 1000}


def _bench_syslog(ctx: BenchContext) -> dict[str, float]:
    from tests.producers.inpututil import running
    from tocsin.producers.inputs.syslog import SyslogInput

    n = ctx.n(100_000, 20_000)
    cfg = _cfg(ctx, syslog={"enabled": True, "udp_port": 0, "tcp_port": 0})
    line = b"<134>Oct  3 22:14:15 web-1 nginx[42]: 10.0.0.7 - - \"GET /api/orders/1234 HTTP/1.1\" 200 512 0.012\n"
    out: dict[str, float] = {}
    with running(SyslogInput(cfg)) as rx:
        started = time.perf_counter()
        with socket.create_connection(rx.tcp_address) as conn:
            for i in range(0, n, 1000):
                conn.sendall(line * min(1000, n - i))
        deadline = time.monotonic() + 300
        while rx.counters.get("published") < n and time.monotonic() < deadline:
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        if rx.counters.get("published") < n:
            raise RuntimeError(f"syslog TCP: {rx.counters.get('published')} of {n} acknowledged")
        out["syslog_tcp.lines_per_s"] = n / elapsed
        base = rx.counters.get("published")
        started = time.perf_counter()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for i in range(n):
                u.sendto(line, rx.udp_address)
                if i % 200 == 199:
                    time.sleep(0.001)  # a sender that does not flood the socket buffer in one burst
        deadline = time.monotonic() + 60
        last, still = -1, 0
        while time.monotonic() < deadline and still < 10:
            now = rx.counters.get("published")
            still = still + 1 if now == last else 0
            last = now
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        got = rx.counters.get("published") - base
        out["syslog_udp.lines_per_s"] = got / elapsed
        out["syslog_udp.loss_ratio"] = 1 - got / n
    return out


def run(ctx: BenchContext) -> dict[str, float]:
    return {**_bench_scrape(ctx), **_bench_otlp(ctx), **_bench_syslog(ctx)}
