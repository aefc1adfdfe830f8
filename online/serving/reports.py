"""``GET /v1/reports/{usecase}/latest``: the newest comparison report, read-only, as HTML or JSON.

Reports are written by `migrate report` (``<reports_dir>/<usecase>/report.html``) and by the daily
``shadow_report__<usecase>`` DAG (``<reports_dir>/<usecase>/<date>/report.html``), each with its ``report.json``
beside it; the newest by modification time is served. Only served use cases are looked up, by name: no path from
the request reaches the file system.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse

__all__ = ["latest_report", "reports_router"]


def latest_report(root: Path, usecase: str) -> Path | None:
    """The newest ``report.html`` of the use case under `root` (either layout), or None."""
    folder = root / usecase
    if not folder.is_dir():
        return None
    found = [p for p in (folder / "report.html", *folder.glob("*/report.html")) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def reports_router(root: Path, usecases: Callable[[], set[str]]) -> APIRouter:
    """The read-only report route over `root` (``<state_dir>/reports``) for the served `usecases`."""
    router = APIRouter()

    @router.get(
        "/v1/reports/{usecase}/latest",
        response_class=FileResponse,
        responses={
            200: {"content": {"text/html": {}, "application/json": {}}, "description": "The newest report."},
            404: {"description": "No such use case, or no report written yet."},
        },
        summary="The newest comparison report of a use case",
    )
    def latest(
        usecase: str,
        format: Literal["html", "json"] = Query("html", description="The page, or every number as JSON."),
    ) -> FileResponse:
        if usecase not in usecases():
            raise HTTPException(404, f"no use case {usecase!r}; served: {sorted(usecases())}")
        html = latest_report(root, usecase)
        if html is None:
            raise HTTPException(404, f"no report for {usecase!r} yet: run `migrate report {usecase}` or its DAG")
        path = html if format == "html" else html.with_name("report.json")
        if not path.is_file():
            raise HTTPException(404, f"{path.name} is missing beside {html}")
        media = "text/html; charset=utf-8" if format == "html" else "application/json"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    return router
