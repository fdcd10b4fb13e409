"""The log shipper's checkpoints: per file identity, the offset Kafka acknowledged.

JSON, replaced atomically (write a temp file, fsync, rename), so a kill -9 at
any moment leaves either the previous or the new checkpoint, never a torn
one. A lock file next to it keeps two shippers from sharing one state::

    {"version": 1, "files": [{"dev": 2049, "ino": 131, "fp": "9f..", "fp_len": 256, "gen": 0,
                              "id": "3ac1..-", "offset": 81920, "path": "/var/log/app.log",
                              "service": "shop", "seen": 1700000000.0}]}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tocsin.core.errors import ConfigError

log = logging.getLogger("tocsin.logship")
STATE_VERSION = 1


@dataclass
class FileState:
    """What survives a restart about one file."""

    dev: int
    ino: int
    fp: str
    """Hash of the file's first ``fp_len`` bytes."""
    fp_len: int
    gen: int
    """How many truncations (copytruncate) this inode went through: part of the event-id prefix."""
    id: str
    """Event-id prefix of this file's lines (host, dev, inode, fingerprint, generation)."""
    offset: int
    """Every line before this offset was acknowledged by Kafka."""
    path: str
    service: str
    seen: float
    """Wall-clock time the file was last seen."""
    done: bool = False
    """Finished: rotated away or deleted, and read to its end."""

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)


class StateStore:
    """Loads and atomically saves ``FileState`` records; ``path=None`` keeps them in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock_fd: int | None = None
        self.written_at: float | None = None
        """When the loaded state was saved (wall clock), or None without a saved state."""

    def lock(self) -> None:
        """Takes the state's lock file; a second shipper on the same state is a configuration error."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"{self.path}: state file is in use by another shipper (lock held)") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> dict[tuple[int, int], FileState]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {data.get('version')!r}")
            files = [FileState(**entry) for entry in data["files"]]
            self.written_at = float(data.get("written_at") or 0.0) or None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # Keep the bad file for inspection; starting over re-ships lines with their old event ids.
            aside = self.path.with_name(self.path.name + f".corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            log.warning("State file unreadable; starting from the beginning of every file.",
                         extra={"path": str(self.path), "error": str(exc), "moved_to": str(aside)})
            return {}
        return {f.key: f for f in files}

    def save(self, files: list[FileState]) -> None:
        if self.path is None:
            return
        payload: dict[str, Any] = {"version": STATE_VERSION, "written_at": time.time(),
                                   "files": [asdict(f) for f in files]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as out:
            json.dump(payload, out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


def retained(current: dict[tuple[int, int], FileState], known: dict[tuple[int, int], FileState],
             horizon: float) -> dict[tuple[int, int], FileState]:
    """The states worth saving: the files being read, plus known ones seen after ``horizon`` (wall clock).

    A finished file whose path is gone is forgotten at once; one that still
    exists stays known so that a glob matching it does not ship it again.
    """
    states = dict(current)
    for key, state in known.items():
        if key not in states and state.seen >= horizon and not (state.done and not os.path.exists(state.path)):
            states[key] = state
    return states
