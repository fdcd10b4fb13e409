"""Fixtures shared by the processor's HTTP tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.processors.test_http_e2e import Running, processor_config, running_processor, wait_for


@pytest.fixture(scope="module")
def proc(kafka_bootstrap: str, clickhouse_url: str) -> Iterator[Running]:
    """A processor with its HTTP API in its own process, healthy, for one test module."""
    with running_processor(processor_config(kafka_bootstrap, clickhouse_url)) as running:
        wait_for("the processor to report healthy",
                 lambda: requests.get(f"{running.url}/health", timeout=5).status_code == 200, timeout_s=90)
        yield running


@pytest.fixture(scope="module")
def oncall_proc(kafka_bootstrap: str, clickhouse_url: str) -> Iterator[Running]:
    """``proc`` with the routers the application mounts for on-call: silences, the store API, the alert page's."""
    from tocsin.app.api_service import rule_lookup
    from tocsin.core.clickhouse import connect
    from tocsin.sinks.clickhouse.incident import context_router
    from tocsin.sinks.clickhouse.store_access import DirectStore
    from tocsin.sinks.clickhouse.store_api import store_router
    from tocsin.sinks.notify.silence_api import silence_router
    from tocsin.sinks.notify.why import notifications_router

    cfg = processor_config(kafka_bootstrap, clickhouse_url)
    store = DirectStore(connect(cfg.clickhouse), cfg)
    scoped = [lambda require: silence_router(cfg.kafka, require),
              lambda require: notifications_router(lambda: store, require),
              lambda require: context_router(lambda: store, lambda name: rules(name), require)]
    routers = [store_router(lambda: connect(cfg.clickhouse), cfg)]
    rules = lambda name: None  # noqa: E731  (the processor's, once it runs)
    with running_processor(cfg, extra_routers=routers, scoped_routers=scoped) as running:
        rules = rule_lookup(running.service)
        wait_for("the processor to report healthy",
                 lambda: requests.get(f"{running.url}/health", timeout=5).status_code == 200, timeout_s=90)
        yield running
