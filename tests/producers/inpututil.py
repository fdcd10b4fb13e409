"""Helpers of the network-input tests: run an input in a thread, read what it published."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tests.kafkautil import consume_all, wait_for
from tocsin.core.component import Component
from tocsin.schemas.codec import default_codec


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(component: Component) -> Iterator[Component]:
    """``component.run()`` in a thread; stopped and closed on exit (and checked to have stopped)."""
    component.start()
    thread = threading.Thread(target=component.run, name=f"test-{component.name}", daemon=True)
    thread.start()
    try:
        yield component
    finally:
        component.stop()
        thread.join(30)
        component.close()
        assert not thread.is_alive(), f"{component.name} did not stop within 30 s"


def events(kafka: Any, topic: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every event on ``topic`` now (decoded; batches unpacked)."""
    codec = default_codec()
    out: list[dict[str, Any]] = []
    for rec in consume_all(kafka, topic, timeout_s=timeout_s, idle_s=1.0):
        out.extend(codec.decode_events(rec.value)[1])
    return out


def deadletters(kafka: Any) -> list[tuple[bytes, dict[str, str]]]:
    """(value, headers) of every dead letter."""
    return [(r.value, {k: v.decode() for k, v in r.headers})
            for r in consume_all(kafka, kafka.topics.deadletter, timeout_s=10.0, idle_s=1.0)]


def wait_events(kafka: Any, topic: str, predicate: Callable[[list[dict[str, Any]]], Any], what: str,
                timeout_s: float = 60.0) -> Any:
    """The first truthy ``predicate(events on topic)``."""
    return wait_for(lambda: predicate(events(kafka, topic)), timeout_s, what, every_s=0.5)


def with_agents(cfg: Any, **sections: Any) -> Any:
    """``cfg`` with these ``agents`` sections (validated as a user's file would be)."""
    from tocsin.producers.config import AgentsConfig

    agents = AgentsConfig.model_validate({"service": "shop", **sections})
    return cfg.model_copy(update={"agents": agents})
