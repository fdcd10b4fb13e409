"""The ``agent`` service: the log shipper, the metrics agent and the scheduled health probes in one process.

Each configured component runs in its own thread; ``stop()`` stops them all
and ``close()`` waits for them and releases them. A component that is not
configured (no log inputs, ``metrics.enabled: false``...) is not started.
With ``agents.metrics_addr`` the inputs' counters are served as Prometheus
metrics there (``tocsin.producers.agentmetrics``).
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry

from tocsin.core.component import Component
from tocsin.core.errors import ConfigError
from tocsin.core.promserve import MetricsServer
from tocsin.producers.agentmetrics import AgentCollector
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
        self.metrics_server: MetricsServer | None = None

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
        if agents.metrics_addr and self.metrics_server is None:
            registry = CollectorRegistry()  # the agent's own: other services in the process keep theirs
            registry.register(AgentCollector(lambda: self.components))
            server = MetricsServer(agents.metrics_addr, registry, what="agent")
            try:
                server.start()
            except OSError as exc:
                raise ConfigError(f"agents.metrics_addr: cannot listen on {agents.metrics_addr} ({exc}); "
                                  "pick a free port or unset it") from exc
            self.metrics_server = server
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
        if self.metrics_server is not None:
            self.metrics_server.close()
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
