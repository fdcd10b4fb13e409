"""Route templates from raw request paths, so that metric series stay bounded.

``/api/orders/12345/items`` becomes ``/api/orders/{id}/items``: a label with
one value per order id would make one series per order in every window of the
processor. Frameworks that know their route (Starlette's ``scope["route"]``,
Flask's ``url_rule``) should pass it instead; this is the fallback, and
``RouteLimiter`` caps whatever still varies.
"""

from __future__ import annotations

import re
import threading

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")
_NUMBERISH = re.compile(r"^[+-]?\d[\d.,_:-]*$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-=+.~]{24,}$")  # base64ish ids, session tokens
_MAX_SEGMENTS = 12
OTHER = "{other}"


def _segment(seg: str) -> str:
    if not seg:
        return seg
    if _NUMBERISH.match(seg):
        return "{id}"
    if _UUID.match(seg):
        return "{uuid}"
    if _HEX.match(seg):
        return "{hex}"
    if _TOKEN.match(seg) and any(c.isdigit() for c in seg):
        return "{token}"
    return seg


def template_of(path: str) -> str:
    """The route template of a raw path (query string dropped, ids replaced)."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return OTHER if path not in ("", "*") else (path or "/")
    parts = path.split("/")
    if len(parts) > _MAX_SEGMENTS + 1:
        parts = [*parts[:_MAX_SEGMENTS], "{rest}"]
    return "/".join(_segment(p) for p in parts)


class RouteLimiter:
    """Keeps the first ``max_routes`` distinct templates; later ones become ``{other}``.

    A scanner hitting random paths would otherwise create unbounded series.
    """

    def __init__(self, max_routes: int = 500) -> None:
        self.max_routes = max_routes
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()
        self.overflowed = 0

    def __call__(self, path: str) -> str:
        known = self._known.get(path)
        if known is not None:
            return known
        route = template_of(path)
        with self._lock:
            if route not in self._known and len(self._known) >= self.max_routes:
                self.overflowed += 1
                return OTHER
            # Cache both the raw path (when it is a template already) and the template.
            if len(self._known) < self.max_routes:
                self._known[route] = route
        return route
