# No `from __future__ import annotations`: FastAPI resolves the Depends() annotations of the routes at runtime.
"""The admin API of the model aliases (read, candidate, promote, roll back, reject, history), behind the flags' token.

The same moves as ``migrate models``, through `migrate.models.lifecycle`: a version is verified before an alias
moves to it, and every attempt by an authenticated caller is audited (applied or refused). Every worker then
follows the alias within a second (online/serving/model_swap.py).
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from migrate.artifact import ArtifactStore
from migrate.errors import InvalidAliasChangeError, ModelRefusedError
from migrate.models import lifecycle
from migrate.models.alias_store import AliasStore
from migrate.models.aliases import AliasEntry, ModelAlias
from migrate.usecase import UseCase
from online.serving.openapi import problems

__all__ = ["AliasChange", "PromoteChange", "models_router"]


class AliasChange(BaseModel):
    """Admin request: roll back, or reject the candidate."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1)
    actor: str = Field(default="admin-api", min_length=1)


class PromoteChange(AliasChange):
    """Admin request: make a version live (default: the candidate), or name it the candidate."""

    version: str | None = Field(default=None, description="A trained version; default: the candidate.")
    canary: int | None = Field(default=None, description="Candidate only: % of entities it serves (1..99), sticky.")


def _alias(alias: ModelAlias) -> dict[str, Any]:
    return {
        "version": alias.version,
        "sha256": alias.sha256,
        "revision": alias.revision,
        "updated_at": alias.updated_at.isoformat(),
        "updated_by": alias.updated_by,
        "reason": alias.reason,
        "percent": alias.percent,
    }


def _entry(entry: AliasEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "source": entry.source,
        "action": entry.action,
        "version": entry.version,
        "live_before": entry.live_before,
        "live_after": entry.live_after,
        "reason": entry.reason,
        "outcome": entry.outcome,
        "detail": entry.detail,
    }


def models_router(
    *,
    caller: Callable[..., str],
    alias_store: AliasStore,
    artifacts: ArtifactStore,
    usecases: Callable[[], dict[str, UseCase]],
    served: Callable[[str], str | None],
    refused: dict[int, str],
) -> APIRouter:
    """The model routes; ``caller`` is the admin API's bearer dependency, ``served`` this worker's live version."""
    router = APIRouter()
    Caller = Annotated[str, Depends(caller)]
    failures = problems(refused | {400: "The change is malformed or impossible.", 409: "The version fails its checks."})

    def answer(usecase: str) -> dict[str, Any]:
        aliases = alias_store.get(usecase)
        return {
            "usecase": usecase,
            "aliases": {name: _alias(alias) for name, alias in sorted(aliases.items())},
            "served_here": served(usecase),
        }

    def moving(call: Callable[[], object], usecase: str) -> dict[str, Any]:
        try:
            call()
        except ModelRefusedError as exc:
            raise HTTPException(409, str(exc)) from None
        except InvalidAliasChangeError as exc:
            raise HTTPException(400, str(exc)) from None
        return answer(usecase)

    @router.get("/v1/admin/models/{usecase}", responses=problems(refused))
    def get_models(usecase: str, _: Caller) -> dict[str, Any]:
        return answer(usecase)

    @router.get("/v1/admin/models/{usecase}/history", responses=problems(refused))
    def get_history(usecase: str, _: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        return [_entry(entry) for entry in alias_store.history(usecase, limit)]

    @router.post("/v1/admin/models/{usecase}/promote", responses=failures)
    def promote(usecase: str, change: PromoteChange, actor: Caller) -> dict[str, Any]:
        who = {"actor": f"{change.actor}@{actor}", "reason": change.reason, "source": "api"}
        uc = usecases()[usecase]
        return moving(lambda: lifecycle.promote(alias_store, artifacts, uc, change.version, **who), usecase)

    @router.put("/v1/admin/models/{usecase}/candidate", responses=failures)
    def candidate(usecase: str, change: PromoteChange, actor: Caller) -> dict[str, Any]:
        if change.version is None:
            raise HTTPException(400, f"{usecase}: name the version to make the candidate (body field 'version')")
        version, percent, who = change.version, change.canary, f"{change.actor}@{actor}"
        uc = usecases()[usecase]
        return moving(
            lambda: lifecycle.set_candidate(
                alias_store, artifacts, uc, version, actor=who, reason=change.reason, source="api", percent=percent
            ),
            usecase,
        )

    @router.post("/v1/admin/models/{usecase}/rollback", responses=failures)
    def rollback(usecase: str, change: AliasChange, actor: Caller) -> dict[str, Any]:
        who = {"actor": f"{change.actor}@{actor}", "reason": change.reason, "source": "api"}
        uc = usecases()[usecase]
        return moving(lambda: lifecycle.rollback(alias_store, artifacts, uc, **who), usecase)

    @router.post("/v1/admin/models/{usecase}/reject", responses=failures)
    def reject(usecase: str, change: AliasChange, actor: Caller) -> dict[str, Any]:
        who = {"actor": f"{change.actor}@{actor}", "reason": change.reason, "source": "api"}
        uc = usecases()[usecase]
        return moving(lambda: lifecycle.reject_candidate(alias_store, uc, **who), usecase)

    return router
