"""The ``tocsin`` command line: a thin shell over the public API of each area.

Each area registers its commands from its own module here (``kafka``,
``topics`` ...). Exit codes: 0 success, 1 the work failed (an alert, an
unhealthy check, a delivery that finally failed), 2 bad usage or
configuration, 3 a dependency (Kafka, ClickHouse) unreachable.
"""

from __future__ import annotations

import sys

from tocsin.app.cli import (
    agent_cmds,
    config_cmds,
    db_cmds,
    kafka_cmds,
    notify_cmds,
    ops_cmds,
    processor_cmds,
    service_cmds,
)
from tocsin.app.cli.app import app
from tocsin.core.errors import ConfigError, KafkaError, LocalKafkaError, RefusedError, StoreError, TocsinError

for _module in (kafka_cmds, service_cmds, ops_cmds, agent_cmds, processor_cmds, db_cmds, notify_cmds, config_cmds):
    _module.register(app)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def main() -> None:
    """Console entry point: map Tocsin errors to one line on stderr and an exit code."""
    try:
        app()
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except RefusedError as exc:  # bad usage, not an unavailable store
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except (KafkaError, StoreError, LocalKafkaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)
    except TocsinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_FAILED)


__all__ = ["app", "main"]
