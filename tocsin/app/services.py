"""The registry of runnable services: ``tocsin start NAME`` looks them up here.

Each entry names a ``build(cfg)`` function by import path (it returns a component,
or several by name, which run together as a ``ServiceGroup``), so the
CLI imports only the service it starts (the data flow stays one-way: the
registry knows names, not code). ``all`` runs the processor and both sinks in
one process: with the embedded ClickHouse (chdb) only one process may own the
store, so that process must hold every service that writes or reads it.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable

from tocsin.app.config import TocsinConfig
from tocsin.core.component import Component
from tocsin.core.errors import ConfigError

log = logging.getLogger(__name__)

SERVICES: dict[str, str] = {
    "processor": "tocsin.app.api_service:build",
    "sink-clickhouse": "tocsin.sinks.clickhouse.sink:build",
    "sink-notify": "tocsin.sinks.notify.sink:build",
    "agent": "tocsin.producers.agent:build",
    "all": "tocsin.app.services:build_all",
}
ALL = ("processor", "sink-clickhouse", "sink-notify", "agent")
SELF_REPORTING = ("processor",)  # sends its heartbeat from its own loop, with its own figures


def builder(name: str) -> Callable[[TocsinConfig], Component]:
    try:
        target = SERVICES[name]
    except KeyError:
        raise ConfigError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}") from None
    module, _, attr = target.partition(":")
    build = getattr(importlib.import_module(module), attr)
    return lambda cfg: _grouped(build(cfg))


def _grouped(built: Component | dict[str, Component]) -> Component:
    return built if isinstance(built, Component) else ServiceGroup(built)


class ServiceGroup(Component):
    """Several components in one process, each ``run()`` on its own thread.

    If any member's ``run()`` fails, the whole group stops: a half-running
    pipeline that looks healthy is worse than a clean exit a supervisor restarts.
    """

    name = "all"

    def __init__(self, members: dict[str, Component]) -> None:
        super().__init__()
        self.members = members
        self._threads: dict[str, threading.Thread] = {}
        self.failures: dict[str, BaseException] = {}

    def alive(self, name: str) -> bool:
        """Whether the member's ``run()`` is still going (its thread has not ended)."""
        thread = self._threads.get(name)
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        started: list[Component] = []
        try:
            for member in self.members.values():
                member.start()
                started.append(member)
        except BaseException:
            for member in started:
                member.close()
            raise

    def _run_member(self, name: str, member: Component) -> None:
        try:
            member.run()
        except BaseException as exc:  # recorded and re-raised from run() in the main thread
            log.exception("service stopped with an error", extra={"service": name})
            self.failures[name] = exc
        finally:
            self.stop()

    def run(self) -> None:
        for name, member in self.members.items():
            t = threading.Thread(target=self._run_member, args=(name, member), name=f"tocsin-{name}", daemon=True)
            t.start()
            self._threads[name] = t
        self._stop.wait()
        for member in self.members.values():
            member.stop()
        for t in self._threads.values():
            t.join(timeout=30)
        if self.failures:
            name, exc = next(iter(self.failures.items()))
            raise exc

    def _release(self) -> None:
        for member in reversed(list(self.members.values())):
            member.close()


def with_heartbeats(cfg: TocsinConfig, name: str, component: Component) -> ServiceGroup:
    """What ``tocsin start`` runs: the service plus heartbeats of each of its services while they run."""
    from tocsin.core.heartbeat import HeartbeatLoop

    members = dict(component.members) if isinstance(component, ServiceGroup) and name == "all" else {name: component}
    group = ServiceGroup(members)
    group.members["heartbeat"] = HeartbeatLoop(cfg, group, [n for n in members if n not in SELF_REPORTING])
    return group


def build_all(cfg: TocsinConfig, names: tuple[str, ...] = ALL) -> ServiceGroup:
    """Every service in this process; the processor's HTTP API also serves the store it owns."""
    from tocsin.app.api_service import build as build_processor

    members: dict[str, Component] = {}
    for name in names:
        if name == "processor":
            members[name] = _grouped(build_processor(cfg, store_api="sink-clickhouse" in names))
        else:
            members[name] = builder(name)(cfg)
    return ServiceGroup(members)
