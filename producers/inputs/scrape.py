"""Prometheus scrape: targets' text exposition or OpenMetrics, parsed with prometheus_client's parsers, as
MetricEvents, plus an ``up``-style HealthEvent per scrape.

What is published for each sample after relabelling (``series`` has the why):

* gauge, untyped, info, stateset: the value, name as exposed;
* counter: ``<name without _total>_per_s``, the per-second rate since the previous scrape (none on the first);
* histogram: ``<name>`` with a ``quantile`` label per configured quantile, from the buckets' increase
  since the previous scrape, and ``<name>_count_per_s``; an interval without observations publishes no quantile;
* summary: its quantiles as they are, ``<name>_count_per_s`` and ``<name>_sum_per_s``.

Label values are redacted (``scrape.redact``, ``tocsin.producers.redact``) before anything is encoded,
dead-lettered samples and expositions included. Every sample carries ``job`` (the target's name) and
``instance`` (host:port of its URL). Each scrape
also publishes ``up`` (1 or 0) and a HealthEvent ``scrape:<job>``: healthy, or unhealthy with the
reason (refused, timeout, HTTP status, bad exposition, limits). An absence rule on
``{check: "scrape:<job>", status: healthy}`` alerts when a target stops answering.

Delivery: a scrape's events are published with ``acks=all`` and the scrape waits for the ack; when
Kafka does not acknowledge, they wait (bounded by ``max_pending_events``) and go first next turn.
A malformed exposition or a sample over the limits is dead-lettered with the reason and counted.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import urlparse

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tocsin.core.component import Component
from tocsin.core.errors import KafkaError
from tocsin.core.events import HEALTH_EVENT, METRIC_EVENT, new_event_id
from tocsin.producers.config import AgentSettings
from tocsin.producers.inputs.config import RelabelRule, ScrapeConfig, ScrapeTargetConfig
from tocsin.producers.inputs.publish import (
    AckedPublisher,
    InputCounters,
    Record,
    content_id,
    input_stats,
)
from tocsin.producers.inputs.series import CumulativeTracker, histogram_quantile
from tocsin.producers.redact import Redactor, redactor_of

log = logging.getLogger("tocsin.scrape")
ACCEPT = "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
"""What Prometheus 2.x asks for: OpenMetrics first, the classic text format otherwise."""
_CHUNK = 64 * 1024
_ID_KEY = os.urandom(16)
"""Keys the digest of redacted label values in an event id: distinct series keep distinct ids, and the id
cannot be checked against guessed values (a plain hash of an e-mail address can)."""


class ScrapeError(Exception):
    """Why a scrape failed (the HealthEvent's error)."""


class _Relabeller:
    """The target's relabel rules compiled; ``apply`` returns the (name, labels) to keep or None."""

    def __init__(self, rules: list[RelabelRule]) -> None:
        self.rules = [(r, re.compile(r.name) if r.name is not None else None,
                       {k: re.compile(v) for k, v in r.labels.items()}) for r in rules]

    @staticmethod
    def _matches(name_re: re.Pattern[str] | None, label_res: dict[str, re.Pattern[str]], name: str,
                 labels: dict[str, str]) -> bool:
        if name_re is not None and not name_re.fullmatch(name):
            return False
        return all(rx.fullmatch(labels.get(k, "")) for k, rx in label_res.items())

    def apply(self, name: str, labels: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        for rule, name_re, label_res in self.rules:
            if rule.action == "keep":
                if not self._matches(name_re, label_res, name, labels):
                    return None
            elif rule.action == "drop":
                if self._matches(name_re, label_res, name, labels):
                    return None
            elif rule.action == "rename":
                if self._matches(name_re, label_res, name, labels):
                    name = rule.to  # type: ignore[assignment]
            elif rule.action == "rename_label":
                if rule.label in labels:
                    labels = dict(labels)
                    labels[rule.to] = labels.pop(rule.label)  # type: ignore[index,arg-type]
            elif rule.action == "drop_label" and rule.label in labels:
                labels = {k: v for k, v in labels.items() if k != rule.label}
        return name, labels


class TargetScraper:
    """Scrapes one target and converts what it exposes; ``scrape_once`` is one turn (no Kafka)."""

    def __init__(self, target: ScrapeTargetConfig, settings: ScrapeConfig, service: str,
                 session: requests.Session | None = None, redactor: Redactor | None = None) -> None:
        self.target = target
        self.redactor = redactor
        self.settings = settings
        self.service = target.service or service
        url = urlparse(target.url)
        self.instance = url.netloc.rsplit("@", 1)[-1]
        self.host = url.hostname or self.instance
        self.relabel = _Relabeller(target.relabel)
        self.tracker = CumulativeTracker()
        self.session = session or requests.Session()
        if target.bearer_token is not None:
            self.session.headers["Authorization"] = f"Bearer {target.bearer_token.get_secret_value()}"
        elif target.basic_auth is not None:
            self.session.auth = (target.basic_auth.username, target.basic_auth.password.get_secret_value())
        self.session.headers["Accept"] = ACCEPT
        self.session.headers["X-Prometheus-Scrape-Timeout-Seconds"] = f"{target.timeout_s:g}"

    # -- fetching -------------------------------------------------------------------------------

    def fetch(self) -> tuple[str, str]:
        """(body, content type); ``ScrapeError`` with the reason when the target does not answer well."""
        limit = self.settings.max_body_bytes
        deadline = time.monotonic() + self.target.timeout_s
        try:
            with self.session.get(self.target.url, timeout=self.target.timeout_s, stream=True) as resp:
                if resp.status_code != 200:
                    raise ScrapeError(f"HTTP {resp.status_code} from {self.target.url}")
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise ScrapeError(f"exposition larger than max_body_bytes ({limit})")
                    if time.monotonic() > deadline:  # a trickling target: the timeout bounds the whole body
                        raise ScrapeError(f"body not complete within {self.target.timeout_s:g} s")
                    chunks.append(chunk)
                ctype = resp.headers.get("Content-Type", "")
        except requests.RequestException as exc:
            raise ScrapeError(f"{type(exc).__name__}: {exc}") from exc
        body = b"".join(chunks)
        try:
            return body.decode("utf-8"), ctype
        except UnicodeDecodeError as exc:
            raise _BadExposition(f"exposition is not UTF-8: {exc}", body) from exc

    # -- converting -----------------------------------------------------------------------------

    def parse(self, body: str, ctype: str) -> list[Any]:
        """Metric families; ``_BadExposition`` with the parser's reason when the body is malformed."""
        openmetrics = ctype.split(";")[0].strip().lower() == "application/openmetrics-text"
        try:
            families = list((parse_openmetrics if openmetrics else parse_text)(body))
        except Exception as exc:  # the parsers raise ValueError, IndexError, KeyError... on bad input
            kind = "OpenMetrics" if openmetrics else "Prometheus text"
            raise _BadExposition(f"malformed {kind} exposition: {type(exc).__name__}: {exc}",
                                 body.encode()) from exc
        n = sum(len(f.samples) for f in families)
        if n > self.settings.max_samples:
            raise _BadExposition(f"{n} samples exceed max_samples ({self.settings.max_samples})", body.encode())
        return families

    def convert(self, families: list[Any], ts_s: float) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """(MetricEvent records, [(sample text, reason)] refused samples) for one scrape at ``ts_s``."""
        out: list[dict[str, Any]] = []
        refused: list[tuple[str, str]] = []
        self.tracker.begin()
        for fam in families:
            try:
                if fam.type == "counter":
                    self._counter(fam, ts_s, out, refused)
                elif fam.type in ("histogram", "gaugehistogram"):
                    self._histogram(fam, ts_s, out, refused)
                elif fam.type == "summary":
                    self._summary(fam, ts_s, out, refused)
                else:
                    for s in fam.samples:
                        self._emit(s.name, s.labels, s.value, s.timestamp, ts_s, "", out, refused)
            except Exception as exc:  # one odd family never fails the others
                refused.append((fam.name, f"cannot convert {fam.type} {fam.name}: {type(exc).__name__}: {exc}"))
        self.tracker.end()
        return out, refused

    def _series_key(self, name: str, labels: dict[str, str]) -> tuple[Any, ...]:
        return (name, tuple(sorted(labels.items())))

    def _counter(self, fam: Any, now: float, out: list[dict[str, Any]], refused: list[tuple[str, str]]) -> None:
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            t = _ts(s.timestamp) or now
            rate = self.tracker.rate(self._series_key(s.name, s.labels), t, s.value)
            if rate is not None:
                self._emit(f"{s.name.removesuffix('_total')}_per_s", s.labels, rate, s.timestamp, now, "per_s",
                           out, refused)

    def _histogram(self, fam: Any, now: float, out: list[dict[str, Any]], refused: list[tuple[str, str]]) -> None:
        groups: dict[tuple[Any, ...], dict[str, Any]] = {}
        for s in fam.samples:
            base = {k: v for k, v in s.labels.items() if k != "le"}
            g = groups.setdefault(tuple(sorted(base.items())), {"labels": base, "buckets": [], "count": None,
                                                                "ts": s.timestamp})
            if s.name.endswith("_bucket") and "le" in s.labels:
                g["buckets"].append((float(s.labels["le"]), float(s.value)))
            elif s.name.endswith(("_count", "_gcount")):
                g["count"] = s.value
        for key, g in groups.items():
            t = _ts(g["ts"]) or now
            buckets = sorted(g["buckets"])
            inc = self.tracker.increase((fam.name, key), t, buckets) if buckets else None
            if inc is not None:
                for q in self.settings.quantiles:
                    value = histogram_quantile(q, inc)
                    if value is not None:
                        self._emit(fam.name, {**g["labels"], "quantile": f"{q:g}"}, value, g["ts"], now, "",
                                   out, refused)
            if g["count"] is not None and fam.type == "histogram":
                rate = self.tracker.rate((fam.name + "_count", key), t, g["count"])
                if rate is not None:
                    self._emit(f"{fam.name}_count_per_s", g["labels"], rate, g["ts"], now, "per_s", out, refused)

    def _summary(self, fam: Any, now: float, out: list[dict[str, Any]], refused: list[tuple[str, str]]) -> None:
        for s in fam.samples:
            if s.name.endswith(("_count", "_sum")):
                t = _ts(s.timestamp) or now
                rate = self.tracker.rate(self._series_key(s.name, s.labels), t, s.value)
                if rate is not None:
                    self._emit(f"{s.name}_per_s", s.labels, rate, s.timestamp, now, "per_s", out, refused)
            elif not s.name.endswith("_created"):
                self._emit(s.name, s.labels, s.value, s.timestamp, now, "", out, refused)

    def _emit(self, name: str, labels: dict[str, str], value: float, sample_ts: Any, now: float, unit: str,
              out: list[dict[str, Any]], refused: list[tuple[str, str]]) -> None:
        if not math.isfinite(value):
            return  # NaN marks "no value" in the exposition (stale, empty summary): nothing to publish
        kept = self.relabel.apply(name, dict(labels))
        if kept is None:
            return
        name, labels = kept
        private = ""
        if self.redactor is not None:  # the sample's own label values; the target's are the site's config
            public = self.redactor.labels(labels)
            if public is not labels:
                private = hashlib.blake2b(repr(sorted(labels.items())).encode(), key=_ID_KEY,
                                          digest_size=16).hexdigest()
                labels = public
        labels = {**labels, **self.target.labels, "job": self.target.name, "instance": self.instance}
        if len(labels) > self.settings.max_labels:
            refused.append((f"{name}{labels}", f"{len(labels)} labels exceed max_labels ({self.settings.max_labels})"))
            return
        limit = self.settings.max_label_value_bytes
        if any(len(v) > limit for v in labels.values()):
            refused.append((f"{name}{labels}", f"a label value is longer than max_label_value_bytes ({limit})"))
            return
        ts_us = int((_ts(sample_ts) or now) * 1_000_000)
        out.append({"event_id": content_id("scrape", self.target.name, name, sorted(labels.items()), ts_us, private),
                    "ts": ts_us, "service": self.service, "host": self.host, "name": name, "value": float(value),
                    "unit": unit, "labels": labels})

    def health(self, ts_s: float, ok: bool, elapsed_ms: float, samples: int, error: str | None) -> dict[str, Any]:
        return {"event_id": new_event_id(), "ts": int(ts_s * 1_000_000), "service": self.service, "host": self.host,
                "check": f"scrape:{self.target.name}", "status": "healthy" if ok else "unhealthy",
                "response_time_ms": round(elapsed_ms, 3),
                "details": {"url": self.target.url, "job": self.target.name, "instance": self.instance,
                            "samples": str(samples)},
                "error": error}

    def up(self, ts_s: float, ok: bool) -> dict[str, Any]:
        ts_us = int(ts_s * 1_000_000)
        labels = {**self.target.labels, "job": self.target.name, "instance": self.instance}
        return {"event_id": content_id("scrape-up", self.target.name, ts_us), "ts": ts_us, "service": self.service,
                "host": self.host, "name": "up", "value": 1.0 if ok else 0.0, "unit": "", "labels": labels}


class _BadExposition(ScrapeError):
    def __init__(self, reason: str, body: bytes) -> None:
        super().__init__(reason)
        self.body = body


def _ts(sample_ts: Any) -> float | None:
    """A sample's own timestamp in seconds (prometheus_client gives float seconds or a Timestamp)."""
    if sample_ts is None:
        return None
    return float(sample_ts)


class ScrapeInput(Component):
    """Scrapes every configured target on its interval, one thread per target."""

    name = "scrape"

    def __init__(self, cfg: AgentSettings) -> None:
        super().__init__()
        self.cfg = cfg
        self.settings = cfg.agents.scrape
        self.redactor = redactor_of(self.settings.redact)  # shared by the targets' threads (its counts are locked)
        self.scrapers = [TargetScraper(t, self.settings, cfg.agents.service, redactor=self.redactor)
                         for t in self.settings.targets]
        self.publisher = AckedPublisher(cfg.kafka, "scrape", self.settings.ack_timeout_s, self.redactor)
        self.counters = InputCounters()
        self._pending: deque[Record] = deque()
        self._pending_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def stall_after_s(self) -> float:
        slowest = max((t.interval_s + t.timeout_s for t in self.settings.targets), default=0.0)
        return max(self.STALL_AFTER_S, 3 * slowest + 3 * self.settings.ack_timeout_s)

    def scrape_target(self, scraper: TargetScraper) -> list[Record]:
        """One scrape of one target: the records to publish (events, health, dead letters)."""
        topics = self.cfg.kafka.topics
        pub = self.publisher
        source = f"scrape:{scraper.target.name}"
        started = time.monotonic()
        ts_s = time.time()
        records: list[Record] = []
        error: str | None = None
        events: list[dict[str, Any]] = []
        try:
            body, ctype = scraper.fetch()
            families = scraper.parse(body, ctype)
            events, refused = scraper.convert(families, ts_s)
            for text, reason in refused:
                self.counters.add("samples_refused")
                records.append(pub.dead(source, text.encode("utf-8", "replace"), reason, scraper.service.encode()))
        except _BadExposition as exc:
            error = str(exc)
            self.counters.add("bad_expositions")
            records.append(pub.dead(source, exc.body, error, scraper.service.encode()))
            log.warning("Target sent a bad exposition; dead-lettered.", extra={"job": scraper.target.name,
                                                                               "error": error})
        except ScrapeError as exc:
            error = str(exc)
            self.counters.add("scrape_failures")
        elapsed_ms = (time.monotonic() - started) * 1000
        ok = error is None
        self.counters.add("scrapes")
        self.counters.add("samples", len(events))
        metric_records, bad = pub.encode_all(topics.metrics, METRIC_EVENT, [*events, scraper.up(ts_s, ok)], source)
        self.counters.add("samples_refused", bad)
        records.extend(metric_records)
        records.append(pub.event(topics.health, HEALTH_EVENT, scraper.health(ts_s, ok, elapsed_ms, len(events),
                                                                            error)))
        return records

    def deliver(self, records: list[Record]) -> bool:
        """Publishes what waits from earlier turns, then ``records``; True when all were acknowledged."""
        with self._pending_lock:
            self._pending.extend(records)
            over = len(self._pending) - self.settings.max_pending_events
            for _ in range(max(0, over)):
                self._pending.popleft()
            if over > 0:
                self.counters.add("dropped_unacked", over)
                log.error("Kafka unreachable too long; oldest scraped events dropped.", extra={"dropped": over})
            batch = list(self._pending)
            try:
                self.publisher.publish(batch)
            except KafkaError as exc:
                self.counters.add("publish_failures")
                log.warning("Scraped events not acknowledged; kept for the next turn.",
                            extra={"pending": len(batch), "error": str(exc)})
                return False
            self._pending.clear()
            self.counters.add("published", len(batch))
            return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats_dict(self) -> dict[str, int]:
        """The input's counters and its replacements per pattern (``redacted_<name>``): the agent's metrics."""
        return input_stats(self.counters, self.redactor)

    def _loop(self, scraper: TargetScraper) -> None:
        interval = scraper.target.interval_s
        # Spread targets over the interval (as Prometheus offsets them) so they do not all fire together.
        offset = (hash(scraper.target.name) % 1000) / 1000 * min(interval, 5.0)
        next_at = time.monotonic() + offset
        if self._stop.wait(offset):
            return
        while not self.stopping:
            self.mark_progress()
            try:
                self.deliver(self.scrape_target(scraper))
            except Exception:  # a bug on one target must not stop its loop silently
                self.counters.add("errors")
                log.exception("Scraping a target failed.", extra={"job": scraper.target.name})
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def run(self) -> None:
        self._threads = [threading.Thread(target=self._loop, args=(s,), name=f"scrape-{s.target.name}", daemon=True)
                         for s in self.scrapers]
        for t in self._threads:
            t.start()
        self.mark_progress()
        self._stop.wait()
        for t in self._threads:
            t.join(30)

    def _release(self) -> None:
        for t in self._threads:
            t.join(30)
        for s in self.scrapers:
            s.session.close()
        self.publisher.close()
