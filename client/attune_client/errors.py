"""Typed errors for Attune clients: one class per server error code, plus client-side failures.

Every error the server reports carries an :class:`~attune_client.wire.ErrorCode`; the client raises
the class that names its cause, so callers catch exactly what they can handle::

    AttuneError
    ├── InvalidRequestError           422 invalid_request
    │   ├── ActionEmptyError          422 action_empty
    │   └── ActionTooLongError        422 action_too_long
    ├── NotFoundError                 404 not_found (no such route), or 404 without a known code
    │   ├── EpisodeNotFoundError      404 episode_not_found
    │   └── PersonaNotFoundError      404 persona_not_found
    ├── ConflictError                 409 without a known code
    │   ├── EpisodeFinishedError      409 episode_finished
    │   ├── EpisodeBusyError          409 episode_busy
    │   └── RequestConflictError      409 request_conflict
    ├── AuthenticationError           401 unauthorized
    ├── PermissionDeniedError         403 forbidden
    ├── MethodNotAllowedError         405 method_not_allowed
    ├── BackendUnavailableError       503 backend_unavailable
    ├── ServerError                   500 internal, and any status or body the client does not know
    ├── TransportError                no response: connection refused or reset, timeout
    └── ResetNeeded                   ``AttuneEnv.step`` before ``reset`` (also a gymnasium ResetNeeded)

:func:`error_from_response` turns a non-2xx response into one of these.
"""

from __future__ import annotations

import json
from typing import Any

from gymnasium.error import ResetNeeded as _GymnasiumResetNeeded

from attune_client.wire import ErrorCode

__all__ = [
    "ERROR_CLASSES",
    "ActionEmptyError",
    "ActionTooLongError",
    "AttuneError",
    "AuthenticationError",
    "BackendUnavailableError",
    "ConflictError",
    "EpisodeBusyError",
    "EpisodeFinishedError",
    "EpisodeNotFoundError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "NotFoundError",
    "PermissionDeniedError",
    "PersonaNotFoundError",
    "RequestConflictError",
    "ResetNeeded",
    "ServerError",
    "TransportError",
    "error_from_response",
]


class AttuneError(Exception):
    """Base of every error raised by the Attune client.

    Attributes:
        message: Human-readable explanation, as the server wrote it when there was a response.
        code: The server's error code, or ``None`` when the server sent none (or there was no response).
        status_code: HTTP status of the response, or ``None`` when there was no response.
    """

    def __init__(self, message: str, *, code: ErrorCode | None = None, status_code: int | None = None) -> None:
        """Create the error.

        Args:
            message: Human-readable explanation.
            code: The server's error code, if any.
            status_code: HTTP status of the response, if any.
        """
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code

    def __repr__(self) -> str:
        """Show the class, message, code and status."""
        code = self.code.value if self.code is not None else None
        return f"{type(self).__name__}({self.message!r}, code={code!r}, status_code={self.status_code!r})"


class InvalidRequestError(AttuneError):
    """The server rejected the request body or parameters (422)."""


class ActionEmptyError(InvalidRequestError):
    """The supporter's reply was empty or only whitespace (422)."""


class ActionTooLongError(InvalidRequestError):
    """The supporter's reply exceeded the server's length limit (422)."""


class NotFoundError(AttuneError):
    """Something the request named does not exist, or the path is no route of the server (404)."""


class EpisodeNotFoundError(NotFoundError):
    """The episode id is unknown, deleted or expired (404)."""


class PersonaNotFoundError(NotFoundError):
    """The persona id is not served by this server (404)."""


class ConflictError(AttuneError):
    """The request conflicts with the episode's current state (409)."""


class EpisodeFinishedError(ConflictError):
    """The episode has terminated or been truncated; call ``reset`` (409)."""


class EpisodeBusyError(ConflictError):
    """Another step of the same episode is in progress (409)."""


class RequestConflictError(ConflictError):
    """The ``request_id`` was already used with a different action (409)."""


