"""Notification texts from jinja2 templates, sandboxed, with a fallback that never loses an alert.

Each receiver type names the parts it needs (email: subject, text, html;
Slack: title, text; PagerDuty: a ``summary`` per alert). A part is looked up,
first hit wins:

1. the route's inline override (``route.templates[part]``),
2. the receiver's inline override (``receivers[].templates[part]``),
3. ``<type>.<part>.j2`` then ``default.<part>.j2`` in ``notify.template_dir``, then
4. the same two names among the built-in templates (``sinks/notify/builtin_templates``).

Templates run in jinja2's ``SandboxedEnvironment`` (a template cannot reach
Python internals) with ``StrictUndefined`` (a typo is an error, not an empty
string). HTML parts are autoescaped; Slack parts escape ``&``, ``<`` and ``>``
as Slack's mrkdwn requires. A template that fails to render is counted and
logged, and the next candidate renders instead, down to the built-in
default and, should even that fail, a fixed line: a template error never
drops a notification (Alertmanager #5322, #3490).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jinja2 import BaseLoader, FileSystemLoader, StrictUndefined, Template, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from tocsin.sinks.notify.receivers.base import Notification

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "builtin_templates"
HTML_PARTS = frozenset({"html"})
ONE_LINE_PARTS = frozenset({"title", "subject", "summary"})
MAX_INLINE_CACHE = 256


def slack_escape(value: Any) -> str:
    """Slack mrkdwn control characters (api.slack.com/reference/surfaces/formatting#escaping)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fmt_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class _Flavour:
    """One sandboxed environment family: plain text, HTML (autoescaped) or Slack (escaped output)."""

    def __init__(self, loader: BaseLoader | None, builtin_loader: BaseLoader, autoescape: bool,
                 finalize: Any = None) -> None:
        def make(ld: BaseLoader) -> SandboxedEnvironment:
            env = SandboxedEnvironment(loader=ld, autoescape=autoescape, undefined=StrictUndefined,
                                       trim_blocks=True, lstrip_blocks=True, finalize=finalize)
            env.filters["slack_escape"] = slack_escape
            env.filters["fmt"] = _fmt_value
            return env

        self.builtin = make(builtin_loader)
        # Inline templates compile in the operator's environment, or the built-in one when there is none.
        self.env = make(loader) if loader is not None else self.builtin
        self.has_dir = loader is not None


class TemplateRenderer:
    """Renders the parts a receiver needs; counts failures (``failures``) for /metrics and tests."""

    def __init__(self, template_dir: Path | None = None) -> None:
        builtin = FileSystemLoader(str(BUILTIN_DIR))
        loader = FileSystemLoader(str(template_dir)) if template_dir else None
        self._flavours = {
            "text": _Flavour(loader, builtin, autoescape=False),
            "html": _Flavour(loader, builtin, autoescape=True),
            "slack": _Flavour(loader, builtin, autoescape=False, finalize=slack_escape),
        }
        self._inline: dict[tuple[str, str], Template] = {}
        self._lock = threading.Lock()
        self.failures: Counter[str] = Counter()  # "<receiver type>.<part>" -> failed renders

    @staticmethod
    def flavour_of(receiver_type: str, part: str) -> str:
        if part in HTML_PARTS:
            return "html"
        return "slack" if receiver_type == "slack" else "text"

    def _compiled_inline(self, flavour: str, source: str) -> Template:
        key = (flavour, source)
        with self._lock:
            tpl = self._inline.get(key)
        if tpl is None:
            tpl = self._flavours[flavour].env.from_string(source)
            with self._lock:
                if len(self._inline) >= MAX_INLINE_CACHE:
                    self._inline.clear()
                self._inline[key] = tpl
        return tpl

    def _candidates(self, receiver_type: str, part: str, overrides: Iterable[tuple[str, str | None]],
                    flavour: str) -> Iterable[tuple[str, Any]]:
        """(origin, thunk returning a Template) in order of precedence."""
        fl = self._flavours[flavour]
        for origin, source in overrides:
            if source is not None:
                yield origin, lambda s=source: self._compiled_inline(flavour, s)
        envs = [(fl.env, "template_dir")] if fl.has_dir else []
        for env, where in [*envs, (fl.builtin, "built-in")]:
            for name in (f"{receiver_type}.{part}.j2", f"default.{part}.j2"):
                yield f"{where}:{name}", lambda e=env, n=name: e.get_template(n)

    def render_part(self, receiver_type: str, part: str, context: dict[str, Any],
                    overrides: Iterable[tuple[str, str | None]] = (), receiver: str = "") -> str:
        """The first candidate that renders; failures are counted and logged, never raised."""
        flavour = self.flavour_of(receiver_type, part)
        for origin, thunk in self._candidates(receiver_type, part, overrides, flavour):
            try:
                text = thunk().render(context).strip()
                return " ".join(text.split()) if part in ONE_LINE_PARTS else text
            except TemplateNotFound:
                continue
            except Exception as exc:  # any template error: syntax, undefined, sandbox violation, filter error
                with self._lock:
                    self.failures[f"{receiver_type}.{part}"] += 1
                log.warning("Template failed to render; falling back to the next one.",
                            extra={"receiver": receiver, "part": part, "template": origin,
                                   "error": f"{type(exc).__name__}: {exc}"})
        with self._lock:
            self.failures[f"{receiver_type}.{part}.builtin"] += 1
        return _last_resort(part, context)

    def render(self, notification: Notification, receiver_type: str, parts: Iterable[str],
               alert_parts: Iterable[str] = (), route_templates: dict[str, str] | None = None,
               receiver_templates: dict[str, str] | None = None) -> dict[str, str]:
        """Every part a receiver needs; per-alert parts are keyed ``<part>@<fingerprint>``."""
        route_templates = route_templates or {}
        receiver_templates = receiver_templates or {}
        ctx = notification.context()
        out: dict[str, str] = {}
        for part in parts:
            overrides = [("route", route_templates.get(part)), ("receiver", receiver_templates.get(part))]
            out[part] = self.render_part(receiver_type, part, ctx, overrides, notification.receiver)
        for part in alert_parts:
            overrides = [("route", route_templates.get(part)), ("receiver", receiver_templates.get(part))]
            for alert_ctx in ctx["alerts"]:
                out[f"{part}@{alert_ctx['fingerprint']}"] = self.render_part(
                    receiver_type, part, {**ctx, "alert": alert_ctx}, overrides, notification.receiver)
        return out

    @property
    def failure_count(self) -> int:
        with self._lock:
            return sum(self.failures.values())


def _last_resort(part: str, ctx: dict[str, Any]) -> str:
    """A fixed text from the context alone, for when every template failed."""
    alerts = ctx.get("alerts") or ([ctx["alert"]] if "alert" in ctx else [])
    head = f"[{str(ctx.get('status', 'firing')).upper()}] {len(alerts)} alert(s)"
    lines = [f"{a.get('status')} {a.get('severity')} {a.get('rule')} {a.get('labels')}" for a in alerts]
    if part in ("title", "subject", "summary"):
        return head
    text = "\n".join([head, *lines])
    if part in HTML_PARTS:
        from markupsafe import escape

        return f"<pre>{escape(text)}</pre>"
    return text
