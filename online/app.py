"""The FastAPI application: ``POST /v1/models/{usecase}/predict``, health, readiness, metrics, admin flags."""

# No `from __future__ import annotations`: FastAPI resolves the Depends() annotations of the local
# dependencies below at runtime.
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from migrate.errors import InvalidFlagError, TransitionRefusedError
from migrate.usecase import UseCase
from online.metrics import ServingMetrics
from online.schemas import FlagChange, PredictRequest, PredictResponse

if TYPE_CHECKING:
    from online.serving import UseCaseServer

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 256 * 1024


@dataclass
class ServingDeps:
    """Everything the app serves with, built once per worker process."""

    servers: "dict[str, UseCaseServer]"
    usecases: dict[str, UseCase]
    metrics: ServingMetrics
    flag_store: Any
    admin_token: str | None
    readiness: Callable[[], dict[str, str]]
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)


def _key_errors(usecase: UseCase, entities: list[dict[str, int | str]]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    expected = {key.name: key.type for key in usecase.entity.keys}
    for i, entity in enumerate(entities):
        for name in entity.keys() - expected.keys():
            errors.append(
                {
                    "loc": ("body", "entities", i, name),
                    "type": "extra_forbidden",
                    "msg": f"unknown key column; {usecase.name} is keyed by {list(expected)}",
                    "input": name,
                }
            )
        for name, kind in expected.items():
            value = entity.get(name)
            if value is None:
                errors.append(
                    {"loc": ("body", "entities", i, name), "type": "missing", "msg": "Field required", "input": None}
                )
            elif (kind == "int") != (isinstance(value, int) and not isinstance(value, bool)):
                errors.append(
                    {
                        "loc": ("body", "entities", i, name),
                        "type": f"{kind}_type",
                        "msg": f"Input should be {'an integer' if kind == 'int' else 'a string'}",
                        "input": value,
                    }
                )
    return errors


def create_app(deps: ServingDeps) -> FastAPI:
    """The prediction service over prepared dependencies."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for close in reversed(deps.on_shutdown):
            try:
                close()
            except Exception:
                log.exception("shutdown step failed")

    app = FastAPI(title="migrate online service", version="1", lifespan=lifespan)
    bearer = HTTPBearer(auto_error=False)
    pid = str(os.getpid())  # create_app runs in each worker process

    @app.middleware("http")
    async def refuse_oversized(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse(
                {"detail": f"request body over {MAX_BODY_BYTES} bytes; send fewer entities per request"},
                status_code=413,
            )
        response = await call_next(request)
        # Which worker answered: several uvicorn workers share one port.
        response.headers["x-worker-pid"] = pid
        return response

    @app.exception_handler(Exception)
    async def no_stack_traces(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)

    def server_for(usecase: str) -> "UseCaseServer":
        server = deps.servers.get(usecase)
        if server is None:
            raise HTTPException(404, f"no use case {usecase!r}; served: {sorted(deps.servers)}")
        return server

    @app.post("/v1/models/{usecase}/predict", response_model=PredictResponse)
    def predict(usecase: str, body: PredictRequest) -> PredictResponse:
        started = time.perf_counter()
        server = server_for(usecase)
        errors = _key_errors(server.usecase, body.entities)
        if errors:
            deps.metrics.requests.labels(usecase, "422").inc()
            raise RequestValidationError(errors)
        response = server.predict(body.entities, body.context)
        deps.metrics.requests.labels(usecase, "200").inc()
        deps.metrics.request_latency.labels(usecase).observe(time.perf_counter() - started)
        return response

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        checks = deps.readiness()
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def admin(
        usecase: str, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> str:
        actor = request.client.host if request.client else "unknown"
        if deps.admin_token is None:
            deps.flag_store.record_refused(
                usecase, actor=actor, source="api", reason="admin API disabled", detail="MIGRATE_ADMIN_TOKEN is not set"
            )
            raise HTTPException(403, "the admin API is disabled: set MIGRATE_ADMIN_TOKEN")
        if credentials is None:
            deps.flag_store.record_refused(
                usecase, actor=actor, source="api", reason="missing bearer token", detail=str(request.url.path)
            )
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode(), deps.admin_token.encode()):
            deps.flag_store.record_refused(
                usecase, actor=actor, source="api", reason="wrong bearer token", detail=str(request.url.path)
            )
            raise HTTPException(403, "wrong bearer token")
        return actor

    @app.put("/v1/admin/flags/{usecase}")
    def set_flag(usecase: str, change: FlagChange, actor: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        if usecase not in deps.usecases:
            raise HTTPException(404, f"no use case {usecase!r}")
        try:
            flag = deps.flag_store.set(
                usecase,
                change.stage,
                change.percent,
                actor=f"{change.actor}@{actor}",
                reason=change.reason,
                source="api",
                force=change.force,
            )
        except InvalidFlagError as exc:
            raise HTTPException(400, str(exc)) from None
        except TransitionRefusedError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"usecase": usecase, "stage": flag.stage, "percent": flag.percent, "revision": flag.revision}

    @app.get("/v1/admin/flags/{usecase}")
    def get_flag(usecase: str, actor: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        flag = deps.flag_store.get(usecase)
        return {"usecase": usecase, "stage": flag.stage, "percent": flag.percent, "revision": flag.revision}

    return app
