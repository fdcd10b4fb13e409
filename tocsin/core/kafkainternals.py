"""Checks that kafka-python's internals are still the ones tocsin's fast paths were written against.

The batch appender (``tocsin.producers.kafkasend``) and the lean record
reader (``tocsin.core.kafkafetch``) use kafka-python structures that are not
its public API: record tuple fields, the v2 batch header struct, accumulator
and batch methods. Each fast path names what it relies on as a *surface*:
``{what: description}``, where a description is a signature (parameter names
in order, ``=…`` for a default), a tuple of fields, a struct format or a
constant. ``verify`` compares the surface it was written against with the
installed kafka-python's and, on any difference, logs one WARNING naming
each difference; the caller then uses kafka-python's public API instead.
Probing never raises: what cannot be found is described as ``missing``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

Surface = dict[str, str]
"""What a fast path relies on -> how it looks (see the module docstring)."""

MISSING = "missing"


def signature(obj: Any) -> str:
    """``(self, tp, records, now=…)``: parameter names in order, ``=…`` where there is a default."""
    parts = []
    for p in inspect.signature(obj).parameters.values():
        name = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        parts.append(name + ("=…" if p.default is not p.empty else ""))
    return "(" + ", ".join(parts) + ")"


def attributes(obj: Any, names: Iterable[str]) -> str:
    """The subset of ``names`` that ``obj`` has, as a description (so a missing one shows as a difference)."""
    return ", ".join(n for n in names if hasattr(obj, n))


def probe(probes: dict[str, Callable[[], str]]) -> Surface:
    """Runs each probe; one that fails describes its object as missing, with the reason."""
    out: Surface = {}
    for what, fn in probes.items():
        try:
            out[what] = fn()
        except Exception as exc:  # any error means "not the structure we know"
            out[what] = f"{MISSING} ({type(exc).__name__}: {exc})"
    return out


def differences(expected: Surface, actual: Surface) -> list[str]:
    """One line per difference: ``what: expected X, found Y``."""
    out = []
    for what, want in expected.items():
        got = actual.get(what, MISSING)
        if got != want:
            out.append(f"{what}: expected {want}, found {got}")
    return out


def verify(fast_path: str, expected: Surface, actual: Surface, fallback: str) -> bool:
    """True when the surfaces match; otherwise one WARNING naming every difference and the fallback used."""
    diff = differences(expected, actual)
    if not diff:
        return True
    import kafka

    log.warning("kafka-python's internals differ from those %s was written for; using %s instead.",
                fast_path, fallback,
                extra={"kafka_python": getattr(kafka, "__version__", "?"), "differences": diff})
    return False
