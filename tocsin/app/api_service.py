"""The processor as a service: the consumer loop plus its HTTP API (health, alerts, dashboard, metrics).

``tocsin start processor`` runs both; ``tocsin start all`` also mounts the
ClickHouse owner's store API (``sinks/clickhouse/store_api.py``) on the same server, so
``tocsin query``, ``report`` and ``cleanup`` reach the embedded store through it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from tocsin.app.config import TocsinConfig
from tocsin.core.component import Component
from tocsin.processors.service import ProcessorService


def rule_lookup(service: ProcessorService) -> Callable[[str], dict[str, Any] | None]:
    """The processor's rule by name as a dict (its current rule file), for the alert page's chart."""

    def spec(name: str) -> dict[str, Any] | None:
        rules = service.rules
        rule = rules.by_name.get(name) if rules is not None else None
        return rule.spec.model_dump() if rule is not None else None

    return spec


class ApiServer(Component):
    """uvicorn in a thread over a started processor; ``run()`` just waits for ``close()``."""

    name = "http"

    def __init__(self, cfg: TocsinConfig, service: ProcessorService, *, store_api: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.service = service
        self.store_api = store_api
        self._view: Any = None
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> None:
        from tocsin.processors.http.app import create_app
        from tocsin.processors.http.server import serve
        from tocsin.processors.view import ProcessorView
        from tocsin.sinks.clickhouse.incident import context_router
        from tocsin.sinks.notify.silence_api import silence_router
        from tocsin.sinks.notify.why import notifications_router

        kafka_cfg = self.cfg.kafka
        # /api/silences (the CLI's silences over HTTP), /api/alerts/{id}/notifications and .../context (the
        # alert page's chart and error lines) scope each route themselves; the store API is admin only.
        scoped = [lambda require: silence_router(kafka_cfg, require)]
        routers = []
        store = None  # the notification log: only where the store is
        if self.store_api:
            from tocsin.core.clickhouse import connect
            from tocsin.sinks.clickhouse import open_store, store_router

            routers.append(store_router(lambda: connect(self.cfg.clickhouse), self.cfg))
            store = functools.cache(lambda: open_store(self.cfg))
        scoped.append(lambda require: notifications_router(store, require))
        scoped.append(lambda require: context_router(store, rule_lookup(self.service), require))
        self._view = ProcessorView(self.service)
        self._server, self._thread = serve(
            create_app(self._view, self.cfg, extra_routers=routers, scoped_routers=scoped), self.cfg)

    def _release(self) -> None:
        from tocsin.processors.http.server import stop

        if self._server is not None:
            stop(self._server, self._thread)
        if self._view is not None:
            self._view.close()


def build(cfg: TocsinConfig, *, store_api: bool = False) -> dict[str, Component]:
    """``tocsin start processor``: the consumer loop and its HTTP API, started in that order."""
    from tocsin.processors.service import build as build_processor

    service = build_processor(cfg)
    return {"processor": service, "http": ApiServer(cfg, service, store_api=store_api)}
