"""Prometheus scrape: against a real node_exporter, Tocsin's own /metrics, and hostile targets (pytest-httpserver)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import requests

from tests.kafkautil import wait_for
from tests.producers.inpututil import deadletters, events, free_port, running, wait_events, with_agents
from tocsin.producers.inputs.config import ScrapeConfig, ScrapeTargetConfig
from tocsin.producers.inputs.scrape import ScrapeInput, TargetScraper, _BadExposition
from tocsin.producers.inputs.series import histogram_quantile

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"

HISTOGRAM = """# TYPE req_seconds histogram
req_seconds_bucket{route="/a",le="0.1"} {a}
req_seconds_bucket{route="/a",le="0.5"} {b}
req_seconds_bucket{route="/a",le="+Inf"} {c}
req_seconds_sum{route="/a"} 1.0
req_seconds_count{route="/a"} {c}
# TYPE orders_total counter
orders_total {o}
# TYPE temp gauge
temp 21.5
"""


def _body(a: int, b: int, c: int, o: int) -> str:
    return HISTOGRAM.replace("{a}", str(a)).replace("{b}", str(b)).replace("{c}", str(c)).replace("{o}", str(o))


# -- pure logic ------------------------------------------------------------------------------------------


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.1, 50.0), (0.5, 90.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * (70 - 50) / 40)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5)  # in +Inf: the highest finite bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_counters_become_rates_and_histograms_quantiles_of_the_interval():
    target = ScrapeTargetConfig(name="shop", url="http://127.0.0.1:1/metrics")
    scraper = TargetScraper(target, ScrapeConfig(), "shop")
    first, _ = scraper.convert(scraper.parse(_body(10, 20, 20, 100), "text/plain"), 1000.0)
    assert {e["name"] for e in first} == {"temp", "up"} - {"up"}  # rates and quantiles need two scrapes
    second, refused = scraper.convert(scraper.parse(_body(60, 100, 120, 130), "text/plain"), 1010.0)
    assert not refused
    by = {(e["name"], e["labels"].get("quantile")): e for e in second}
    assert by[("orders_per_s", None)]["value"] == pytest.approx(3.0)
    assert by[("orders_per_s", None)]["unit"] == "per_s"
    # the interval's 100 observations: 50 <= 0.1, 30 in (0.1, 0.5], 20 above
    assert by[("req_seconds", "0.5")]["value"] == pytest.approx(0.1)
    assert by[("req_seconds", "0.95")]["value"] == pytest.approx(0.5)
    assert by[("req_seconds_count_per_s", None)]["value"] == pytest.approx(10.0)
    assert by[("temp", None)]["labels"] == {"job": "shop", "instance": "127.0.0.1:1"}
    third, _ = scraper.convert(scraper.parse(_body(1, 1, 1, 5), "text/plain"), 1020.0)  # target restarted
    assert {e["name"]: e["value"] for e in third}["orders_per_s"] == pytest.approx(0.5)


def test_relabelling_keeps_drops_and_renames():
    target = ScrapeTargetConfig(name="n", url="http://h:1/m", relabel=[
        {"action": "keep", "name": "node_.*"},
        {"action": "drop", "name": "node_cpu", "labels": {"mode": "idle|iowait"}},
        {"action": "rename", "name": "node_load1", "to": "load_1m"},
        {"action": "rename_label", "label": "cpu", "to": "core"},
        {"action": "drop_label", "label": "noise"},
    ])
    body = ('node_cpu{cpu="0",mode="idle"} 1\nnode_cpu{cpu="0",mode="user",noise="x"} 2\n'
            'node_load1 0.5\ngo_goroutines 7\n')
    scraper = TargetScraper(target, ScrapeConfig(), "shop")
    out, _ = scraper.convert(scraper.parse(body, "text/plain"), 1.0)
    assert sorted((e["name"], tuple(sorted(e["labels"].items()))) for e in out) == [
        ("load_1m", (("instance", "h:1"), ("job", "n"))),
        ("node_cpu", (("core", "0"), ("instance", "h:1"), ("job", "n"), ("mode", "user"))),
    ]


@pytest.mark.parametrize("body,ctype", [
    ("metric{label=\"unterminated} 1\n", "text/plain"),
    ("# TYPE x counter\nx_total notanumber\n", "text/plain"),
    ("x 1\n", "application/openmetrics-text; version=1.0.0"),  # OpenMetrics needs # EOF
])
def test_a_malformed_exposition_is_an_error_with_the_parsers_reason(body, ctype):
    scraper = TargetScraper(ScrapeTargetConfig(name="x", url="http://h:1/m"), ScrapeConfig(), "shop")
    with pytest.raises(_BadExposition, match="malformed"):
        scraper.parse(body, ctype)


def test_too_many_labels_dead_letters_the_sample_not_the_scrape():
    scraper = TargetScraper(ScrapeTargetConfig(name="x", url="http://h:1/m"), ScrapeConfig(max_labels=4), "shop")
    out, refused = scraper.convert(scraper.parse('a{x="1",y="2",z="3"} 1\nb 2\n', "text/plain"), 1.0)
    assert [e["name"] for e in out] == ["b"]
    assert "exceed max_labels" in refused[0][1]


# -- against real peers ----------------------------------------------------------------------------------


@pytest.fixture
def node_exporter(tmp_path):
    port = free_port()
    proc = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                             "--collector.loadavg", "--collector.cpu", "--collector.meminfo",
                             "--collector.netdev"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: requests.get(url, timeout=2).ok, 30, "node_exporter to answer",
                 ignore=(requests.RequestException,))
        yield proc, url
    finally:
        proc.kill()
        proc.wait(10)


def test_node_exporter_samples_rates_and_up_then_target_down_is_unhealthy(tocsin_config, node_exporter):
    proc, url = node_exporter
    cfg = with_agents(tocsin_config, scrape={"targets": [{
        "name": "node", "url": url, "interval_s": 1, "timeout_s": 1,
        "relabel": [{"action": "keep", "name": "node_(load1|memory_MemAvailable_bytes|cpu_seconds_per_s|"
                                                "network_receive_bytes_per_s)"},
                    {"action": "rename", "name": "node_load1", "to": "load_1m"}]}]})
    topics = cfg.kafka.topics
    with running(ScrapeInput(cfg)) as scrape:
        metrics = wait_events(cfg.kafka, topics.metrics,
                              lambda ev: ev if {"load_1m", "node_cpu_seconds_per_s"} <= {e["name"] for e in ev}
                              else None, "load_1m and CPU rates from node_exporter")
        names = {e["name"] for e in metrics}
        assert names <= {"load_1m", "node_memory_MemAvailable_bytes", "node_cpu_seconds_per_s",
                         "node_network_receive_bytes_per_s", "up"}
        assert any(e["name"] == "up" and e["value"] == 1.0 for e in metrics)
        cpu = [e for e in metrics if e["name"] == "node_cpu_seconds_per_s"]
        assert all(0 <= e["value"] <= 1.5 and e["labels"]["job"] == "node" for e in cpu)  # a core's seconds/s
        health = events(cfg.kafka, topics.health)
        assert health and all(h["check"] == "scrape:node" and h["status"] == "healthy" for h in health)
        proc.kill()
        proc.wait(10)
        down = wait_events(cfg.kafka, topics.health,
                           lambda ev: [h for h in ev if h["status"] == "unhealthy"], "an unhealthy scrape:node")
        assert "ConnectionError" in down[0]["error"] and down[0]["details"]["url"] == url
        assert wait_events(cfg.kafka, topics.metrics,
                           lambda ev: [e for e in ev if e["name"] == "up" and e["value"] == 0.0], "up 0")
        assert scrape.counters.get("scrape_failures") >= 1 and scrape.pending == 0


def test_tocsin_processor_metrics_scraped_with_its_token(tocsin_config, kafka_bootstrap, clickhouse_url):
    from tests.processors.test_http_e2e import TOKEN, processor_config, running_processor

    with running_processor(processor_config(kafka_bootstrap, clickhouse_url)) as proc:
        url = f"{proc.url}/metrics"
        wait_for(lambda: requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).ok, 90,
                 "the processor's /metrics", ignore=(requests.RequestException,))
        cfg = with_agents(tocsin_config, scrape={"targets": [
            {"name": "tocsin", "url": url, "interval_s": 1, "timeout_s": 1, "bearer_token": TOKEN}]})
        with running(ScrapeInput(cfg)):
            metrics = wait_events(cfg.kafka, cfg.kafka.topics.metrics,
                                  lambda ev: ev if any(e["name"].endswith("_per_s") for e in ev) else None,
                                  "rates from the processor's /metrics")
    names = {e["name"] for e in metrics}
    assert any(n.startswith("tocsin_") for n in names), sorted(names)[:20]
    assert not deadletters(cfg.kafka)


def test_bad_exposition_and_auth_failure_are_dead_lettered_or_unhealthy(tocsin_config, httpserver):
    httpserver.expect_request("/bad").respond_with_data("ok{ 1\n", content_type="text/plain")
    httpserver.expect_request("/auth", headers={"Authorization": "Basic dTpw"}).respond_with_data(
        "x 1\n", content_type="text/plain")
    httpserver.expect_request("/auth").respond_with_data("no", status=401)
    cfg = with_agents(tocsin_config, scrape={"targets": [
        {"name": "bad", "url": httpserver.url_for("/bad"), "interval_s": 1, "timeout_s": 1},
        {"name": "auth", "url": httpserver.url_for("/auth"), "interval_s": 1, "timeout_s": 1,
         "basic_auth": {"username": "u", "password": "p"}},
        {"name": "wrongpw", "url": httpserver.url_for("/auth"), "interval_s": 1, "timeout_s": 1,
         "basic_auth": {"username": "u", "password": "nope"}}]})
    with running(ScrapeInput(cfg)) as scrape:
        wait_for(lambda: scrape.counters.get("bad_expositions") >= 1 and scrape.counters.get("scrapes") >= 4, 30,
                 "a bad exposition and a few scrapes")
    dead = deadletters(cfg.kafka)
    assert dead and dead[0][0] == b"ok{ 1\n"
    assert "malformed Prometheus text exposition" in dead[0][1]["error"]
    assert dead[0][1]["stage"] == "agent.scrape" and dead[0][1]["source_topic"] == "scrape:bad"
    health = {h["check"]: h for h in events(cfg.kafka, cfg.kafka.topics.health)}
    assert health["scrape:bad"]["status"] == "unhealthy"
    assert health["scrape:auth"]["status"] == "healthy"
    assert health["scrape:wrongpw"]["status"] == "unhealthy" and "HTTP 401" in health["scrape:wrongpw"]["error"]


def test_a_scrape_waits_for_kafka_and_keeps_its_samples(tocsin_config, httpserver, tmp_path):
    """The broker unreachable: samples stay pending (bounded), health says nothing false; back: all delivered."""
    from tests.conftest import make_config
    from tocsin.core import localkafka
    from tocsin.core.kafka import create_topics

    data_dir = tmp_path / "kafka"
    broker = localkafka.up(data_dir=data_dir)
    try:
        base = make_config(broker.bootstrap, str(tocsin_config.clickhouse.url))
        create_topics(base.kafka)
        n = [0]

        def body(_request):
            from werkzeug import Response

            n[0] += 1
            return Response(f"# TYPE hits counter\nhits_total {n[0] * 10}\n", content_type="text/plain")

        httpserver.expect_request("/m").respond_with_handler(body)
        cfg = with_agents(base, scrape={"ack_timeout_s": 2, "targets": [
            {"name": "app", "url": httpserver.url_for("/m"), "interval_s": 1, "timeout_s": 1}]})
        with running(ScrapeInput(cfg)) as scrape:
            wait_for(lambda: scrape.counters.get("published") >= 3, 30, "first scrapes acknowledged")
            localkafka.down(data_dir)
            wait_for(lambda: scrape.counters.get("publish_failures") >= 2 and scrape.pending > 0, 60,
                     "scrapes kept while Kafka is down")
            scrapes_during = scrape.counters.get("scrapes")
            localkafka.up(port=broker.port, data_dir=data_dir)
            wait_for(lambda: scrape.pending == 0 and scrape.counters.get("scrapes") > scrapes_during + 1, 120,
                     "pending scrapes delivered after the broker is back")
            stopped_at = scrape.counters.get("scrapes")
        ups = [e for e in events(cfg.kafka, cfg.kafka.topics.metrics) if e["name"] == "up"]
        assert len({e["event_id"] for e in ups}) >= stopped_at - 1  # every scrape's up made it, once or twice
        assert scrape.counters.get("dropped_unacked") == 0
    finally:
        localkafka.down(data_dir)
