"""On-call routes of the processor's HTTP API: acknowledge and unacknowledge an incident.

=============================  ======  =====================================================
``POST /api/alerts/ack``       token   publishes an ``ack`` ControlEvent: 202, 404, 409
``POST /api/alerts/unack``     token   publishes an ``unack`` ControlEvent: 202, 404, 409
=============================  ======  =====================================================

Both are "operate" actions (they change what the pipeline does, not what it
stores): they sit behind whatever auth dependency the app mounts them with.
The processor that owns the incident applies the command and emits an
AlertEvent carrying the ack (tocsin.processors.ack), so an answer of 202 means
"published", and the ack shows in /api/alerts once that AlertEvent exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tocsin.core.events import now_us
from tocsin.processors.ack import MAX_ACTOR_CHARS, MAX_NOTE_CHARS, AckActions
from tocsin.processors.http.models import ErrorBody

MAX_ACK_S = 30 * 86400.0
"""An ack for longer than a month is a silence in disguise: use a silence."""


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_id: str = Field(min_length=1, max_length=256)
    note: str = Field("", max_length=MAX_NOTE_CHARS, description="What the acknowledger is doing about it.")
    for_s: float | None = Field(None, gt=0, le=MAX_ACK_S, description="How long the ack holds, in seconds (at "
                                "most 30 days); null: while the incident lasts.")
    actor: str | None = Field(None, max_length=MAX_ACTOR_CHARS, description="Who acknowledges; defaults to `api`.")


class UnackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_id: str = Field(min_length=1, max_length=256)
    actor: str | None = Field(None, max_length=MAX_ACTOR_CHARS, description="Who unacknowledges; defaults to `api`.")


class AckResponse(BaseModel):
    alert_id: str
    status: str = Field(description="accepted: the command was published; the owning processor applies it.")


_STATUS = {"accepted": 202, "unknown": 404, "not_open": 409, "not_acked": 409}
_DETAIL = {"unknown": "no alert with id {id!r}", "not_open": "alert {id!r} is not open (already resolved)",
           "not_acked": "alert {id!r} is not acknowledged"}
RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown alert id"},
    409: {"model": ErrorBody, "description": "The incident is closed, or (unack) not acknowledged"},
    400: {"model": ErrorBody, "description": "The body is not JSON"},
    503: {"model": ErrorBody, "description": "The control topic could not be reached; retry"},
}


def _answer(alert_id: str, outcome: str) -> JSONResponse:
    code = _STATUS.get(outcome, 500)
    if code == 202:
        return JSONResponse({"alert_id": alert_id, "status": outcome}, status_code=202)
    return JSONResponse({"detail": _DETAIL[outcome].format(id=alert_id)}, status_code=code)


def ack_router(actions: AckActions, require: Callable[[str], Any]) -> APIRouter:
    """The ack routes over ``actions``; operate tokens only, and the token's name is the actor recorded
    (an ``actor`` in the body is ignored: a client never names who acted)."""
    router = APIRouter(tags=["alerts"])

    def ack(body: AckRequest, who: Any = Depends(require("operate"))) -> JSONResponse:
        """Acknowledge an open incident (operate): repeat notifications stop while the ack holds.

        Runs in the thread pool: publishing waits for the broker's acknowledgement.
        """
        expires = now_us() + int(body.for_s * 1e6) if body.for_s else None
        return _answer(body.alert_id, actions.ack(body.alert_id, body.note, expires, who.name))

    def unack(body: UnackRequest, who: Any = Depends(require("operate"))) -> JSONResponse:
        """Withdraw the acknowledgement of an open incident (operate): repeat notifications start again."""
        return _answer(body.alert_id, actions.unack(body.alert_id, who.name))

    router.add_api_route("/api/alerts/ack", ack, methods=["POST"], status_code=202, response_model=AckResponse,
                         responses=RESPONSES, summary="Acknowledge an alert")
    router.add_api_route("/api/alerts/unack", unack, methods=["POST"], status_code=202, response_model=AckResponse,
                         responses=RESPONSES, summary="Unacknowledge an alert")
    return router
