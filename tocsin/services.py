"""The registry of runnable services: ``tocsin start NAME`` looks them up here.

Each entry names a ``build(cfg) -> Component`` function by import path, so the
CLI imports only the service it starts (the data flow stays one-way: the
registry knows names, not code).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from tocsin.component import Component
from tocsin.config import TocsinConfig
from tocsin.errors import ConfigError

SERVICES: dict[str, str] = {
    "processor": "processors.service:build",
    "sink-clickhouse": "sinks.clickhouse:build",
    "sink-notify": "sinks.notify:build",
    "agent": "producers.agent:build",
}


def builder(name: str) -> Callable[[TocsinConfig], Component]:
    try:
        target = SERVICES[name]
    except KeyError:
        raise ConfigError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
