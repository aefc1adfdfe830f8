"""The FastAPI application: ``POST /v1/models/{usecase}/predict``, health, readiness, metrics, admin flags."""

# No `from __future__ import annotations`: FastAPI resolves the Depends() annotations of the local
# dependencies below at runtime.
import inspect
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from migrate.usecase import UseCase
from online.serving.admin import REFUSED, admin_router, bearer_caller
from online.serving.admin_models import models_router
from online.serving.docs_pages import add_docs_pages
from online.serving.fast_predict import PredictFastPath
from online.serving.guard import MAX_BODY_BYTES, RequestGuard
from online.serving.heap import settle_heap
from online.serving.metrics import ServingMetrics, exposition
from online.serving.openapi import document_bodies, predict_operation, predict_responses
from online.serving.reports import reports_router
from online.serving.schemas import PredictRequest, PredictResponse
from online.serving.timing import REQUEST_TIMING, ServerTiming
from online.serving.validation import context_errors, integral_keys, key_errors

if TYPE_CHECKING:
    from online.serving.usecase_server import UseCaseServer

__all__ = ["MAX_BODY_BYTES", "ModelAdmin", "ServingDeps", "create_app"]

log = logging.getLogger(__name__)


@dataclass
class ServingDeps:
    """Everything the app serves with, built once per worker process."""

    servers: "dict[str, UseCaseServer]"
    usecases: dict[str, UseCase]
    metrics: ServingMetrics
    flag_store: Any
    admin_token: str | None
    readiness: Callable[[], dict[str, str]]
    # Awaited on the worker's event loop as it starts (e.g. the feature store's asyncio client: `aopen`), and as it
    # stops, in reverse order; a shutdown step may be a plain function or a coroutine function.
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    trusted_proxies: list[str] = field(default_factory=list)  # whose X-Forwarded-For names the client
    reports_dir: Path | None = None  # <state_dir>/reports: GET /v1/reports/{usecase}/latest serves from it
    on_scrape: list[Callable[[], None]] = field(default_factory=list)  # gauges refreshed before /metrics answers
    models: "ModelAdmin | None" = None  # the model aliases' admin routes (online/serving/admin_models.py)


@dataclass
class ModelAdmin:
    """What the model aliases' admin routes act on: the alias store, the artifacts, this worker's served versions."""

    alias_store: Any
    artifacts: Any
    served: Callable[[str], str | None]


