"""Shaping an input's records before they are sent: keep or drop by level, logger or message regex; sample.

Per input (``agents.logship.inputs[].shape``), applied to each parsed record
in this order, the first rule that drops it counted under its reason:

1. ``keep_levels`` (when given, other levels are dropped), ``drop_levels``;
2. ``keep_loggers``, ``drop_loggers``: a logger name and its children
   (``urllib3`` covers ``urllib3.connectionpool``);
3. ``keep_regex``, ``drop_regex``: RE2 patterns searched in the message;
4. ``sample_1_in``: one record in N is kept, chosen by a hash of its event_id,
   so a line shipped again after a crash gets the same verdict. Errors
   (``ERROR``, ``CRITICAL``, ``FATAL`` ...) are never sampled out unless
   ``sample_errors`` is set.

A dropped record is still read and acknowledged (its offset is passed), it
is only never sent: the counters (``dropped_level``, ``dropped_logger``,
``dropped_regex``, ``sampled_out``) say how many.
"""

from __future__ import annotations

import collections
import zlib
from typing import Any

import re2

from tocsin.producers.config import ShapeConfig

ERROR_LEVELS = frozenset({"ERROR", "CRITICAL", "FATAL", "ALERT", "EMERGENCY", "EMERG", "CRIT", "SEVERE"})


def _any(patterns: list[str]) -> Any:
    return re2.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


class Shaper:
    """Decides per record whether it is sent; counts what it drops, per reason."""

    def __init__(self, cfg: ShapeConfig) -> None:
        self.cfg = cfg
        self.counts: collections.Counter[str] = collections.Counter()
        self._keep_levels = frozenset(v.upper() for v in cfg.keep_levels)
        self._drop_levels = frozenset(v.upper() for v in cfg.drop_levels)
        self._keep_loggers = tuple(cfg.keep_loggers)
        self._drop_loggers = tuple(cfg.drop_loggers)
        self._keep_re = _any(cfg.keep_regex)
        self._drop_re = _any(cfg.drop_regex)
        self._n = cfg.sample_1_in

    @property
    def active(self) -> bool:
        c = self.cfg
        return bool(c.keep_levels or c.drop_levels or c.keep_loggers or c.drop_loggers or c.keep_regex
                    or c.drop_regex or c.sample_1_in > 1)

    def keep(self, rec: dict[str, Any], event_id: str) -> bool:
        """True when ``rec`` (whose event_id is ``event_id``) is to be sent."""
        level = rec["level"].upper()
        if (self._keep_levels and level not in self._keep_levels) or level in self._drop_levels:
            self.counts["dropped_level"] += 1
            return False
        logger = rec["logger"]
        if ((self._keep_loggers and not _under(logger, self._keep_loggers))
                or (self._drop_loggers and _under(logger, self._drop_loggers))):
            self.counts["dropped_logger"] += 1
            return False
        message = rec["message"]
        if ((self._keep_re is not None and self._keep_re.search(message) is None)
                or (self._drop_re is not None and self._drop_re.search(message) is not None)):
            self.counts["dropped_regex"] += 1
            return False
        n = self._n
        if n > 1 and (self.cfg.sample_errors or level not in ERROR_LEVELS) and zlib.crc32(event_id.encode()) % n:
            self.counts["sampled_out"] += 1
            return False
        return True


def _under(logger: str, names: tuple[str, ...]) -> bool:
    """``logger`` is one of ``names`` or a child of one (``a.b`` is under ``a``)."""
    return any(logger == n or logger.startswith(n + ".") for n in names)
