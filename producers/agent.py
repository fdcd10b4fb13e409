"""The ``agent`` service: the log shipper, the metrics agent and the scheduled health probes in one process.

Each configured component runs in its own thread; ``stop()`` stops them all
and ``close()`` waits for them and releases them. A component that is not
configured (no log inputs, ``metrics.enabled: false``...) is not started.
"""

from __future__ import annotations

import logging
import threading

from tocsin.core.component import Component
from tocsin.producers.config import AgentSettings

log = logging.getLogger("tocsin.agent")
_JOIN_TIMEOUT_S = 30.0


class AgentService(Component):
    """Runs the configured agents together until stopped."""

    name = "agent"

    def __init__(self, cfg: AgentSettings) -> None:
        super().__init__()
        self.cfg = cfg
        self.components: list[Component] = []
        self._threads: list[threading.Thread] = []
        self.failures: dict[str, str] = {}

    def start(self) -> None:
        if self.components:
            return
        agents = self.cfg.agents
        if agents.logship.inputs:
            from tocsin.producers.logship import LogShipper

            self.components.append(LogShipper(self.cfg))
        if agents.metrics.enabled:
            from tocsin.producers.metrics import MetricsAgent

            self.components.append(MetricsAgent(self.cfg))
        if agents.health.enabled:
            from tocsin.producers.health import HealthScheduler

            self.components.append(HealthScheduler(self.cfg))
        if agents.scrape.targets:
            from tocsin.producers.inputs.scrape import ScrapeInput

            self.components.append(ScrapeInput(self.cfg))
        if agents.otlp.enabled:
            from tocsin.producers.inputs.otlp import OtlpReceiver

            self.components.append(OtlpReceiver(self.cfg))
        if agents.syslog.enabled:
            from tocsin.producers.inputs.syslog import SyslogInput

            self.components.append(SyslogInput(self.cfg))
        for component in self.components:
            component.start()

    def stuck(self, now: float | None = None) -> str | None:
        """The first agent whose loop stopped (hung, or ended with an error while the others run)."""
        return next((f"{self.name}/{name}" for c in self.components if (name := c.stuck(now))), None)

    def _run_one(self, component: Component) -> None:
        try:
            component.run()
        except Exception as exc:  # one agent failing must not take the others down
            self.failures[component.name] = f"{type(exc).__name__}: {exc}"
            log.exception("Agent stopped with an error.", extra={"agent": component.name})

    def run(self) -> None:
        self.start()
        self._threads = [threading.Thread(target=self._run_one, args=(c,), name=f"agent-{c.name}", daemon=True)
                         for c in self.components]
        for thread in self._threads:
            thread.start()
        log.info("Agents running.", extra={"agents": [c.name for c in self.components]})
        self._stop.wait()
        for component in self.components:
            component.stop()
        for thread in self._threads:
            thread.join(_JOIN_TIMEOUT_S)

    def stop(self) -> None:
        super().stop()
        for component in self.components:
            component.stop()

    def _release(self) -> None:
        for component in self.components:
            component.stop()
        for thread in self._threads:
            thread.join(_JOIN_TIMEOUT_S)
        for component in self.components:
            try:
                component.close()
            except Exception as exc:
                log.warning("Closing an agent failed.", extra={"agent": component.name, "error": str(exc)})


def build(cfg: AgentSettings) -> AgentService:
    """The registered ``agent`` service (``tocsin start agent``)."""
    return AgentService(cfg)
