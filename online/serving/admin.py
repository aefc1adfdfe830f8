# No `from __future__ import annotations`: FastAPI resolves the Depends() annotations of the routes at runtime.
"""The admin API: ``PUT`` and ``GET /v1/admin/flags/{usecase}`` behind a bearer token.

Only authenticated changes of a served use case reach the audit log (through the flag store, applied or
refused). Refused callers (no token configured, none sent, a wrong one) and unknown use cases are counted in
``migrate_admin_refused_total`` and logged at most once a minute per reason: anyone who can reach the port can
send them, and the audit log is append-only, so a row each would let them grow it without bound.
"""

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter

from migrate.errors import InvalidFlagError, TransitionRefusedError
from online.serving.openapi import problems
from online.serving.schemas import FlagChange

__all__ = ["REFUSALS", "REFUSED", "admin_router", "bearer_caller"]

log = logging.getLogger(__name__)
REFUSALS = ("disabled", "missing_token", "wrong_token", "unknown_usecase")
_LOG_EVERY_S = 60.0
REFUSED = {
    401: "No bearer token.",
    403: "A wrong token, or the admin API is disabled (MIGRATE_ADMIN_TOKEN unset).",
    404: "No such use case.",
}


class _Refusals:
    """Counts refused admin calls by reason and logs a sample: the first of each reason, then one a minute
    with how many came since."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = dict.fromkeys(REFUSALS, 0)

    def __call__(self, reason: str, usecase: str, actor: str) -> None:
        self.counter.labels(reason).inc()
        now = time.monotonic()
        with self._lock:
            self._since[reason] += 1
            last = self._last.get(reason)
            if last is not None and now - last < _LOG_EVERY_S:
                return
            self._last[reason], count = now, self._since[reason]
            self._since[reason] = 0
        log.warning("admin API refused %d call(s) (%s); latest: use case %.64r from %s", count, reason, usecase, actor)


def bearer_caller(
    *, usecases: Callable[[], set[str]], token: Callable[[], str | None], refused: Counter
) -> Callable[..., str]:
    """The dependency every admin route shares: the caller's address once the token checks out and the use case
    exists; refusals are counted, never audited."""
    bearer = HTTPBearer(auto_error=False)
    count = _Refusals(refused)

    def caller(
        usecase: str, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> str:
        actor = request.client.host if request.client else "unknown"  # forwarded headers: see create_app
        expected = token()
        if expected is None:
            count("disabled", usecase, actor)
            raise HTTPException(403, "the admin API is disabled: set MIGRATE_ADMIN_TOKEN")
        if credentials is None:
            count("missing_token", usecase, actor)
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
            count("wrong_token", usecase, actor)
            raise HTTPException(403, "wrong bearer token")
        if usecase not in usecases():
            count("unknown_usecase", usecase, actor)
            raise HTTPException(404, f"no use case {usecase!r}; served: {sorted(usecases())}")
        return actor

    return caller


def admin_router(
    *,
    flag_store: Any,
    usecases: Callable[[], set[str]],
    token: Callable[[], str | None],
    refused: Counter,
) -> APIRouter:
    """The admin routes; `token` and `usecases` are read at each call (a test may change them)."""
    router = APIRouter()
    caller = bearer_caller(usecases=usecases, token=token, refused=refused)

    @router.put(
        "/v1/admin/flags/{usecase}",
        responses=problems(REFUSED | {400: "The change is malformed.", 409: "It skips stages without force."}),
    )
    def set_flag(usecase: str, change: FlagChange, actor: Annotated[str, Depends(caller)]) -> dict[str, Any]:
        try:
            flag = flag_store.set(
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

    # A read changes nothing: authenticated like a change, never audited.
    @router.get("/v1/admin/flags/{usecase}", responses=problems(REFUSED))
    def get_flag(usecase: str, _: Annotated[str, Depends(caller)]) -> dict[str, Any]:
        flag = flag_store.get(usecase)
        return {"usecase": usecase, "stage": flag.stage, "percent": flag.percent, "revision": flag.revision}

    return router
