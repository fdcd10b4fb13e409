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
from types import TracebackType
from typing import Self


class Component:
    """Base class: a stop event, idempotent ``close()`` and context-manager support."""

    name = "component"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()

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
