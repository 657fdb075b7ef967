"""API keys: a bearer key on every request except ``/healthz`` when keys are configured.

An ASGI middleware rather than a dependency, so ``/docs``, ``/openapi.json`` and ``/metrics`` are covered
too. Keys are compared in constant time and never logged; an episode is bound to a fingerprint of the key
that created it (see :class:`Caller`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from env_server.errors import AttuneServerError, Unauthorized

__all__ = ["OPEN_PATHS", "ApiKeyMiddleware", "Caller", "fingerprint"]

OPEN_PATHS = frozenset({"/healthz"})


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``owner`` binds episodes (None when keys are off); ``admin`` may read internals."""

    owner: str | None
    admin: bool


ANONYMOUS = Caller(owner=None, admin=True)
"""With no keys configured the server is an operator's own: everything, internals included, is open."""


def fingerprint(key: str) -> str:
    """A stable, non-reversible name for a key, stored with the episodes it creates."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class ApiKeyMiddleware:
    """Checks ``Authorization: Bearer <key>`` and puts a :class:`Caller` in the request state."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: list[SecretStr],
        admin_keys: list[SecretStr],
        reject: Callable[[AttuneServerError], ASGIApp],
    ) -> None:
        self.app = app
        self.enabled = bool(api_keys or admin_keys)
        self._keys = [(key.get_secret_value().encode(), False) for key in api_keys]
        self._keys += [(key.get_secret_value().encode(), True) for key in admin_keys]
        self._reject = reject

    def _caller(self, presented: bytes) -> Caller | None:
        match = None
        # Compare against every key, without stopping early, so timing says nothing about which matched.
        for key, admin in self._keys:
            if hmac.compare_digest(presented, key) and match is None:
                match = Caller(owner=fingerprint(key.decode()), admin=admin)
        return match

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if not self.enabled or scope["path"] in OPEN_PATHS:
            state["caller"] = ANONYMOUS if not self.enabled else Caller(owner=None, admin=False)
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        caller = self._caller(token.strip()) if scheme.lower() == b"bearer" and token.strip() else None
        if caller is None:
            await self._reject(Unauthorized("a valid API key is required: Authorization: Bearer <key>"))(
                scope, receive, send
            )
            return
        state["caller"] = caller
        await self.app(scope, receive, send)
