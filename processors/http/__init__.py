"""The processor service's HTTP API: ``create_app(view, cfg)`` and ``serve(app, cfg)`` to run it in a thread."""

from tocsin.processors.http.app import create_app
from tocsin.processors.http.server import serve, stop

__all__ = ["create_app", "serve", "stop"]
