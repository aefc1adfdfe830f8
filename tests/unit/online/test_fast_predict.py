"""The predict routes' short way in (online/serving/fast_predict.py) answers as the whole routing chain does:
the same status, headers and body, and the same counts in /metrics, on valid and hostile requests."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from test_app_requests import URL, USECASE, EchoServer, FailingServer, deps_with

from online.serving.app import MAX_BODY_BYTES, create_app
from online.serving.fast_predict import PredictFastPath

pytestmark = pytest.mark.unit

VOLATILE = {"date", "server-timing"}  # the clock's, not the route's


def _pair(server: EchoServer) -> tuple[TestClient, TestClient]:
    fast = TestClient(create_app(deps_with(server)), raise_server_exceptions=False)
    slow = TestClient(create_app(deps_with(server), fast_predict=False), raise_server_exceptions=False)
    return fast, slow


def _answer(client: TestClient, method: str, path: str, **kwargs: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    response = client.request(method, path, **kwargs)
    headers = sorted((k, v) for k, v in response.headers.items() if k not in VOLATILE and k != "x-worker-pid")
    return response.status_code, headers, response.content


def _metrics(client: TestClient) -> list[str]:
    """The request counters (by status and by route template) of /metrics."""
    return sorted(
        line
        for line in client.get("/metrics").text.splitlines()
        if line.startswith(("migrate_predict_requests_total{", "migrate_http_requests_total{"))
        and "/metrics" not in line
    )


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", URL, {"json": {"entities": [{"store_id": 1, "product_id": 2}]}}),
    ("POST", URL, {"json": {"entities": [{"store_id": 1, "product_id": 2}], "context": {}}}),
    ("POST", URL, {"content": b"{not json"}),
    ("POST", URL, {"content": b""}),
    ("POST", URL, {"json": {"entities": []}}),
    ("POST", URL, {"json": {"entities": [{"store_id": "x", "product_id": 2}]}}),
    ("POST", URL, {"json": {"entities": [{"store_id": 1.5, "product_id": 2}]}}),
    ("POST", URL, {"json": {"entities": [{"store_id": 1, "product_id": 2}], "extra": 1}}),
    ("POST", URL, {"content": b'{"entities": [{"store_id": NaN, "product_id": 2}]}'}),
    ("POST", URL, {"content": b'{"entities": [{"store_id": 1e999, "product_id": 2}]}'}),
    ("POST", URL, {"content": b'{"entities": [{"store_id": 99999999999999999999999, "product_id": 2}]}'}),
    ("POST", URL, {"content": b"x" * (MAX_BODY_BYTES + 1)}),
    ("POST", URL + "/", {"json": {"entities": [{"store_id": 1, "product_id": 2}]}}),
    ("POST", "/v1/models/nope/predict", {"json": {"entities": [{"store_id": 1, "product_id": 2}]}}),
    ("GET", URL, {}),
    ("PUT", URL, {"json": {}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), REQUESTS)
def test_each_request_gets_the_same_answer_both_ways(method: str, path: str, kwargs: dict[str, Any]) -> None:
    fast, slow = _pair(EchoServer())
    assert _answer(fast, method, path, **kwargs) == _answer(slow, method, path, **kwargs)
    assert _metrics(fast) == _metrics(slow)


def test_a_bug_past_validation_is_the_same_500_both_ways() -> None:
    fast, slow = _pair(FailingServer())
    body = {"json": {"entities": [{"store_id": 1, "product_id": 2}]}}
    got = _answer(fast, "POST", URL, **body)
    assert got == _answer(slow, "POST", URL, **body) and got[0] == 500
    assert _metrics(fast) == _metrics(slow)


NEAR_VALID = st.from_regex(rb'\{"entities": \[\{"store_id": [-0-9.eE+a-zA-Z"]{0,25}', fullmatch=False)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300) | NEAR_VALID)
def test_hostile_bodies_get_the_same_answer_both_ways(body: bytes) -> None:
    fast, slow = _pair(EchoServer())
    assert _answer(fast, "POST", URL, content=body) == _answer(slow, "POST", URL, content=body)


def test_the_short_way_is_taken_for_each_served_use_case_only() -> None:
    app = create_app(deps_with(EchoServer()))
    app.build_middleware_stack()
    fast = [m for m in app.user_middleware if m.cls is PredictFastPath]
    assert len(fast) == 1
    assert set(fast[0].kwargs["routes"]) == {URL} == {f"/v1/models/{USECASE.name}/predict"}
