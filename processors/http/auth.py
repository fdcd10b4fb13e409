"""Bearer-token auth for everything but /health: ``Authorization: Bearer <TOCSIN_API_TOKEN>``.

The token is compared in constant time (``hmac.compare_digest``) so response
timing does not leak how much of a guess was right. With no token configured
every protected route answers 401: an unconfigured service is closed, not open.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

BEARER = HTTPBearer(auto_error=False, description="TOCSIN_API_TOKEN (api.token in the config file).")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tocsin"'}


class TokenAuth:
    """A FastAPI dependency that admits a request carrying the configured bearer token."""

    def __init__(self, token: SecretStr | None) -> None:
        self._expected = token.get_secret_value().encode() if token is not None else None

    @property
    def configured(self) -> bool:
        return bool(self._expected)

    def check(self, presented: str | None) -> bool:
        if not self._expected or presented is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), self._expected)

    async def __call__(self, creds: HTTPAuthorizationCredentials | None = Security(BEARER)) -> None:
        if not self.configured:
            raise HTTPException(401, "no API token is configured on the server: set TOCSIN_API_TOKEN",
                                headers=CHALLENGE)
        if creds is None or not self.check(creds.credentials):
            raise HTTPException(401, "missing or wrong bearer token", headers=CHALLENGE)
