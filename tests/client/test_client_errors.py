"""Server error bodies map to typed client exceptions."""

from __future__ import annotations

import json

import gymnasium
import pytest

from attune_client.errors import (
    ERROR_CLASSES,
    ActionEmptyError,
    ActionTooLongError,
    AttuneError,
    AuthenticationError,
    BackendUnavailableError,
    ConflictError,
    EpisodeBusyError,
    EpisodeFinishedError,
    EpisodeNotFoundError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PermissionDeniedError,
    PersonaNotFoundError,
    RequestConflictError,
    ResetNeeded,
    ServerError,
    error_from_response,
)
from attune_client.wire import ErrorCode


def body(code: str, message: str = "it went wrong") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def test_every_error_code_is_mapped() -> None:
    assert set(ERROR_CLASSES) == set(ErrorCode)
    assert all(issubclass(cls, AttuneError) for cls in ERROR_CLASSES.values())


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (422, ErrorCode.invalid_request, InvalidRequestError),
        (422, ErrorCode.action_empty, ActionEmptyError),
        (422, ErrorCode.action_too_long, ActionTooLongError),
        (404, ErrorCode.episode_not_found, EpisodeNotFoundError),
        (404, ErrorCode.persona_not_found, PersonaNotFoundError),
        (409, ErrorCode.episode_finished, EpisodeFinishedError),
        (409, ErrorCode.episode_busy, EpisodeBusyError),
        (409, ErrorCode.request_conflict, RequestConflictError),
        (401, ErrorCode.unauthorized, AuthenticationError),
        (403, ErrorCode.forbidden, PermissionDeniedError),
        (503, ErrorCode.backend_unavailable, BackendUnavailableError),
        (404, ErrorCode.not_found, NotFoundError),
        (405, ErrorCode.method_not_allowed, MethodNotAllowedError),
        (500, ErrorCode.internal, ServerError),
    ],
)
def test_code_selects_class(status: int, code: ErrorCode, cls: type[AttuneError]) -> None:
    err = error_from_response(status, body(code.value, f"{code.value} happened"))
    assert type(err) is cls
    assert (err.code, err.status_code, err.message) == (code, status, f"{code.value} happened")
    assert str(err) == f"{code.value} happened"


def test_hierarchy_groups_by_status() -> None:
    assert issubclass(ActionEmptyError, InvalidRequestError)
    assert issubclass(ActionTooLongError, InvalidRequestError)
    assert issubclass(EpisodeNotFoundError, NotFoundError)
    assert issubclass(PersonaNotFoundError, NotFoundError)
    for cls in (EpisodeFinishedError, EpisodeBusyError, RequestConflictError):
        assert issubclass(cls, ConflictError)


def test_non_json_502_is_server_error() -> None:
    err = error_from_response(502, b"<html><body>502 Bad Gateway</body></html>")
    assert type(err) is ServerError
    assert err.code is None and err.status_code == 502
    assert "HTTP 502" in err.message and "Bad Gateway" in err.message


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (405, MethodNotAllowedError),
        (409, ConflictError),
        (422, InvalidRequestError),
        (503, BackendUnavailableError),
        (500, ServerError),
        (418, ServerError),
        (504, ServerError),
    ],
)
def test_status_fallback_without_code(status: int, cls: type[AttuneError]) -> None:
    err = error_from_response(status, "not json at all")
    assert type(err) is cls
    assert err.code is None


def test_unknown_code_falls_back_to_status_but_keeps_message() -> None:
    err = error_from_response(409, body("brand_new_code", "a newer server says no"))
    assert type(err) is ConflictError
    assert err.code is None and err.message == "a newer server says no"


def test_extra_fields_do_not_hide_the_code() -> None:
    data = {"error": {"code": "episode_busy", "message": "busy", "retry_in": 2}, "trace_id": "abc"}
    err = error_from_response(409, data)
    assert type(err) is EpisodeBusyError and err.message == "busy"


@pytest.mark.parametrize("raw", [b"", None, b"null", b"[1, 2]", b'{"error": "text"}', b'{"error": {"code": [1]}}'])
def test_odd_bodies_fall_back(raw: bytes | None) -> None:
    err = error_from_response(500, raw)
    assert type(err) is ServerError and err.message.startswith("HTTP 500")


def test_accepts_str_and_dict_bodies() -> None:
    assert type(error_from_response(404, body("episode_not_found").decode())) is EpisodeNotFoundError
    assert type(error_from_response(404, json.loads(body("persona_not_found")))) is PersonaNotFoundError


def test_long_bodies_are_truncated_in_the_message() -> None:
    err = error_from_response(502, "x" * 10_000)
    assert len(err.message) < 300 and err.message.endswith("...")


def test_reset_needed_is_also_gymnasium_reset_needed() -> None:
    err = ResetNeeded("call reset")
    assert isinstance(err, AttuneError) and isinstance(err, gymnasium.error.ResetNeeded)
    assert err.code is None and err.status_code is None


def test_repr_shows_code_and_status() -> None:
    err = error_from_response(404, body("episode_not_found", "gone"))
    assert repr(err) == "EpisodeNotFoundError('gone', code='episode_not_found', status_code=404)"
