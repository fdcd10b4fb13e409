"""Reports against a fixture data set whose answers the test computes itself, on the real engine."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import uuid

import pytest

from tocsin.sinks.clickhouse.reports import bucket_minutes, build_report, normalize_message, render_report
from tocsin.sinks.clickhouse.schema import QUANTILE_ACCURACY, migrate
from tocsin.sinks.clickhouse.store_access import QueryLimits, readonly_client, run_query

HOURS = 6
SERVICES = ["shop", "cart", "<b>pay</b>"]
MIN = 60_000_000  # microseconds


def us(t: dt.datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


# Error message templates and what their occurrences must group under.
TEMPLATES = [
    (lambda r: f"payment {uuid.UUID(int=r.getrandbits(128))} declined: card ending {r.randrange(1000, 9999)}",
     "payment <uuid> declined: card ending <n>"),
    (lambda r: f"timeout after {r.randrange(100, 5000)}ms calling 'inventory-{r.randrange(9)}'",
     "timeout after <n>ms calling '<str>'"),
    (lambda r: f"user 0x{r.getrandbits(32):x} not found", "user <hex> not found"),
    (lambda r: f"order {r.randrange(10**5)} failed: db error {r.choice([1205, 1213])}",
     "order <n> failed: db error <n>"),
]


class Fixture:
    """Generates the data set and keeps, per period, what the report must say."""

    def __init__(self, end: dt.datetime) -> None:
        self.end = end
        self.start = end - dt.timedelta(hours=HOURS)
        self.prev = end - dt.timedelta(hours=2 * HOURS)
        rnd = random.Random(42)
        self.logs: list[list] = []
        self.metrics: list[list] = []
        self.health: list[list] = []
        self.alerts: list[list] = []
        self.expect: dict[str, dict] = {"cur": {}, "prev": {}}
        n = 0
        for key, lo in (("cur", self.start), ("prev", self.prev)):
            lo_us = us(lo)
            span = HOURS * 60 * MIN
            for s_i, svc in enumerate(SERVICES):
                reqs = 1500 + 700 * s_i + (300 if key == "cur" else 0)
                lat = [rnd.uniform(5, 400) * (2 if svc == "cart" and key == "cur" else 1) for _ in range(reqs)]
                for v in lat:
                    n += 1
                    self.metrics.append([f"m{n}", lo_us + rnd.randrange(span), svc, "web-1", "api_response_time", v,
                                         "ms", {"route": "/x"}])
                for _ in range(500):  # not a request metric: must not count
                    n += 1
                    self.metrics.append([f"m{n}", lo_us + rnd.randrange(span), svc, "web-1", "cpu_usage",
                                         rnd.uniform(0, 100), "percent", {}])
                errors: dict[str, int] = {}
                n_err = 40 + 25 * s_i + (30 if key == "cur" and svc == "shop" else 0)
                for i in range(n_err):
                    make, pattern = TEMPLATES[(i * (s_i + 1)) % len(TEMPLATES)]
                    n += 1
                    self.logs.append([f"l{n}", lo_us + rnd.randrange(span), svc, "web-1",
                                      "ERROR" if i % 4 else "CRITICAL", "app", make(rnd), "", {}])
                    errors[pattern] = errors.get(pattern, 0) + 1
                for _ in range(800):
                    n += 1
                    self.logs.append([f"l{n}", lo_us + rnd.randrange(span), svc, "web-1",
                                      rnd.choice(["INFO", "DEBUG", "WARNING"]), "app", "fine 123", "", {}])
                bad = {"unhealthy": 3 + s_i if key == "cur" else 1, "degraded": 2}
                for status, count in [("healthy", 50), *bad.items()]:
                    for _ in range(count):
                        n += 1
                        self.health.append([f"h{n}", lo_us + rnd.randrange(span), svc, "web-1", "database", status,
                                            12.5, {}, "" if status == "healthy" else f"{status}: slow"])
                self.expect[key][svc] = {"requests": reqs, "latencies": sorted(lat), "errors": n_err,
                                         "patterns": errors, "unhealthy": bad["unhealthy"],
                                         "degraded": bad["degraded"]}
        # Outside both periods: must not count anywhere.
        for when in (us(self.prev) - MIN, us(end) + MIN):
            n += 1
            self.metrics.append([f"m{n}", when, "shop", "web-1", "api_response_time", 1.0, "ms", {}])
            n += 1
            self.logs.append([f"l{n}", when, "shop", "web-1", "ERROR", "app", "outside", "", {}])
        s, p = us(self.start), us(self.prev)
        # Incidents: (alert_id, service, [(minutes offset from base, state, severity)], base)
        incidents = [
            ("A1", "shop", s, [(10, "pending", "warning"), (12, "firing", "warning"), (40, "resolved", "none")]),
            ("A2", "cart", s, [(60, "firing", "warning"), (70, "firing", "critical"), (90, "resolved", "none")]),
            ("A3", "shop", s, [(300, "firing", "critical")]),
            ("A4", "cart", p, [(60, "firing", "warning"), (120, "resolved", "none")]),
            ("A5", "shop", s, [(-30, "firing", "warning"), (30, "resolved", "none")]),
        ]
        k = 0
        for alert_id, svc, base, steps in incidents:
            started = base + steps[0][0] * MIN
            prev_state = "inactive"
            for minutes, state, severity in steps:
                k += 1
                ts = base + minutes * MIN
                self.alerts.append([f"ae{k}", ts, alert_id, f"fp-{alert_id}", "error_rate", svc, severity, "none",
                                    state, prev_state, 1.0, 0.5, {"service": svc}, {}, started,
                                    ts if state == "resolved" else None, "auto" if state == "resolved" else ""])
                prev_state = state

    def insert(self, client, db: str) -> None:
        client.insert(f"`{db}`.logs", self.logs, column_names=[
            "event_id", "ts", "service", "host", "level", "logger", "message", "trace_id", "attrs"])
        client.insert(f"`{db}`.metrics", self.metrics, column_names=[
            "event_id", "ts", "service", "host", "name", "value", "unit", "labels"])
        client.insert(f"`{db}`.health_checks", self.health, column_names=[
            "event_id", "ts", "service", "host", "check", "status", "response_time_ms", "details", "error"])
        client.insert(f"`{db}`.alerts", self.alerts, column_names=[
            "event_id", "ts", "alert_id", "fingerprint", "rule", "service", "severity", "previous_severity", "state",
            "previous_state", "value", "threshold", "labels", "annotations", "started_at", "ended_at",
            "resolved_by"])


@pytest.fixture
def report_doc(clickhouse_client, tocsin_config):
    db = tocsin_config.clickhouse.database
    migrate(clickhouse_client, db)
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=5)
    fx = Fixture(end)
    fx.insert(clickhouse_client, db)
    clickhouse_client.insert(f"`{db}`.quarantine", [  # one in the period, one before it
        [end - dt.timedelta(minutes=10), "logs", "q1", "shop", 5, "event time before 2000"],
        [fx.prev + dt.timedelta(minutes=1), "logs", "q2", "shop", 5, "event time before 2000"],
    ], column_names=["received_at", "target", "event_id", "service", "ts_us", "reason"])

    reader = readonly_client(tocsin_config.clickhouse, QueryLimits(max_result_rows=1_000_000))

    def ask(sql, parameters=None):
        return run_query(reader, sql, parameters)

    return build_report(ask, db, HOURS, end=end), fx, ask, db


def _within_sketch(got: float, values: list[float], q: float) -> bool:
    rank = q * (len(values) - 1)
    lo = values[max(0, int(rank) - 1)] * (1 - QUANTILE_ACCURACY)
    hi = values[min(len(values) - 1, int(rank) + 2)] * (1 + QUANTILE_ACCURACY)
    return lo <= got <= hi


def test_per_service_requests_errors_rates_and_percentiles(report_doc):
    doc, fx, _, _ = report_doc
    by = {s["service"]: s for s in doc["services"]}
    assert set(by) == set(SERVICES)
    for svc in SERVICES:
        got, cur, prev = by[svc], fx.expect["cur"][svc], fx.expect["prev"][svc]
        assert got["requests"] == cur["requests"] and got["previous"]["requests"] == prev["requests"]
        assert got["errors"] == cur["errors"] and got["previous"]["errors"] == prev["errors"]
        assert got["error_rate"] == pytest.approx(cur["errors"] / cur["requests"])
        assert got["errors_per_min"] == pytest.approx(cur["errors"] / (HOURS * 60))
        assert got["change"]["requests_pct"] == pytest.approx(100 * (cur["requests"] - prev["requests"])
                                                              / prev["requests"])
        for key, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            assert _within_sketch(got[key], cur["latencies"], q), (svc, key, got[key])
            assert _within_sketch(got["previous"][key], prev["latencies"], q), (svc, key)
    # cart's latency doubled in this period
    assert by["cart"]["change"]["p95_pct"] == pytest.approx(100, abs=6)
    total = sum(fx.expect["cur"][s]["requests"] for s in SERVICES)
    assert doc["totals"]["requests"] == total
    assert doc["totals"]["errors"] == sum(fx.expect["cur"][s]["errors"] for s in SERVICES)
    assert doc["totals"]["quarantined"] == 1


def test_top_errors_group_by_normalized_message_with_previous_counts(report_doc):
    doc, fx, _, _ = report_doc
    expected = sorted(((n, svc, pattern) for svc in SERVICES
                       for pattern, n in fx.expect["cur"][svc]["patterns"].items()), key=lambda x: (-x[0], x[1], x[2]))
    got = [(e["count"], e["service"], e["pattern"]) for e in doc["top_errors"]]
    assert got == [(n, s, p) for n, s, p in expected][:10]
    for e in doc["top_errors"]:
        assert e["previous_count"] == fx.expect["prev"][e["service"]]["patterns"].get(e["pattern"], 0)
        assert normalize_message(e["example"]) == e["pattern"]  # the SQL and the Python twin agree


def test_alerts_fired_resolved_durations_and_mttr(report_doc):
    doc, _, _, _ = report_doc
    a = doc["alerts"]
    assert (a["fired"], a["resolved"]) == (3, 3)  # A1, A2, A3 fired; A1, A2, A5 resolved
    assert a["mttr_s"] == pytest.approx((28 + 30 + 60) * 60 / 3)
    assert a["previous"] == {"fired": 2, "resolved": 1, "mttr_s": pytest.approx(3600)}  # A4, A5 fired; A4 resolved
    items = {i["alert_id"]: i for i in a["items"]}
    assert set(items) == {"A1", "A2", "A3", "A5"}
    assert items["A2"]["severity"] == "critical" and items["A2"]["duration_s"] == pytest.approx(1800)
    assert items["A3"]["resolved_at"] is None and items["A3"]["state"] == "firing"


def test_health_check_failures_against_the_previous_period(report_doc):
    doc, fx, _, _ = report_doc
    h = doc["health"]
    cur = sum(fx.expect["cur"][s]["unhealthy"] + fx.expect["cur"][s]["degraded"] for s in SERVICES)
    prev = sum(fx.expect["prev"][s]["unhealthy"] + fx.expect["prev"][s]["degraded"] for s in SERVICES)
    assert (h["failures"], h["previous_failures"]) == (cur, prev)
    assert {(i["service"], i["unhealthy"], i["degraded"], i["checks"]) for i in h["items"]} == {
        (s, fx.expect["cur"][s]["unhealthy"], fx.expect["cur"][s]["degraded"],
         50 + fx.expect["cur"][s]["unhealthy"] + 2) for s in SERVICES}


def test_series_add_up_and_a_service_filter_narrows_everything(report_doc):
    doc, fx, ask, db = report_doc
    assert doc["series"]["bucket_s"] == bucket_minutes(HOURS * 60) * 60
    for svc in SERVICES:
        pts = [p for p in doc["series"]["points"] if p["service"] == svc]
        assert sum(p["requests"] for p in pts) == fx.expect["cur"][svc]["requests"]
        assert sum(p["errors"] for p in pts) == fx.expect["cur"][svc]["errors"]
    only = build_report(ask, db, HOURS, service="cart", end=fx.end)
    assert [s["service"] for s in only["services"]] == ["cart"]
    assert {e["service"] for e in only["top_errors"]} == {"cart"}
    assert {i["alert_id"] for i in only["alerts"]["items"]} == {"A2"}


def test_every_format_renders_and_html_is_escaped_and_self_contained(report_doc):
    doc, _, _, _ = report_doc
    text = render_report(doc, "text")
    assert "TOP ERRORS" in text and "payment <uuid> declined" in text and "MTTR 39.3 min" in text
    md = render_report(doc, "md")
    assert "| shop |" in md and "## Alerts" in md
    assert "&lt;b&gt;pay&lt;/b&gt;" in md and "<b>pay</b>" not in md  # Markdown would pass HTML through
    page = render_report(doc, "html")
    assert page.count("<svg") == 4 and "<polyline" in page
    assert "&lt;b&gt;pay&lt;/b&gt;" in page and "<b>pay</b>" not in page
    assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page)
    assert json.loads(render_report(doc, "json")) == json.loads(json.dumps(doc))
    with pytest.raises(ValueError):
        render_report(doc, "pdf")
