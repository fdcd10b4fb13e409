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
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    return lambda cfg: grouped(build(cfg))


def grouped(built: Component | dict[str, Component]) -> Component:
    """A built service as one component: several members run together as a ``ServiceGroup``."""
    return built if isinstance(built, Component) else ServiceGroup(built)


@dataclass(frozen=True)
class Backoff:
    """When a failed member is started again: exponential, capped, forgotten after a healthy run.

    The shape of systemd's ``Restart=on-failure`` with ``RestartSec`` growing
    (``RestartSteps``/``RestartMaxDelaySec``): 1 s, 2 s, 4 s ... at most 60 s; a
    member that ran ``reset_after_s`` without failing starts again at 1 s.
    """

    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
    reset_after_s: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))


RUNNING, RESTARTING, FAILED = "running", "restarting", "failed"


@dataclass
class MemberStatus:
    """What ``/health/detailed`` and the heartbeats say about one member of a group."""

    state: str = RUNNING
    restarts: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None  # wall clock (s)
    healthy_since: float = field(default_factory=time.monotonic)

    def recently_failed(self, reset_after_s: float, now: float | None = None) -> bool:
        """Failed, restarting, or restarted less than a healthy period ago."""
        now = time.monotonic() if now is None else now
        return self.state != RUNNING or (self.restarts > 0 and now - self.healthy_since < reset_after_s)


class ServiceGroup(Component):
    """Several components in one process, each ``run()`` on its own thread.

    A member that has a factory (``factories[name]() -> Component``) and fails
    (its ``start()`` or ``run()`` raises, or ``run()`` returns while the group
    runs) is closed and replaced by a fresh one after a ``Backoff`` delay; the
    others go on. A member without a factory (unsafe to restart in process,
    e.g. the owner of the embedded store) stops the whole group, and ``run()``
    re-raises its error so the process exits non-zero and its supervisor
    (``tocsin start --detach``, systemd) starts it again.
    """

    name = "all"

    def __init__(self, members: dict[str, Component],
                 factories: dict[str, Callable[[], Component]] | None = None,
                 backoff: Backoff = Backoff()) -> None:
        super().__init__()
        self.members = members
        self.factories = dict(factories or {})
        self.backoff = backoff
        self.status: dict[str, MemberStatus] = {name: MemberStatus() for name in members}
        self._threads: dict[str, threading.Thread] = {}
        self._member_lock = threading.Lock()
        self.failures: dict[str, BaseException] = {}

    def alive(self, name: str) -> bool:
        """Whether the member's ``run()`` is going (not ended, not waiting to be restarted)."""
        thread = self._threads.get(name)
        status = self.status.get(name)
        return thread is not None and thread.is_alive() and (status is None or status.state == RUNNING)

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

    def _run_member(self, name: str) -> None:
        status = self.status.setdefault(name, MemberStatus())
        attempt, rebuild = 0, False
        while not self.stopping:
            began = time.monotonic()
            try:
                if rebuild:  # a fresh member: the failed one may hold broken clients or half-done state
                    replacement = self.factories[name]()
                    with self._member_lock:
                        if self.stopping:
                            replacement.close()
                            return
                        self.members[name] = replacement
                    status.restarts += 1
                    replacement.start()
                    log.info("restarted a failed service", extra={"service": name, "restarts": status.restarts})
                status.state, status.healthy_since = RUNNING, began
                self.members[name].run()
                if self.stopping:
                    return
                raise RuntimeError(f"{name}: run() returned while the group runs")
            except BaseException as exc:  # any failure of one member is handled here, not by the others
                if self.stopping:
                    return
                log.exception("service stopped with an error", extra={"service": name})
                status.last_error = f"{type(exc).__name__}: {exc}"[:500]
                status.last_failure_at = time.time()
                if name not in self.factories:  # recorded and re-raised from run() in the main thread
                    status.state = FAILED
                    self.failures[name] = exc
                    self.stop()
                    return
            if time.monotonic() - began >= self.backoff.reset_after_s:
                attempt = 0
            delay = self.backoff.delay(attempt)
            attempt += 1
            status.state = RESTARTING
            log.warning("restarting a failed service", extra={"service": name, "in_s": round(delay, 1),
                                                             "attempt": attempt})
            try:
                self.members[name].close()
            except Exception:
                log.exception("closing a failed service failed", extra={"service": name})
            if self._stop.wait(delay):
                return
            rebuild = True

    def run(self) -> None:
        for name in self.members:
            t = threading.Thread(target=self._run_member, args=(name,), name=f"tocsin-{name}", daemon=True)
            t.start()
            self._threads[name] = t
        self._stop.wait()
        with self._member_lock:
            members = list(self.members.values())
        for member in members:
            member.stop()
        for t in self._threads.values():
            t.join(timeout=30)
        if self.failures:
            name, exc = next(iter(self.failures.items()))
            raise exc

    def _release(self) -> None:
        with self._member_lock:
            members = list(self.members.values())
        for member in reversed(members):
            member.close()


def restartable(cfg: TocsinConfig, name: str) -> bool:
    """Whether a failed ``name`` may be rebuilt in its process.

    Not the owner of the embedded store: chdb keeps one engine per process and
    its directory locked, and a half-closed engine is not safe to open again, so
    that failure ends the process (non-zero) for its supervisor to restart.
    """
    from tocsin.core.clickhouse import is_embedded

    return not (name == "sink-clickhouse" and is_embedded(cfg.clickhouse))


def with_heartbeats(cfg: TocsinConfig, name: str, component: Component,
                    backoff: Backoff = Backoff()) -> ServiceGroup:
    """What ``tocsin start`` runs: the service plus heartbeats of each of its services while they run.

    Each member that is safe to rebuild in process restarts on failure (``ServiceGroup``).
    """
    from tocsin.app.watchdog import add_watchdog
    from tocsin.core.heartbeat import HeartbeatLoop

    if isinstance(component, ServiceGroup) and name == "all":
        members, factories = dict(component.members), dict(component.factories)
    else:
        members, factories = {name: component}, {name: lambda: builder(name)(cfg)}
    factories = {n: f for n, f in factories.items() if restartable(cfg, n)}
    group = ServiceGroup(members, factories, backoff)
    beating = [n for n in members if n not in SELF_REPORTING]
    # One beat interval for the whole process: the processor's own (it beats from its loop at that pace).
    interval_s = cfg.processor.heartbeat_interval_s or 15.0
    group.members["heartbeat"] = HeartbeatLoop(cfg, group, beating, interval_s)
    group.factories["heartbeat"] = lambda: HeartbeatLoop(cfg, group, beating, interval_s)
    add_watchdog(cfg, group)
    return group


def build_all(cfg: TocsinConfig, names: tuple[str, ...] = ALL) -> ServiceGroup:
    """Every service in this process; the processor's HTTP API also serves the store it owns.

    The group carries a factory per service, so ``with_heartbeats`` can rebuild one that fails.
    """
    from tocsin.app.api_service import build as build_processor

    factories: dict[str, Callable[[], Component]] = {}
    for name in names:
        if name == "processor":
            factories[name] = lambda: grouped(build_processor(cfg, store_api="sink-clickhouse" in names))
        else:
            factories[name] = lambda name=name: builder(name)(cfg)
    return ServiceGroup({name: make() for name, make in factories.items()}, factories)
