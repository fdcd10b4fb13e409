"""Where Tocsin keeps local state: ``TOCSIN_HOME`` (default ``~/.tocsin``) and a jar cache."""

from __future__ import annotations

import os
from pathlib import Path

# A source checkout's root: docker/kafka (the broker's Maven project) lives there, not in the wheel.
REPO_ROOT = Path(__file__).resolve().parents[2]


def home() -> Path:
    """Data directory for local state (broker data, embedded ClickHouse, pids)."""
    return Path(os.environ.get("TOCSIN_HOME", Path.home() / ".tocsin")).expanduser()


def cache_dir() -> Path:
    """Cache for downloaded artifacts (Kafka jars); survives ``TOCSIN_HOME`` wipes."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tocsin"
