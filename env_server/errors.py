"""One error tree for the server. Each class knows its wire code and HTTP status; app.py maps them once.

AttuneServerError
├── InvalidRequest (422)
│   ├── ActionEmpty (422)
│   └── ActionTooLong (422)
├── EpisodeNotFound (404)
├── PersonaNotFound (404)
├── EpisodeFinished (409)
├── EpisodeBusy (409)
├── RequestConflict (409)
├── Unauthorized (401)
├── Forbidden (403)
└── BackendUnavailable (503)
"""

from __future__ import annotations

from attune_client.wire import ErrorBody, ErrorCode, ErrorDetail

__all__ = [
    "ActionEmpty",
    "ActionTooLong",
    "AttuneServerError",
    "BackendUnavailable",
    "EpisodeBusy",
    "EpisodeFinished",
    "EpisodeNotFound",
    "Forbidden",
    "InvalidRequest",
    "PersonaNotFound",
    "RequestConflict",
    "Unauthorized",
]


class AttuneServerError(Exception):
    """Base of every error the API reports to a client."""

    code: ErrorCode = ErrorCode.internal
    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> ErrorBody:
        """The JSON body sent to the client."""
        return ErrorBody(error=ErrorDetail(code=self.code, message=self.message))


class InvalidRequest(AttuneServerError):
    code, status_code = ErrorCode.invalid_request, 422


class ActionEmpty(InvalidRequest):
    code = ErrorCode.action_empty

    def __init__(self) -> None:
        super().__init__("action is empty: the supporter's reply must contain non-whitespace text")


class ActionTooLong(InvalidRequest):
    code = ErrorCode.action_too_long

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"action has {length} characters; the limit is {limit}")
        self.length, self.limit = length, limit


class EpisodeNotFound(AttuneServerError):
    code, status_code = ErrorCode.episode_not_found, 404

    def __init__(self, episode_id: str) -> None:
        super().__init__(f"episode {episode_id!r} does not exist (unknown, deleted or expired)")
        self.episode_id = episode_id


class PersonaNotFound(AttuneServerError):
    code, status_code = ErrorCode.persona_not_found, 404

    def __init__(self, persona_id: str) -> None:
        super().__init__(f"persona {persona_id!r} is not in any loaded pack")
        self.persona_id = persona_id


class EpisodeFinished(AttuneServerError):
    code, status_code = ErrorCode.episode_finished, 409

    def __init__(self, episode_id: str, status: str) -> None:
        super().__init__(f"episode {episode_id!r} is {status}; reset to start a new one")
        self.episode_id = episode_id


class EpisodeBusy(AttuneServerError):
    code, status_code = ErrorCode.episode_busy, 409

    def __init__(self, episode_id: str) -> None:
        super().__init__(f"episode {episode_id!r} is running another step; retry after it finishes")
        self.episode_id = episode_id


class RequestConflict(AttuneServerError):
    code, status_code = ErrorCode.request_conflict, 409


class Unauthorized(AttuneServerError):
    code, status_code = ErrorCode.unauthorized, 401


class Forbidden(AttuneServerError):
    code, status_code = ErrorCode.forbidden, 403


class BackendUnavailable(AttuneServerError):
    code, status_code = ErrorCode.backend_unavailable, 503
