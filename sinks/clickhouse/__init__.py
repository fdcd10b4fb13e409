"""ClickHouse history: schema and migrations, the sink, the store (direct or through its owner's API),
reports, cleanup and archive.

Exported here is what other areas use; the rest is this package's own. Names resolve on first use
(PEP 562), so reading the config does not import the sink, the engine or the HTTP router.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tocsin.core.exports import lazy_exports

_EXPORTS = {
    "ClickHouseSink": "sink",
    "ClickHouseSinkConfig": "config",
    "ClickHouseSinkSettings": "config",
    "HttpStore": "store_access",
    "chdb_path": "store_access",
    "migrate": "schema",
    "open_store": "store_access",
    "owner_pid": "store_access",
    "render": "schema",
    "render_report": "reports",
    "store_router": "store_api",
}
__all__ = [
    "ClickHouseSink",
    "ClickHouseSinkConfig",
    "ClickHouseSinkSettings",
    "HttpStore",
    "chdb_path",
    "migrate",
    "open_store",
    "owner_pid",
    "render",
    "render_report",
    "store_router",
]

if TYPE_CHECKING:
    from tocsin.sinks.clickhouse.config import ClickHouseSinkConfig, ClickHouseSinkSettings
    from tocsin.sinks.clickhouse.reports import render_report
    from tocsin.sinks.clickhouse.schema import migrate, render
    from tocsin.sinks.clickhouse.sink import ClickHouseSink
    from tocsin.sinks.clickhouse.store_access import HttpStore, chdb_path, open_store, owner_pid
    from tocsin.sinks.clickhouse.store_api import store_router


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
