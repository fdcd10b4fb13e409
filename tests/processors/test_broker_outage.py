"""The broker SIGKILLed under steady load and restarted on the same port and data dir: event time waits for it.

One host sends a metric every second through a producer with a long
delivery timeout, a second host of the same service (the same partition)
reconnects 15 s after the first (beyond the grace: its backlog lands behind
the first host's fresh samples), and the log shipper tails a growing file; the test's own
broker (never the shared one) is killed with SIGKILL for 60 s (3 minutes in
the slow variant) and started again. The producers deliver everything they
buffered; the processor must count none of it late, fire no absence alert for
a host that kept sending, say ``degraded: Kafka unreachable`` on
/health/detailed while it cannot fetch and ``healthy`` after, without a
restart.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import make_config, unique
from tests.kafkautil import consume_all
from tests.processors.test_http_e2e import AUTH, TOKEN, _own_broker, free_port, running_processor, wait_for
from tests.producers.shiputil import FAST_SHIP
from tocsin.core import kafka as kafka_api
from tocsin.core import localkafka
from tocsin.core.events import METRIC_EVENT, now_us
from tocsin.core.kafka import create_topics
from tocsin.producers.config import LogInputConfig, LogShipConfig
from tocsin.producers.logship import LogShipper
from tocsin.schemas.codec import default_codec

ABSENCE_RULE = {"name": "host_silent", "kind": "absence", "source": "metrics", "filter": {"name": "cpu_usage"},
                "group_by": ["service", "host"], "absent_for": "30s", "severity": "critical"}
LONG_DELIVERY_MS = 15 * 60 * 1000
"""The producer keeps retrying for 15 minutes: it delivers everything once the broker is back."""


class SteadyHost:
    """A host that sends one cpu_usage sample a second, whatever the broker does; counts its acknowledgements."""

    def __init__(self, cfg: Any, service: str, host: str) -> None:
        self.cfg, self.service, self.host = cfg, service, host
        self.producer = kafka_api.producer(cfg.kafka, delivery_timeout_ms=LONG_DELIVERY_MS)
        self.codec = default_codec()
        self.futures: list[Any] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="steady-host", daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            rec = {"event_id": f"{self.host}-{i}", "ts": now_us(), "service": self.service, "host": self.host,
                   "name": "cpu_usage", "value": 20.0 + i % 5, "unit": "percent", "labels": {}}
            self._emit(self.codec.encode(METRIC_EVENT, rec))
            i += 1
            self.stop.wait(1.0)

    def _emit(self, value: bytes) -> None:
        self.futures.append(self.producer.send(self.cfg.kafka.topics.metrics, key=self.service.encode(),
                                               value=value))

    def delivered(self) -> int:
        return sum(1 for f in list(self.futures) if f.is_done and f.succeeded())

    def failed(self) -> int:
        return sum(1 for f in list(self.futures) if f.is_done and f.failed())


class LateReconnectingHost(SteadyHost):
    """A SteadyHost whose producer gets the broker back later than the others: while ``spooling`` its samples
    wait here (as in a producer still in its reconnect backoff) and ``release()`` sends them, in order."""

    def __init__(self, cfg: Any, service: str, host: str) -> None:
        super().__init__(cfg, service, host)
        self.spooling = threading.Event()
        self.spool: list[bytes] = []
        self.sent = 0
        self._lock = threading.Lock()

    def _emit(self, value: bytes) -> None:
        with self._lock:
            self.spool.append(value)
            self.sent += 1
            if not self.spooling.is_set():
                self._flush_spool()

    def _flush_spool(self) -> None:
        for value in self.spool:
            super()._emit(value)
        self.spool.clear()

    def release(self) -> None:
        with self._lock:
            self.spooling.clear()
            self._flush_spool()


LATE_RECONNECT_S = 15.0
"""How much later than the first host the second one delivers its backlog: beyond the processor's 10 s grace."""