def create_app(deps: ServingDeps, *, fast_predict: bool = True) -> FastAPI:
    """The prediction service over prepared dependencies.

    `fast_predict` False sends the predict calls through the whole routing chain too (online/serving/fast_predict.py
    says what it skips; its test compares the two).
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for start in deps.on_start:
            await start()
        settle_heap()  # everything is loaded: full GC passes skip it from now on (online/serving/heap.py)
        yield
        for close in reversed(deps.on_shutdown):
            try:
                done = close()
                if done is not None:
                    await done
            except Exception:
                log.exception("shutdown step failed")

    # docs_url/redoc_url None: FastAPI's pages load their scripts from a CDN; add_docs_pages serves local ones.
    app = FastAPI(title="migrate online service", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    add_docs_pages(app)
    pid = str(os.getpid())  # create_app runs in each worker process

    fast_routes: dict[str, tuple[Any, Any]] = {}  # predict path → (route, endpoint), once the routes exist
    if fast_predict:  # added before the guard: inside it (the last middleware added is the outermost)
        app.add_middleware(PredictFastPath, routes=fast_routes, handlers=app.exception_handlers)
    # Unhandled errors are answered (500, no stack trace) by the guard, which keeps the connection open.
    app.add_middleware(RequestGuard, pid=pid, metrics=deps.metrics, usecases=list(deps.servers))
    if deps.trusted_proxies:  # the client's address from X-Forwarded-For only when a listed proxy sent it
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=deps.trusted_proxies)
    app.include_router(
        admin_router(
            flag_store=deps.flag_store,
            usecases=lambda: set(deps.usecases),
            token=lambda: deps.admin_token,
            refused=deps.metrics.admin_refused,
        )
    )

    if deps.models is not None:
        caller = bearer_caller(
            usecases=lambda: set(deps.usecases), token=lambda: deps.admin_token, refused=deps.metrics.admin_refused
        )
        app.include_router(
            models_router(
                caller=caller,
                alias_store=deps.models.alias_store,
                artifacts=deps.models.artifacts,
                usecases=lambda: deps.usecases,
                served=deps.models.served,
                refused=REFUSED,
            )
        )

    if deps.reports_dir is not None:
        app.include_router(reports_router(deps.reports_dir, lambda: set(deps.usecases)))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        return Response(_dump_errors(exc.errors()), status_code=422, media_type="application/json")

    def server_for(usecase: str) -> "UseCaseServer":
        server = deps.servers.get(usecase)
        if server is None:
            raise HTTPException(404, f"no use case {usecase!r}; served: {sorted(deps.servers)}")
        return server

    latencies: dict[str, Any] = {}  # bound histogram children of served use cases (labels() locks per call)

    # On the event loop: the blocking paths run on the use case's batching threads (online/serving/batcher.py). The
    # response is built as dicts and serialised by orjson, not validated again through `PredictResponse`.
    async def predict(usecase: str, request: Request) -> Response:
        started = time.perf_counter()
        server = server_for(usecase)
        raw = await request.body()  # the guard's receive refuses a body over MAX_BODY_BYTES as it streams in
        try:
            body = PredictRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(_body_errors(exc)) from None
        integral_keys(server.usecase, body.entities)
        errors = key_errors(server.usecase, body.entities) + context_errors(server.usecase, body.context)
        if errors:
            raise RequestValidationError(errors)
        entities = cast(list[dict[str, int | str]], body.entities)  # key_errors refused the floats left
        timing = ServerTiming()
        REQUEST_TIMING.set(timing)  # this request's task: the server fills in the parts that ran
        answer: Any = server.predict(entities, body.context)
        if inspect.isawaitable(answer):  # UseCaseServer's is async; a test's stand-in may answer directly
            answer = await answer
        content = orjson.dumps(answer, default=_dump_model)
        elapsed = time.perf_counter() - started
        latency = latencies.get(usecase)
        if latency is None:
            latency = latencies[usecase] = deps.metrics.request_latency.labels(usecase)
        latency.observe(elapsed)
        return Response(
            content, media_type="application/json", headers={"server-timing": timing.header(elapsed * 1000)}
        )

    # One documented route per served use case (its keys, context and limits); the generic one answers the rest.
    for name, served in deps.servers.items():
        app.add_api_route(
            f"/v1/models/{name}/predict",
            _bound(predict, name),
            methods=["POST"],
            response_model=PredictResponse,
            responses=predict_responses(),
            openapi_extra=predict_operation(served.usecase),
            operation_id=f"predict_{name}",
            summary=f"Predict {name}",
        )

    document_bodies(app, [served.usecase for served in deps.servers.values()])
    predict_paths = {f"/v1/models/{name}/predict" for name in deps.servers}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path in predict_paths and "POST" in route.methods:
            fast_routes[route.path] = (route, route.endpoint)

    @app.post("/v1/models/{usecase}/predict", include_in_schema=False)
    async def predict_any(usecase: str, request: Request) -> Response:
        return await predict(usecase, request)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", responses={503: {"description": "A use case cannot answer, or the flags are not loaded."}})
    def readyz() -> Response:
        checks = deps.readiness()
        # A degraded use case (online model not loaded) still serves from its lookup table: ready, and says why.
        ready = all(value == "ok" or value.startswith("degraded: ") for value in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        for refresh in deps.on_scrape:
            refresh()
        return Response(exposition(deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _body_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors located in the body, as FastAPI reports its own (the raw input of a JSON error is not
    echoed: it may not be text)."""
    errors: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False):
        located: dict[str, Any] = {**error, "loc": ("body", *error["loc"])}
        if isinstance(located.get("input"), bytes | bytearray):
            located.pop("input")
        errors.append(located)
    return errors


def _bound(
    predict: Callable[[str, Request], Awaitable[Response]], usecase: str
) -> Callable[[Request], Awaitable[Response]]:
    """The predict endpoint of one use case (its name is in the path, not a parameter)."""

    async def endpoint(request: Request) -> Response:
        return await predict(usecase, request)

    return endpoint


def _dump_errors(errors: Sequence[Any]) -> bytes:
    """The 422 body; an echoed input JSON cannot carry (NaN, an integer past 64 bits) is echoed as its repr."""
    return orjson.dumps({"detail": [_echoable(error) for error in errors]}, default=str)


def _echoable(error: dict[str, Any]) -> dict[str, Any]:
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        return {**error, "input": str(value)}
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return {**error, "input": repr(value)[:200]}
    return error


def _dump_model(value: object) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(value).__name__}")
