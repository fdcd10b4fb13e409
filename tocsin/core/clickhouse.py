"""One way to reach ClickHouse: a clickhouse-connect ``Client`` for ``chdb://`` or ``http(s)://``.

``chdb://PATH`` runs the real ClickHouse engine in this process (clickhouse-connect's
chdb backend); it locks PATH to one process and one engine per process, so the
client is cached per URL here and shared by every component in the process.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import unquote, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from tocsin.core.config import ClickHouseConfig
from tocsin.core.errors import StoreError

_lock = threading.Lock()
_embedded: dict[str, Client] = {}


def is_embedded(cfg: ClickHouseConfig) -> bool:
    return cfg.resolved_url().startswith("chdb://")


def connect(cfg: ClickHouseConfig, **settings: Any) -> Client:
    """A client for the configured ClickHouse, with ``cfg.database`` created if missing."""
    url = cfg.resolved_url()
    try:
        if url.startswith("chdb://"):
            with _lock:
                client = _embedded.get(url)
                if client is None:
                    client = clickhouse_connect.get_client(dsn=url)
                    _embedded[url] = client
            client.command(f"CREATE DATABASE IF NOT EXISTS `{cfg.database}`")
            return client
        parsed = urlparse(url)
        client = clickhouse_connect.get_client(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
            username=cfg.username or unquote(parsed.username or "") or "default",
            password=(cfg.password.get_secret_value() if cfg.password else unquote(parsed.password or "")),
            secure=parsed.scheme == "https",
            connect_timeout=cfg.connect_timeout_s,
            settings=settings or None,
        )
        client.command(f"CREATE DATABASE IF NOT EXISTS `{cfg.database}`")
        return client
    except Exception as exc:
        if isinstance(exc, StoreError):
            raise
        safe = url.split("@")[-1] if "@" in url else url  # never print credentials
        raise StoreError(f"cannot open ClickHouse at {safe}: {type(exc).__name__}: {exc}") from exc
