"""The FastAPI application: ``create_app(settings)`` wires the runtime, the routers and the error mapping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from attune_client.wire import ErrorBody, ErrorCode, ErrorDetail
from env_server.api.auth import ApiKeyMiddleware
from env_server.api.routes import episodes, health, personas, score
from env_server.api.routes import metrics as metrics_route
from env_server.errors import AttuneServerError
from env_server.llm.protocol import Simulator
from env_server.metrics import Metrics
from env_server.personas.loader import PersonaCatalog
from env_server.runtime import Runtime
from env_server.sessions.factory import build_store
from env_server.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("attune.app")

_HTTP_CODES = {404: ErrorCode.not_found, 405: ErrorCode.method_not_allowed}


def _error(status: int, code: ErrorCode, message: str, metrics: Metrics) -> JSONResponse:
    metrics.errors.labels(code.value).inc()
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "malformed request"


def _install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(AttuneServerError)
    async def attune_error(_: Request, exc: AttuneServerError) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message, metrics)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, ErrorCode.invalid_request, _describe(exc), metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.invalid_request)
        return _error(exc.status_code, code, str(exc.detail), metrics)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, ErrorCode.internal, "internal server error; see the server log", metrics)


def create_app(settings: Settings | None = None, *, simulator: Simulator | None = None) -> FastAPI:
    """The Attune API. ``simulator`` replaces the configured backend (for embedding and tests)."""
    settings = settings or Settings()
    catalog = PersonaCatalog.load(settings.packs)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings=settings, catalog=catalog, store=build_store(settings), metrics=metrics)
        app.state.runtime = runtime
        loading = asyncio.create_task(runtime.load(simulator))
        try:
            yield
        finally:
            await loading
            await runtime.aclose()

    app = FastAPI(
        title="Attune",
        version="0.1.0",
        summary="Sentient-agent environments for training emotionally attuned language models.",
        lifespan=lifespan,
    )
    _install_error_handlers(app, metrics)
    for module in (episodes, health, metrics_route, personas, score):
        app.include_router(module.router)
    app.add_middleware(
        ApiKeyMiddleware,
        api_keys=settings.api_keys,
        admin_keys=settings.admin_keys,
        reject=lambda error: _error(error.status_code, error.code, error.message, metrics),
    )
    return app
