"""The predict routes' short way in: straight to the endpoint, past Starlette's routing and middleware chain.

A 1-entity predict spent about a fifth of its in-process time in the framework between the server and the
endpoint (measured by calling the endpoint directly beside the whole app, docs/serving.md "Where the tail came
from"): the router's match over every route, FastAPI's request wrapper, the exception and exit-stack
middleware. A POST whose path is exactly a served use case's predict route goes to its endpoint here instead,
with what the chain would have given it: ``scope["route"]`` (the metrics' route label) and the app's own
exception handlers, applied by Starlette's own wrapper (a 422 or a 413 answers as before). Every other request,
and a predict path in any other form (a trailing slash, a root path), takes the whole chain.

tests/unit/online/test_fast_predict.py holds the answers equal with and without it on valid and hostile requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["PredictFastPath"]

Endpoint = Callable[[Request], Awaitable[Response]]


class PredictFastPath:
    """Pure ASGI middleware, inside the request guard: `routes` maps a predict path to its route and endpoint
    (filled once the routes exist); `handlers` is the app's exception handlers (``app.exception_handlers``)."""

    def __init__(
        self, app: ASGIApp, *, routes: Mapping[str, tuple[Any, Endpoint]], handlers: Mapping[Any, Any]
    ) -> None:
        self.app = app
        self.routes = routes
        self.handlers = handlers
        self._split: tuple[dict[Any, Any], dict[Any, Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hit = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if hit is None or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        route, endpoint = hit
        if self._split is None:  # the app's handlers as its middleware stack is built: at the first request
            # As Starlette's ExceptionMiddleware sets them (500 and Exception are the server error middleware's).
            self._split = (
                {k: v for k, v in self.handlers.items() if not isinstance(k, int) and k is not Exception},
                {k: v for k, v in self.handlers.items() if isinstance(k, int) and k != 500},
            )
        scope["starlette.exception_handlers"] = self._split
        scope["route"] = route
        request = Request(scope, receive, send)

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(request)
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(answer, request)(scope, receive, send)
