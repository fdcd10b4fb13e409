"""The metrics agent: system resources sampled with psutil, published as MetricEvents.

Names follow the seed's alert thresholds where it has one (``cpu_usage``,
``memory_usage``, ``disk_usage`` in percent) and say their unit otherwise:
``swap_usage`` (percent), ``disk_read_bytes_per_s``/``disk_write_bytes_per_s``
and ``net_recv_bytes_per_s``/``net_sent_bytes_per_s`` (rates since the
previous sample), ``load_1m``/``load_5m``/``load_15m``, ``process_count``, and
per watched process ``process_cpu_usage`` (percent of one core) and
``process_rss_bytes``. A sample costs a few milliseconds of CPU, so the
default 10 s interval stays far under 1 % of a core (``python -m bench
agent_overhead`` measures it).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import psutil

from tocsin.core import kafka as kafka_api
from tocsin.core.component import Component
from tocsin.core.errors import KafkaError
from tocsin.core.events import HOSTNAME, METRIC_EVENT, new_event_id, now_us
from tocsin.producers.config import AgentSettings, MetricsAgentConfig, ProcessWatchConfig

log = logging.getLogger("tocsin.metrics")
# Pseudo filesystems never worth a disk_usage series.
_SKIP_FSTYPES = {"squashfs", "tmpfs", "devtmpfs", "overlay", "proc", "sysfs", "cgroup", "cgroup2", "nsfs", ""}


def _watch_list(cfg: MetricsAgentConfig) -> list[ProcessWatchConfig]:
    return [p if isinstance(p, ProcessWatchConfig) else ProcessWatchConfig(name=p) for p in cfg.processes]


class MetricsSampler:
    """Takes one sample per ``sample()`` call; rates and CPU are relative to the previous call."""

    def __init__(self, cfg: MetricsAgentConfig, service: str) -> None:
        self.cfg = cfg
        self.service = service
        self.watch = _watch_list(cfg)
        self._last_t: float | None = None
        self._last_disk: Any = None
        self._last_net: Any = None
        self._procs: dict[int, psutil.Process] = {}
        psutil.cpu_percent(None)  # primes the system CPU counter

    def _event(self, ts: int, name: str, value: float, unit: str, labels: dict[str, str] | None = None
               ) -> dict[str, Any]:
        return {"event_id": new_event_id(), "ts": ts, "service": self.service, "host": HOSTNAME, "name": name,
                "value": float(value), "unit": unit, "labels": labels or {}}

    def _mounts(self) -> list[str]:
        if self.cfg.mounts:
            return list(self.cfg.mounts)
        seen: set[str] = set()
        out = []
        for part in psutil.disk_partitions(all=False):
            if part.fstype in _SKIP_FSTYPES or part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            out.append(part.mountpoint)
        return out or ["/"]

    def sample(self) -> list[dict[str, Any]]:
        ts = now_us()
        now = time.monotonic()
        ev = self._event
        out = [ev(ts, "cpu_usage", psutil.cpu_percent(None), "percent")]
        vm = psutil.virtual_memory()
        out.append(ev(ts, "memory_usage", vm.percent, "percent"))
        out.append(ev(ts, "memory_available_bytes", vm.available, "bytes"))
        out.append(ev(ts, "swap_usage", psutil.swap_memory().percent, "percent"))
        for mount in self._mounts():
            try:
                out.append(ev(ts, "disk_usage", psutil.disk_usage(mount).percent, "percent", {"mount": mount}))
            except OSError as exc:
                log.warning("Cannot read disk usage.", extra={"mount": mount, "error": str(exc)})
        disk = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        if self._last_t is not None:
            dt = max(now - self._last_t, 1e-6)
            if disk is not None and self._last_disk is not None:
                out.append(ev(ts, "disk_read_bytes_per_s", max(0, disk.read_bytes - self._last_disk.read_bytes) / dt,
                              "bytes_per_s"))
                out.append(ev(ts, "disk_write_bytes_per_s",
                              max(0, disk.write_bytes - self._last_disk.write_bytes) / dt, "bytes_per_s"))
            if net is not None and self._last_net is not None:
                out.append(ev(ts, "net_recv_bytes_per_s", max(0, net.bytes_recv - self._last_net.bytes_recv) / dt,
                              "bytes_per_s"))
                out.append(ev(ts, "net_sent_bytes_per_s", max(0, net.bytes_sent - self._last_net.bytes_sent) / dt,
                              "bytes_per_s"))
        self._last_t, self._last_disk, self._last_net = now, disk, net
        for minutes, value in zip((1, 5, 15), os.getloadavg(), strict=True):
            out.append(ev(ts, f"load_{minutes}m", value, "count"))
        out.append(ev(ts, "process_count", len(psutil.pids()), "count"))
        if self.watch:
            out.extend(self._process_samples(ts))
        return out

    def _process_samples(self, ts: int) -> list[dict[str, Any]]:
        totals: dict[str, list[float]] = {w.name: [0.0, 0.0, 0] for w in self.watch}  # type: ignore[misc]
        alive: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["name", "cmdline"]):
            info = proc.info
            for w in self.watch:
                if w.match is not None:
                    hit = w.match in " ".join(info.get("cmdline") or [])
                else:
                    hit = info.get("name") == w.name
                if not hit:
                    continue
                # Reuse Process objects: cpu_percent() is relative to the previous call on the same object.
                known = self._procs.get(proc.pid, proc)
                alive[proc.pid] = known
                try:
                    cpu = known.cpu_percent(None)
                    rss = known.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                acc = totals[w.name]
                acc[0] += cpu
                acc[1] += rss
                acc[2] += 1
        self._procs = alive
        out = []
        for name, (cpu, rss, count) in totals.items():
            labels = {"process": name}
            out.append(self._event(ts, "process_cpu_usage", cpu, "percent", labels))
            out.append(self._event(ts, "process_rss_bytes", rss, "bytes", labels))
            out.append(self._event(ts, "process_instances", count, "count", labels))
        return out


def sample_once(cfg: AgentSettings, warmup_s: float = 0.5) -> list[dict[str, Any]]:
    """One sample with rates over ``warmup_s`` (for ``tocsin agent metrics --once``)."""
    sampler = MetricsSampler(cfg.agents.metrics, cfg.agents.service)
    sampler.sample()
    time.sleep(warmup_s)
    return sampler.sample()


class MetricsAgent(Component):
    """Samples every ``interval_s`` and produces MetricEvents keyed by service to the metrics topic."""

    name = "metrics"

    def __init__(self, cfg: AgentSettings, interval_s: float | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.interval_s = interval_s or cfg.agents.metrics.interval_s
        self.sampler: MetricsSampler | None = None
        self._producer: Any = None
        self.samples = 0
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        if self.sampler is None:
            self.sampler = MetricsSampler(self.cfg.agents.metrics, self.cfg.agents.service)

    def _ensure_producer(self) -> bool:
        if self._producer is not None:
            return True
        try:
            self._producer = kafka_api.producer(self.cfg.kafka, max_block_ms=5000, bootstrap_timeout_ms=5000,
                                                reconnect_backoff_max_ms=2000)
            return True
        except KafkaError as exc:
            log.warning("Kafka unreachable; this sample is skipped.", extra={"error": str(exc)})
            return False

    @property
    def stall_after_s(self) -> float:
        return max(self.STALL_AFTER_S, 3 * self.interval_s)  # one turn a interval: three missed is stuck

    def run(self) -> None:
        from tocsin.schemas.codec import default_codec

        self.start()
        assert self.sampler is not None
        codec = default_codec()
        topic = self.cfg.kafka.topics.metrics
        key = self.cfg.agents.service.encode()
        next_at = time.monotonic()
        while not self.stopping:
            self.mark_progress()
            events = self.sampler.sample()
            self.samples += 1
            if self._ensure_producer():
                for event in events:
                    try:
                        self._producer.send(topic, key=key, value=codec.encode(METRIC_EVENT, event))
                        self.sent += 1
                    except Exception as exc:  # keep sampling whatever one send did
                        self.failed += 1
                        log.warning("Producing a metric failed.", extra={"error": f"{type(exc).__name__}: {exc}"})
            else:
                self.failed += len(events)
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (suspended host): skip, do not burst
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def _release(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception as exc:
                log.warning("Closing the metrics producer failed.", extra={"error": str(exc)})
