"""The contract every long-running Tocsin component follows.

A component is built from a typed, already-validated config; the constructor
only stores it (no I/O). ``start()`` opens connections, ``run()`` loops until
``close()`` is called from another thread or a signal, ``close()`` is
idempotent, and every component works as a context manager::

    with LogShipper(cfg) as shipper:   # __enter__ calls start()
        shipper.run()                   # returns after close()
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Self


class Component:
    """Base class: a stop event, idempotent ``close()`` and context-manager support."""

    name = "component"
    STALL_AFTER_S = 120.0
    """A loop that reports progress and has not for this long is stuck: its heartbeats stop."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()
        self._progress_at: float | None = None

    def mark_progress(self) -> None:
        """Called by ``run()`` loops once a turn: proof of life for heartbeats, so a hung loop goes silent."""
        self._progress_at = time.monotonic()

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds since the loop last marked progress; 0 for components that never report it."""
        if self._progress_at is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self._progress_at

    @property
    def stall_after_s(self) -> float:
        return self.STALL_AFTER_S

    def stuck(self, now: float | None = None) -> str | None:
        """The name of a loop of this component that stopped making progress, or None."""
        return self.name if self.stalled_for(now) > self.stall_after_s else None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        """Open connections. Default: nothing to open."""

    def run(self) -> None:
        """Loop until ``close()``; subclasses override."""
        self._stop.wait()

    def stop(self) -> None:
        """Ask ``run()`` to return soon (safe from signal handlers and other threads)."""
        self._stop.set()

    def close(self) -> None:
        """Stop and release resources; calling it twice is harmless."""
        self._stop.set()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._release()

    def _release(self) -> None:
        """Release connections and files; called once by ``close()``."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
