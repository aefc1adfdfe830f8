"""The ASGI middleware in front of every route: body limits while the body streams in, a 500 that keeps the
connection, the worker's pid on each answer and the predict endpoint's requests counted by status."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import orjson
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from online.serving.metrics import ServingMetrics

__all__ = ["MAX_BODY_BYTES", "TOO_LARGE", "UNKNOWN_USECASE", "RequestGuard"]

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 256 * 1024
TOO_LARGE = f"request body over {MAX_BODY_BYTES} bytes; send fewer entities per request"
UNKNOWN_USECASE = "unknown"  # the metrics label of a predict call to a use case not served (bounded cardinality)
_INTERNAL = orjson.dumps({"detail": "internal error; see the service log"})
_PREFIX, _SUFFIX = "/v1/models/", "/predict"


class RequestGuard:
    """Pure ASGI middleware (``@app.middleware("http")`` costs a task and two streams per request).

    - A body over `max_body_bytes` is refused with 413: at once when its content-length says so, else while it
      streams in (a chunked body), so a worker never holds more than the limit plus one chunk of it.
    - An exception that no handler took becomes a 500 answered here and is not re-raised: the server would
      close the keep-alive connection for it (Starlette's outermost middleware re-raises after its 500).
    - Every predict call is counted in ``migrate_predict_requests_total`` by the status it got, 413 and 5xx
      included; calls to a use case not served are counted under ``usecase="unknown"``. Every request is counted
      in ``migrate_http_requests_total`` by its route's template (``unmatched`` when no route took it).
    - ``x-worker-pid`` says which worker answered (several uvicorn workers share one port).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        pid: str,
        metrics: ServingMetrics,
        usecases: Collection[str],
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.pid = pid.encode()
        self.metrics = metrics
        self.usecases = frozenset(usecases)
        self.max_body_bytes = max_body_bytes
        self._counters: dict[tuple[str, str, int], Any] = {}  # bound children: labels() locks on every call

    def _counted_as(self, path: str) -> str | None:
        """The use-case label of a predict call, None for other routes."""
        if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
            return None
        name = path[len(_PREFIX) : -len(_SUFFIX)]
        return name if name in self.usecases else UNKNOWN_USECASE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-worker-pid", self.pid)]
            await send(message)

        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:  # raised inside the route: its 413 handler answers
                    raise HTTPException(413, TOO_LARGE)
            return message

        try:
            if _declared_too_large(scope, self.max_body_bytes):
                await _send_json(answer, 413, orjson.dumps({"detail": TOO_LARGE}))
            else:
                await self.app(scope, limited, answer)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if status:
                raise  # the answer had started: the connection cannot be saved
            await _send_json(answer, 500, _INTERNAL)
        finally:
            if status:
                self._count(scope, status)

    def _count(self, scope: Scope, status: int) -> None:
        path, route = scope["path"], _route_of(scope)
        counters = self._counters.get((path, route, status))
        if counters is None:
            usecase = self._counted_as(path)
            counters = (
                None if usecase is None else self.metrics.requests.labels(usecase, str(status)),
                self.metrics.http_requests.labels(route, str(status)),
            )
            if len(self._counters) < 1_000:  # paths are the client's: keep only a bounded number bound
                self._counters[(path, route, status)] = counters
        if counters[0] is not None:
            counters[0].inc()
        counters[1].inc()


def _route_of(scope: Scope) -> str:
    """The matched route's path template (bounded cardinality), or "unmatched" (a 404, a 413 before routing)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _declared_too_large(scope: Scope, limit: int) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return not value.isdigit() or int(value) > limit
    return False


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