class GrowingFile:
    """Appends five JSON log lines a second (timestamped when written) to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path, self.written = path, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        path.touch()

    def _run(self) -> None:
        with open(self.path, "a") as f:
            while not self.stop.is_set():
                ts = datetime.now(UTC).isoformat()
                f.write("".join(json.dumps({"timestamp": ts, "level": "info", "logger": "shop",
                                            "message": f"line {self.written + k}"}) + "\n" for k in range(5)))
                f.flush()
                self.written += 5
                self.stop.wait(1.0)


def _detailed(url: str) -> dict[str, Any]:
    return requests.get(f"{url}/health/detailed", headers=AUTH, timeout=5).json()


def _kafka_check(doc: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in doc["health_checks"] if c["check"] == "kafka" and c["service"] == "outage-processor")


def _sigkill_broker(data_dir: Path) -> None:
    state = localkafka.read_state(data_dir)
    assert state is not None
    os.kill(state.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while localkafka.running(data_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    localkafka.down(data_dir)  # the pid is gone: only forgets the state file


def run_outage(clickhouse_url: str, tmp_path: Path, outage_s: float) -> dict[str, Any]:
    data_dir = tmp_path / "kafka"
    broker = _own_broker(data_dir)
    figures: dict[str, Any] = {"outage_s": outage_s}
    try:
        rules_file = tmp_path / "rules.yaml"
        rules_file.write_text(yaml.safe_dump({"rules": [ABSENCE_RULE]}))
        cfg = make_config(broker.bootstrap, clickhouse_url,
                          api={"token": TOKEN, "http_addr": f"127.0.0.1:{free_port()}",
                               "service_name": "outage-processor"},
                          processor={"group_id": unique("outage"), "rules_file": str(rules_file),
                                     "heartbeat_interval_s": 0})
        create_topics(cfg.kafka)
        service = unique("steady")
        log_file = tmp_path / "app.log"
        writer = GrowingFile(log_file)
        shipper = LogShipper(cfg, inputs=[LogInputConfig(paths=[str(log_file)], service=service)],
                             state_file=tmp_path / "ship-state.json", settings=LogShipConfig(**FAST_SHIP))
        host = SteadyHost(cfg, service, "web-1")
        late_host = LateReconnectingHost(cfg, service, "web-2")
        with running_processor(cfg) as proc:
            wait_for("healthy", lambda: _detailed(proc.url)["overall_status"] == "healthy", timeout_s=90)
            shipper.start()
            ship_thread = threading.Thread(target=shipper.run, name="shipper", daemon=True)
            ship_thread.start()
            writer.thread.start()
            host.thread.start()
            late_host.thread.start()
            try:
                metrics = cfg.kafka.topics.metrics
                wait_for("samples before the outage",
                         lambda: proc.view.snapshot().counters.processed.get(metrics, 0) >= 10, timeout_s=60)

                late_host.spooling.set()
                _sigkill_broker(data_dir)
                killed = time.monotonic()
                statuses: list[tuple[float, str, str | None]] = []
                while time.monotonic() - killed < outage_s:
                    doc = _detailed(proc.url)
                    statuses.append((time.monotonic() - killed, doc["overall_status"],
                                     _kafka_check(doc)["error_message"]))
                    time.sleep(1.0)
                localkafka.up(port=broker.port, data_dir=data_dir)
                restarted = time.monotonic()
                wait_for("healthy after the restart", lambda: _detailed(proc.url)["overall_status"] == "healthy",
                         timeout_s=180)
                figures["healthy_after_s"] = round(time.monotonic() - restarted, 1)
                wait_for("web-1's fresh samples processed", lambda: host.delivered() >= len(host.futures) - 2,
                         timeout_s=120)
                time.sleep(max(0.0, LATE_RECONNECT_S - (time.monotonic() - restarted)))
                late_host.release()  # its backlog lands behind web-1's fresh samples
                time.sleep(5)  # samples keep coming after the broker is back
            finally:
                late_host.release()
                for h in (host, late_host):
                    h.stop.set()
                writer.stop.set()
                for t in (host.thread, late_host.thread, writer.thread):
                    t.join(5)
            sent = len(host.futures) + late_host.sent
            wait_for("the producers to deliver their backlogs",
                     lambda: sum(h.delivered() + h.failed() for h in (host, late_host)) >= sent, timeout_s=180)
            wait_for("the shipper to ship every line", lambda: shipper.stats.acked >= writer.written, timeout_s=180)
            logs = cfg.kafka.topics.logs

            def all_consumed() -> bool:
                c = proc.view.snapshot().counters
                return c.consumed.get(metrics, 0) >= sent and c.consumed.get(logs, 0) >= 1

            wait_for("every sample consumed", all_consumed, timeout_s=120)
            wait_for("the lag to reach 0", lambda: not any(proc.view.snapshot().lag.values()), timeout_s=60)
            figures["all_processed_after_s"] = round(time.monotonic() - restarted, 1)
            shipper.close()
            ship_thread.join(15)
            snap = proc.view.refresh()
            alerts = [default_codec().decode(m.value)[1] for m in consume_all(cfg.kafka, cfg.kafka.topics.alerts,
                                                                               idle_s=2)]
        down = [s for s in statuses if s[0] > 15]  # the verdict is in within 15 s of the kill
        figures.update(
            samples_sent=sent, samples_delivered=host.delivered() + late_host.delivered(),
            samples_failed=host.failed() + late_host.failed(),
            lines_written=writer.written, late=snap.counters.late, reordered=snap.counters.reordered,
            samples_processed=snap.counters.processed.get(metrics, 0),
            absence_alerts=sum(1 for a in alerts if a["rule"] == "host_silent"),
            statuses_during_outage=sorted({s[1] for s in down}),
            kafka_errors_during_outage=sorted({str(s[2]) for s in down}),
            first_degraded_s=next((round(s[0], 1) for s in statuses if s[1] == "degraded"), None))
        print(f"\nbroker outage figures: {figures}")
        assert host.failed() == 0 and late_host.failed() == 0 and host.delivered() + late_host.delivered() == sent
        assert figures["late"] == 0, figures
        assert figures["reordered"] > 0, figures  # web-2's backlog did land beyond the grace: the case is tested
        assert figures["samples_processed"] == sent, figures
        assert figures["absence_alerts"] == 0, alerts
        assert figures["statuses_during_outage"] == ["degraded"], statuses
        assert all(e.startswith("Kafka unreachable") for e in figures["kafka_errors_during_outage"]), statuses
        return figures
    finally:
        localkafka.down(data_dir)


def test_a_60_s_sigkill_outage_counts_nothing_late_and_fires_no_absence(clickhouse_url, tmp_path):
    run_outage(clickhouse_url, tmp_path, 60.0)


@pytest.mark.slow
def test_a_3_minute_sigkill_outage_counts_nothing_late_and_fires_no_absence(clickhouse_url, tmp_path):
    run_outage(clickhouse_url, tmp_path, 180.0)
