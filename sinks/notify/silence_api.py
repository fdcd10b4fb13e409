"""Silences over HTTP: list, create and expire, through the same code as ``tocsin silence`` (``silences.py``).

=================================  ======  =================================================
``GET /api/silences``              token   active and pending silences (``?state=all``: also ended)
``POST /api/silences``             token   creates one: 201 with its id; 400 bad matcher or time
``DELETE /api/silences/{id}``      token   expires one now: 200; 404 unknown or already ended
=================================  ======  =================================================

Mounted by the application on the processor's API server behind its token
(``extra_routers``), so a silence is "operate": its creator is the
authenticated caller, ``api`` (the API has one token, hence one principal),
never a name the body claims. Each request reads the silences topic to its end
(bounded by ``READ_TIMEOUT_S``), so the answer is what every notify sink sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tocsin.core.errors import ConfigError, KafkaError
from tocsin.core.events import iso, now_us
from tocsin.sinks.notify.config import MatcherSpec
from tocsin.sinks.notify.silences import (
    MAX_SILENCE_S,
    Silence,
    create_event,
    expire_event,
    parse_duration,
    parse_start,
    publish,
    read_store,
)

READ_TIMEOUT_S = 10.0
MAX_MATCHERS = 20


class MatcherBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=200)
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str = Field(max_length=1000)


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: list[str | MatcherBody] = Field(min_length=1, max_length=MAX_MATCHERS, description=(
        '`label=value`, `label!=value`, `label=~regex`, `label!~regex` strings, or {"label", "op", "value"}; '
        "all must match."))
    starts_at: str | None = Field(None, max_length=64, description="ISO 8601 or +2h; null: now.")
    ends_at: str | None = Field(None, max_length=64, description="ISO 8601 or +2h from now; or give `duration`.")
    duration: str | None = Field(None, max_length=32, description="30m, 2h, 1h30m, 1d (at most 90 days).")
    comment: str = Field("", max_length=500, description="Why (shown in the list).")


def silence_doc(s: Silence, now: int) -> dict[str, Any]:
    return {"id": s.id, "matchers": [str(m) for m in s.matchers], "starts_at": iso(s.starts_at_us),
            "ends_at": iso(s.ends_at_us), "comment": s.reason, "created_by": s.actor,
            "expired_by": s.expired_by or None, "state": s.state(now)}


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _event(body: SilenceRequest, actor: str) -> dict[str, Any]:
    """The ``silence_create`` ControlEvent for ``body``; raises ``ConfigError`` (400) naming the bad field."""
    matchers = []
    for i, m in enumerate(body.matchers):
        try:
            matchers.append(MatcherSpec.parse(m) if isinstance(m, str) else MatcherSpec(**m.model_dump()))
        except ValueError as exc:
            raise ConfigError(f"matchers[{i}]: {exc}") from None
    start = parse_start(body.starts_at) if body.starts_at else now_us()
    if (body.ends_at is None) == (body.duration is None):
        raise ConfigError("give exactly one of ends_at and duration")
    if body.duration is not None:
        duration_s = parse_duration(body.duration)
    else:
        end = parse_start(body.ends_at)  # type: ignore[arg-type]
        duration_s = (end - start) / 1e6
        if not 0 < duration_s <= MAX_SILENCE_S:
            raise ConfigError(f"ends_at must be after starts_at and at most {MAX_SILENCE_S // 86400} days later")
    return create_event(matchers, duration_s, body.comment, actor, start_us=start)


def silence_router(kafka_cfg: Any, require: Callable[[str], Any]) -> APIRouter:
    """The silence routes over ``kafka_cfg`` (its ``topics.silences``): listing needs a read token, creating
    and expiring an operate token, whose name is recorded as the creator or expirer (``require(scope)`` is
    the API's dependency returning the token's principal)."""
    router = APIRouter(tags=["silences"])
    topic = kafka_cfg.topics.silences

    def store() -> Any:
        return read_store(kafka_cfg, timeout_s=READ_TIMEOUT_S)

    def list_silences(state: Literal["active", "all"] = Query("active"),
                      _who: Any = Depends(require("read"))) -> JSONResponse:
        """Active and pending silences, soonest ending first (``state=all``: the ended ones too)."""
        try:
            silences = store()
        except KafkaError as exc:
            return _error(503, f"the silences topic could not be read: {exc}; retry")
        now = now_us()
        chosen = silences.active(now) if state == "active" else silences.all()
        return JSONResponse({"silences": [silence_doc(s, now) for s in chosen]})

    def create(body: SilenceRequest, who: Any = Depends(require("operate"))) -> JSONResponse:
        """Create a silence (operate): alerts matching every matcher are not notified while it lasts."""
        try:
            event = _event(body, who.name)
        except ConfigError as exc:
            return _error(400, str(exc))
        try:
            publish(kafka_cfg, topic, event)
        except KafkaError as exc:
            return _error(503, f"{exc}; retry")
        return JSONResponse({"id": event["silence_id"], "starts_at": iso(event["starts_at"]),
                             "ends_at": iso(event["ends_at"]), "created_by": who.name}, status_code=201)

    def expire(silence_id: str = Path(min_length=1, max_length=64),
               who: Any = Depends(require("operate"))) -> JSONResponse:
        """End a silence now (operate)."""
        try:
            silence = store().get(silence_id)
        except KafkaError as exc:
            return _error(503, f"the silences topic could not be read: {exc}; retry")
        if silence is None or silence.ends_at_us <= now_us():
            return _error(404, f"no active or pending silence {silence_id!r}")
        try:
            publish(kafka_cfg, topic, expire_event(silence, who.name))
        except KafkaError as exc:
            return _error(503, f"{exc}; retry")
        return JSONResponse({"id": silence_id, "status": "expired"})

    errors = {400: {"description": "A bad matcher or time"}, 503: {"description": "Kafka unreachable; retry"}}
    router.add_api_route("/api/silences", list_silences, methods=["GET"], summary="List silences",
                         responses={503: errors[503]})
    router.add_api_route("/api/silences", create, methods=["POST"], status_code=201, summary="Create a silence",
                         responses=errors)
    router.add_api_route("/api/silences/{silence_id}", expire, methods=["DELETE"], summary="Expire a silence",
                         responses={404: {"description": "Unknown or ended"}, 503: errors[503]})
    return router
