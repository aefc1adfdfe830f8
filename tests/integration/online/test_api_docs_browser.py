"""`/docs` and `/redoc` in headless Chromium: they render every predict operation with no request off the service.

Before: Swagger UI and ReDoc loaded their scripts from a CDN, so on a machine without internet both pages stayed
blank, and on one with internet every visit asked a third party.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from chromium_driver import chromium
from prometheus_client import CollectorRegistry
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from migrate.cutover.flags import Flag, Stage
from migrate.cutover.guardrail import Guardrail
from migrate.registry import load_usecase
from online.serving.app import ServingDeps, create_app
from online.serving.metrics import ServingMetrics
from online.serving.pool import BoundedPool
from online.serving.prediction_paths import Paths
from online.serving.usecase_server import UseCaseServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
START_S = 30
RENDER_S = 30


class _NoRows:
    def get_many(self, spec: Any, keys: list[Any]) -> dict[Any, Any]:
        return {}


class _Batch:
    def current(self, usecase: str) -> Flag:
        return Flag(usecase, Stage.BATCH, None, revision=1)


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[str, list[str]]]:
    """The real app (every example use case, stand-in stores) on uvicorn in a thread; its URL and use cases."""
    metrics = ServingMetrics(CollectorRegistry())
    background = BoundedPool(workers=1, capacity=10)
    usecases = {u.name: u for u in (load_usecase(p) for p in sorted((ROOT / "usecases").glob("*.yaml")))}
    paths = {name: Paths(_NoRows(), None, None, down="no model here", deadline_s=5.0) for name in usecases}
    servers = {
        name: UseCaseServer(
            usecase,
            paths=paths[name],
            flags=_Batch(),  # type: ignore[arg-type]
            guardrail=Guardrail.from_policy(usecase.cutover_policy),
            shadow=None,
            background=background,
            metrics=metrics,
            on_breach=lambda *_: None,
        )
        for name, usecase in usecases.items()
    }
    deps = ServingDeps(servers, usecases, metrics, None, None, lambda: {"docs": "ok"})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(deps), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", sorted(usecases)
    finally:
        server.should_exit = True
        thread.join(timeout=START_S)
        for path in paths.values():
            path.close()
        background.shutdown(wait=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium with its network log on (every request the page makes is in it)."""
    with chromium("--disable-background-networking", timeout_s=RENDER_S, network_log=True) as driver:
        yield driver


def _requested_urls(browser: Any) -> list[str]:
    """Every URL the page sent a request to since the last call, from Chromium's DevTools network events: a
    request the page's Content-Security-Policy blocked never left the browser and is not counted."""
    sent: dict[str, str] = {}
    blocked: set[str] = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason") == "csp":
            blocked.add(params["requestId"])
    return [url for request, url in sent.items() if request not in blocked]


def _off_service(urls: list[str], base: str) -> list[str]:
    service = urlsplit(base).netloc
    return [url for url in urls if not url.startswith(("data:", "blob:")) and urlsplit(url).netloc != service]


def _wait_for_text(browser: Any, texts: list[str]) -> str:
    def rendered(driver: Any) -> str | bool:
        body = str(driver.find_element(By.TAG_NAME, "body").text)
        return body if all(text in body for text in texts) else False

    try:
        return str(WebDriverWait(browser, RENDER_S, poll_frequency=0.2).until(rendered))
    except Exception as exc:
        body = browser.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"the page did not show {texts}; it shows: {body[:2000]!r}") from exc


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_render_every_operation_with_no_request_off_the_service(
    service: tuple[str, list[str]], browser: Any, page: str
) -> None:
    base, usecases = service
    _requested_urls(browser)  # drop what an earlier page asked for
    browser.get(base + page)
    _wait_for_text(browser, [*(f"Predict {name}" for name in usecases), "Healthz", "Readyz"])
    urls = _requested_urls(browser)
    # The page, its assets and the OpenAPI document were fetched, all from the service itself.
    assert any(url.endswith("/openapi.json") for url in urls), urls
    assert any(url.endswith(".js") for url in urls), urls
    assert _off_service(urls, base) == [], urls
