"""Queries are bounded by the server: the engine cancels a query at its limits, an admin can list and kill one,
and store calls run on their own pool, so a flood of them never stalls /health, resolve or a quick query."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import make_config, unique
from tests.kafkautil import wait_for
from tests.processors.test_http_e2e import AUTH, TOKEN, free_port, running_processor
from tests.sinks.clickhouse.test_store_api import _cli
from tocsin.core.clickhouse import connect
from tocsin.core.kafka import create_topics
from tocsin.sinks.clickhouse.schema import migrate
from tocsin.sinks.clickhouse.store_api import store_router

HUGE = "SELECT sum(sipHash64(number)) FROM numbers(30000000000)"
EXEC_LIMIT_S = 25.0


@pytest.fixture(scope="module")
def owner(kafka_bootstrap, clickhouse_url, tmp_path_factory):
    """A processor with the store API mounted, as ``tocsin start all`` serves it.

    A 25 s query time limit (room for two CLI runs on a loaded machine in the kill test) and rows-to-read
    high enough that the 30-billion-row query runs until the time limit stops it.
    """
    import yaml

    cfg = make_config(kafka_bootstrap, clickhouse_url,
                      api={"token": TOKEN, "http_addr": f"127.0.0.1:{free_port()}", "service_name": "limits"},
                      processor={"group_id": unique("limits")},
                      sink_clickhouse={"query_max_execution_s": EXEC_LIMIT_S, "query_max_rows_to_read": 10**12,
                                       "store_api_workers": 2, "store_api_queue_wait_s": 0.5})
    create_topics(cfg.kafka)
    migrate(connect(cfg.clickhouse), cfg.clickhouse.database)
    config_path = tmp_path_factory.mktemp("limits") / "tocsin.yaml"
    dumped = cfg.model_dump(mode="json", exclude={"source"})
    dumped["api"]["token"] = TOKEN
    config_path.write_text(yaml.safe_dump(dumped))
    with running_processor(cfg, [store_router(lambda: connect(cfg.clickhouse), cfg)]) as running:
        wait_for(lambda: requests.get(f"{running.url}/health", timeout=5).status_code == 200, 90,
                 "the processor to report healthy", ignore=(requests.RequestException,))
        yield running, config_path


def _query(url: str, sql: str, timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/api/store/query", json={"sql": sql}, headers=AUTH, timeout=timeout)


def test_the_huge_query_is_cancelled_at_the_limit_while_everything_else_answers(owner):
    running, _ = owner
    url = running.url
    with ThreadPoolExecutor(12) as pool:
        started = time.monotonic()
        # two fill the store pool, ten more queue for it and are turned away with 503
        huge = [pool.submit(_query, url, HUGE) for _ in range(12)]
        time.sleep(0.3)  # let the flood reach the server before the probes below
        worst = 0.0
        while not all(f.done() for f in huge):
            for probe in (lambda: requests.get(f"{url}/health", timeout=5),
                          lambda: requests.post(f"{url}/api/alerts/resolve", json={"alert_id": "nope", "reason": "t"},
                                                headers=AUTH, timeout=5),
                          lambda: requests.get(f"{url}/api/store/queries", headers=AUTH, timeout=5)):
                t0 = time.monotonic()
                resp = probe()
                worst = max(worst, time.monotonic() - t0)
                assert resp.status_code in (200, 404), resp.text
            time.sleep(0.1)
        elapsed = time.monotonic() - started
    codes = sorted(f.result().status_code for f in huge)
    assert codes.count(400) == 2 and codes.count(503) == 10, codes
    cancelled = [f.result().json()["detail"] for f in huge if f.result().status_code == 400]
    assert all("TIMEOUT_EXCEEDED" in d and "query_max_execution_s" in d for d in cancelled), cancelled
    assert elapsed < EXEC_LIMIT_S + 10, f"the engine did not stop the query at {EXEC_LIMIT_S} s: {elapsed:.1f} s"
    assert worst < 1.0, f"/health, resolve or the query list took {worst:.2f} s during the flood"
    # once the pool is free, a quick query answers at once
    t0 = time.monotonic()
    assert _query(url, "SELECT 1").json()["rows"] == [[1]]
    assert time.monotonic() - t0 < 1.0


def test_default_rows_to_read_refuses_the_huge_query_before_it_reads(tocsin_config):
    from tocsin.core.errors import RefusedError
    from tocsin.sinks.clickhouse.store_access import open_store

    store = open_store(tocsin_config)
    t0 = time.monotonic()
    with pytest.raises(RefusedError, match=r"TOO_MANY_ROWS.*query_max_rows_to_read"):
        store.query(HUGE)
    assert time.monotonic() - t0 < 2.0


def test_an_admin_lists_and_kills_a_running_query_from_the_cli(owner):
    running, config_path = owner
    url = running.url
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(_query, url, HUGE.replace("30000000000", "30000000001"))
        listed = wait_for(lambda: [q for q in requests.get(f"{url}/api/store/queries", headers=AUTH,
                                                           timeout=5).json() if "30000000001" in q["sql"]],
                          20, "the query to show as running")
        out = _cli(config_path, "query", "--running")
        assert out.returncode == 0 and listed[0]["id"] in out.stdout, out.stderr
        t0 = time.monotonic()
        out = _cli(config_path, "query", "--kill", listed[0]["id"])
        assert out.returncode == 0 and "killed" in out.stdout, out.stderr
        resp = fut.result(timeout=30)
    assert resp.status_code == 400 and "QUERY_WAS_CANCELLED" in resp.json()["detail"], resp.text
    assert time.monotonic() - t0 < EXEC_LIMIT_S + 5
    out = _cli(config_path, "query", "--kill", "0" * 32)
    assert out.returncode == 1 and "no query" in out.stdout
