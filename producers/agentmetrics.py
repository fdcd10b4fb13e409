"""The agent's Prometheus metrics: every input's counters, served on ``agents.metrics_addr``.

Families (one per counter, the input as a label, as the Prometheus naming guide asks: a metric is one
thing measured, its label says where)::

    tocsin_agent_<counter>_total{input="syslog"}          e.g. tocsin_agent_tcp_received_total
    tocsin_agent_<gauge>{input="logship"}                 files, inflight_bytes
    tocsin_agent_redacted_total{input="otlp", pattern="email"}

The values come from each component's ``stats_dict()`` (the log shipper's and the network inputs'), read
at scrape time by a custom collector, so the hot paths keep their plain integer counters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

PREFIX = "tocsin_agent_"
GAUGES = frozenset({"files", "inflight_bytes"})
"""``stats_dict()`` entries that go up and down (the shipper's open files and unacknowledged bytes)."""
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(counter: str) -> str:
    """``tocsin_agent_<counter>`` (without ``_total``: the counter family adds it), valid as a Prometheus name."""
    return PREFIX + _NOT_NAME.sub("_", counter).removesuffix("_total")


def _stats(component: Any) -> dict[str, int]:
    """The component's ``stats_dict()``; {} when it has none. Read from the scrape's thread while the component
    runs, a dict it iterates can change size: tried again, and one input never fails the whole /metrics."""
    stats = getattr(component, "stats_dict", None)
    if stats is None:
        return {}
    for _ in range(3):
        try:
            return stats()
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return {}


class AgentCollector:
    """Reads ``stats_dict()`` of every component ``components()`` returns, at each scrape.

    >>> registry.register(AgentCollector(lambda: agent.components))   # doctest: +SKIP
    """

    def __init__(self, components: Callable[[], Iterable[Any]]) -> None:
        self.components = components

    def collect(self) -> Iterator[Metric]:
        counters: dict[str, CounterMetricFamily] = {}
        gauges: dict[str, GaugeMetricFamily] = {}
        redacted = CounterMetricFamily(f"{PREFIX}redacted", "Replacements made by redaction before sending, per "
                                       "input and pattern.", labels=["input", "pattern"])
        for component in list(self.components()):
            stats = _stats(component)
            for key, value in sorted(stats.items()):
                if key.startswith("redacted_"):
                    redacted.add_metric([component.name, key.removeprefix("redacted_")], value)
                elif key in GAUGES:
                    name = metric_name(key)
                    family = gauges.get(name)
                    if family is None:
                        family = gauges[name] = GaugeMetricFamily(name, f"The agent input's {key} now.",
                                                                  labels=["input"])
                    family.add_metric([component.name], value)
                else:
                    name = metric_name(key)
                    family = counters.get(name)
                    if family is None:
                        family = counters[name] = CounterMetricFamily(
                            name, f"The agent input's {key.replace('_', ' ')} since it started.", labels=["input"])
                    family.add_metric([component.name], value)
        yield from counters.values()
        yield from gauges.values()
        yield redacted