class AuthenticationError(AttuneError):
    """The API key is missing or wrong (401)."""


class PermissionDeniedError(AttuneError):
    """The API key is valid but may not do this (403)."""


class MethodNotAllowedError(AttuneError):
    """The route exists but not with this HTTP method; the client and server versions likely differ (405)."""


class BackendUnavailableError(AttuneError):
    """The server's language-model backend failed; the episode is unchanged and a retry may succeed (503)."""


class ServerError(AttuneError):
    """The server failed (500), or answered with a status or body this client does not understand."""


class TransportError(AttuneError):
    """No usable response arrived: the connection failed or timed out (after any retries).

    The underlying ``httpx`` exception is the ``__cause__``.
    """


class ResetNeeded(AttuneError, _GymnasiumResetNeeded):
    """``AttuneEnv.step`` was called with no current episode: call ``reset`` first.

    Also a :class:`gymnasium.error.ResetNeeded`, so code written for any Gymnasium env catches it.
    """


ERROR_CLASSES: dict[ErrorCode, type[AttuneError]] = {
    ErrorCode.invalid_request: InvalidRequestError,
    ErrorCode.action_empty: ActionEmptyError,
    ErrorCode.action_too_long: ActionTooLongError,
    ErrorCode.episode_not_found: EpisodeNotFoundError,
    ErrorCode.persona_not_found: PersonaNotFoundError,
    ErrorCode.episode_finished: EpisodeFinishedError,
    ErrorCode.episode_busy: EpisodeBusyError,
    ErrorCode.request_conflict: RequestConflictError,
    ErrorCode.unauthorized: AuthenticationError,
    ErrorCode.forbidden: PermissionDeniedError,
    ErrorCode.backend_unavailable: BackendUnavailableError,
    ErrorCode.not_found: NotFoundError,
    ErrorCode.method_not_allowed: MethodNotAllowedError,
    ErrorCode.internal: ServerError,
}
"""The exception class raised for each server error code."""

# Used when the body carries no code we know, e.g. a proxy's HTML error page or a newer server's code.
_STATUS_CLASSES: dict[int, type[AttuneError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    422: InvalidRequestError,
    503: BackendUnavailableError,
}

_SNIPPET_CHARS = 200


def error_from_response(status_code: int, body: bytes | str | dict[str, Any] | None) -> AttuneError:
    """Build the typed error for a non-2xx response.

    A body shaped like :class:`~attune_client.wire.ErrorBody` selects the class by its code (see
    :data:`ERROR_CLASSES`). Without a known code (not JSON, another shape, a code newer than this
    client) the status alone chooses, and :class:`ServerError` covers statuses with no class of their
    own. The body is read leniently: extra fields from a newer server do not hide its code.

    Args:
        status_code: HTTP status of the response.
        body: The raw response body, or the already decoded JSON.

    Returns:
        The error to raise; the caller raises it.
    """
    data: Any = body
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    error = data.get("error") if isinstance(data, dict) else None
    code: ErrorCode | None = None
    message: str | None = None
    if isinstance(error, dict):
        if isinstance(error.get("message"), str):
            message = error["message"]
        try:
            code = ErrorCode(error.get("code"))
        except (TypeError, ValueError):
            code = None

    cls = ERROR_CLASSES[code] if code is not None else _STATUS_CLASSES.get(status_code, ServerError)
    if message is None:
        message = f"HTTP {status_code}{_describe_body(body)}"
    return cls(message, code=code, status_code=status_code)


def _describe_body(body: bytes | str | dict[str, Any] | None) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    elif body is not None and not isinstance(body, str):
        body = json.dumps(body, ensure_ascii=False)
    text = " ".join((body or "").split())
    if not text:
        return " with an empty body"
    if len(text) > _SNIPPET_CHARS:
        text = text[:_SNIPPET_CHARS] + "..."
    return f": {text}"
