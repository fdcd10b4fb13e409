"""Named, scoped bearer tokens for everything but /health: ``Authorization: Bearer <token>``.

Scopes nest: ``read`` (dashboard, alert lists, health details, metrics) <
``operate`` (+ resolve, acknowledge, silence) < ``admin`` (+ store query,
cleanup, archive, reload). Tokens come from ``api.tokens``, from
``api.tokens_file`` (a YAML list of ``{name, scope, token}``, re-read when it
changes, so a token is rotated without a restart) and, for compatibility,
``api.token`` / ``TOCSIN_API_TOKEN`` as an admin token named ``admin``. The
token's name is the actor recorded for every action: a name sent by the
client is never trusted.

Every presented token is compared with every known one in constant time
(``hmac.compare_digest``), so timing tells neither how much of a guess was
right nor which token it was close to. With no token configured every
protected route answers 401: an unconfigured service is closed, not open.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr, TypeAdapter, ValidationError

from tocsin.core.config import ApiConfig, ApiTokenConfig

log = logging.getLogger(__name__)

BEARER = HTTPBearer(auto_error=False, description="A token from api.tokens, api.tokens_file or TOCSIN_API_TOKEN.")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tocsin"'}
SCOPES = ("read", "operate", "admin")
FILE_CHECK_S = 1.0
"""How often the tokens file's mtime is looked at (a rotated token works within this)."""
_TOKENS = TypeAdapter(list[ApiTokenConfig])


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name and scope."""

    name: str
    scope: str

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


class TokenAuth:
    """The set of valid tokens and the FastAPI dependencies that require a scope.

    ``Depends(auth.require("operate"))`` admits a token of that scope or more
    and hands the route its ``Principal``; ``Depends(auth)`` is ``require("read")``.
    """

    def __init__(self, api: ApiConfig | SecretStr | None) -> None:
        if not isinstance(api, ApiConfig):  # a bare token (tests, older callers): one admin token
            api = ApiConfig(token=api)
        self._static = [(t.token.get_secret_value().encode(), Principal(t.name, t.scope)) for t in api.tokens]
        if api.token is not None and api.token.get_secret_value():
            self._static.append((api.token.get_secret_value().encode(), Principal("admin", "admin")))
        self._file = Path(api.tokens_file) if api.tokens_file else None
        self._file_entries: list[tuple[bytes, Principal]] = []
        self._file_stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._reload()

    # -- the tokens file -------------------------------------------------------------------

    def _reload(self) -> None:
        """Re-reads the tokens file when its mtime or size changed; a broken file keeps the old tokens."""
        if self._file is None:
            return
        with self._lock:
            now = time.monotonic()
            if self._file_stamp is not None and now - self._checked < FILE_CHECK_S:
                return
            self._checked = now
            try:
                st = os.stat(self._file)
            except OSError as exc:
                if self._file_entries:
                    log.warning("API tokens file unreadable; its tokens are dropped",
                                extra={"path": str(self._file), "error": exc.strerror})
                self._file_entries, self._file_stamp = [], (0, 0)
                return
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._file_stamp:
                return
            try:
                entries = _TOKENS.validate_python(yaml.safe_load(self._file.read_text()) or [])
            except (OSError, yaml.YAMLError, ValidationError) as exc:
                # The message names fields, never values: a token must not reach the log.
                why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()) \
                    if isinstance(exc, ValidationError) else type(exc).__name__
                log.error("API tokens file rejected; the previous tokens stay", extra={"path": str(self._file),
                                                                                      "error": why})
                self._file_stamp = stamp
                return
            self._file_entries = [(t.token.get_secret_value().encode(), Principal(t.name, t.scope))
                                  for t in entries]
            self._file_stamp = stamp
            log.info("API tokens file loaded", extra={"path": str(self._file), "tokens": len(entries)})

    # -- checks ----------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        self._reload()
        return bool(self._static or self._file_entries)

    def principal(self, presented: str | None) -> Principal | None:
        """The token's principal, or None; compares against every token (constant time each)."""
        if presented is None:
            return None
        self._reload()
        given = presented.encode("utf-8", "surrogateescape")
        found = None
        for secret, who in (*self._static, *self._file_entries):
            if hmac.compare_digest(given, secret) and found is None:
                found = who
        return found

    def check(self, presented: str | None) -> bool:
        return self.principal(presented) is not None

    def require(self, scope: str) -> Callable[..., Awaitable[Principal]]:
        """A dependency admitting tokens of ``scope`` or more: 401 without a valid token, 403 below the scope."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")

        async def dependency(creds: HTTPAuthorizationCredentials | None = Security(BEARER)) -> Principal:
            if not self.configured:
                raise HTTPException(401, "no API token is configured on the server: set TOCSIN_API_TOKEN or "
                                         "api.tokens", headers=CHALLENGE)
            who = self.principal(creds.credentials if creds is not None else None)
            if who is None:
                raise HTTPException(401, "missing or wrong bearer token", headers=CHALLENGE)
            if not who.allows(scope):
                raise HTTPException(403, f"token {who.name!r} has scope {who.scope}; this needs {scope}")
            return who

        dependency.__name__ = f"require_{scope}"
        return dependency

    async def __call__(self, creds: HTTPAuthorizationCredentials | None = Security(BEARER)) -> Principal:
        return await self.require("read")(creds)


def scope_responses() -> dict[int | str, dict[str, Any]]:
    """The 401/403 answers every protected route documents."""
    from tocsin.processors.http.models import ErrorBody

    return {401: {"model": ErrorBody, "description": "No or wrong token"},
            403: {"model": ErrorBody, "description": "The token's scope is too small"}}
