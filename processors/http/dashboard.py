"""The dashboard page's assets: hand-written HTML, JS and CSS shipped in ``static/``, served by the app.

Nothing comes from a CDN, so the page works on a network with no internet.
The page carries no data: its script logs in (token kept in sessionStorage,
sent as a bearer header, never in a URL), polls ``/api/dashboard`` and draws
every event-derived string with ``textContent`` (never as HTML).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).with_name("static")
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class DashboardAssets:
    html: str
    files: dict[str, tuple[bytes, str]]  # URL name under /dashboard/ -> (body, media type)

    @classmethod
    def load(cls, directory: Path = STATIC_DIR) -> DashboardAssets:
        """Reads the page and its script and style once, at app creation."""
        files = {p.name: (p.read_bytes(), MEDIA_TYPES[p.suffix]) for p in sorted(directory.iterdir())
                 if p.suffix in MEDIA_TYPES}
        return cls(html=(directory / "dashboard.html").read_text(encoding="utf-8"), files=files)
