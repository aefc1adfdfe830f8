"""Malformed, extra-field, wrong-type and oversized requests get 4xx with field locations, never a 500."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from migrate.registry import load_usecase
from online.serving.app import MAX_BODY_BYTES, ServingDeps, create_app
from online.serving.metrics import ServingMetrics
from online.serving.schemas import Prediction, PredictResponse

pytestmark = pytest.mark.unit

USECASE = load_usecase(Path(__file__).resolve().parents[3] / "usecases" / "item_availability.yaml")


class EchoServer:
    """Answers every entity from 'batch' with a fixed prediction: enough to exercise the HTTP layer."""

    usecase = USECASE

    def predict(self, entities: list[dict[str, int | str]], context: dict[str, Any]) -> PredictResponse:
        return PredictResponse(
            request_id="r",
            usecase=USECASE.name,
            stage="batch",
            predictions=[
                Prediction(key=e, prediction=0.5, source="batch", model_version="v1", data_age_s=1.0) for e in entities
            ],
        )


class FailingServer(EchoServer):
    """A path that raises: what any bug past validation looks like to the HTTP layer."""

    def predict(self, entities: list[dict[str, int | str]], context: dict[str, Any]) -> PredictResponse:
        raise RuntimeError("a bug")


def deps_with(server: EchoServer) -> ServingDeps:
    return ServingDeps(
        servers={USECASE.name: server},  # type: ignore[dict-item]
        usecases={USECASE.name: USECASE},
        metrics=ServingMetrics(CollectorRegistry()),
        flag_store=None,
        admin_token=None,
        readiness=lambda: {"lookup": "ok"},
    )


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(deps_with(EchoServer())), raise_server_exceptions=False)


def counted(client: TestClient, status: int, usecase: str = USECASE.name) -> float:
    """``migrate_predict_requests_total`` of one use case and status, read from /metrics (0 when absent)."""
    line = f'migrate_predict_requests_total{{status="{status}",usecase="{usecase}"}} '
    found = [row for row in client.get("/metrics").text.splitlines() if row.startswith(line)]
    return float(found[0].removeprefix(line)) if found else 0.0


URL = f"/v1/models/{USECASE.name}/predict"


def test_valid_request(client: TestClient) -> None:
    response = client.post(URL, json={"entities": [{"store_id": 1, "product_id": 2}]})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["source"] == "batch"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"entities": [{"store_id": 1}]}, ["body", "entities", 0, "product_id"]),
        ({"entities": [{"store_id": "one", "product_id": 2}]}, ["body", "entities", 0, "store_id"]),
        ({"entities": [{"store_id": 1, "product_id": 2, "aisle": 3}]}, ["body", "entities", 0, "aisle"]),
        ({"entities": [{"store_id": 1, "product_id": 2}], "colour": "red"}, ["body", "colour"]),
        ({"entities": []}, ["body", "entities"]),
        ({}, ["body", "entities"]),
        ({"entities": [{"store_id": True, "product_id": 2}]}, ["body", "entities", 0, "store_id"]),
        ({"entities": "1,2"}, ["body", "entities"]),
    ],
)
def test_bad_requests_name_the_field(client: TestClient, body: dict[str, Any], loc: list[Any]) -> None:
    response = client.post(URL, json=body)
    assert response.status_code == 422
    locs = [error["loc"] for error in response.json()["detail"]]
    assert any(found[: len(loc)] == loc for found in locs), locs
    assert "Traceback" not in response.text


def test_not_json(client: TestClient) -> None:
    response = client.post(URL, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_too_many_entities(client: TestClient) -> None:
    body = {"entities": [{"store_id": i, "product_id": i} for i in range(1_001)]}
    response = client.post(URL, json=body)
    assert response.status_code in (413, 422)


def test_oversized_body_is_refused(client: TestClient) -> None:
    response = client.post(URL, content=b" " * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "fewer entities" in response.json()["detail"]


def test_unknown_usecase_is_404(client: TestClient) -> None:
    response = client.post("/v1/models/nope/predict", json={"entities": [{"store_id": 1, "product_id": 2}]})
    assert response.status_code == 404


def test_openapi_and_metrics(client: TestClient) -> None:
    assert URL in client.get("/openapi.json").json()["paths"]  # one documented route per use case
    client.post(URL, json={"entities": [{"store_id": 1, "product_id": 2}]})
    assert 'migrate_predict_requests_total{status="200",usecase="item_availability"} 1.0' in client.get("/metrics").text
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


# Numbers JSON cannot carry back. Before: orjson.dumps (a key echoed in the answer) or the 422 handler (an
# echoed NaN) raised, the request got a 500 and the server closed the keep-alive connection.
@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"entities": [{"store_id": 1, "product_id": 18446744073709551616}]}', ["body", "entities", 0, "product_id"]),
        (b'{"entities": [{"store_id": -9223372036854775809, "product_id": 1}]}', ["body", "entities", 0, "store_id"]),
        (b'{"entities": [{"store_id": NaN, "product_id": 1}]}', ["body", "entities", 0, "store_id"]),
        (b'{"entities": [{"store_id": 1e400, "product_id": 1}]}', ["body", "entities", 0, "store_id"]),
        (b'{"entities": [{"store_id": 1, "product_id": 2}], "context": {"note": NaN}}', ["body", "context", "note"]),
        (b'{"entities": [{"store_id": 1, "product_id": 2}], "context": {"a": [1e400]}}', ["body", "context", "a", 0]),
        (
            b'{"entities": [{"store_id": 1, "product_id": 2}], "context": {"b": {"c": 99999999999999999999}}}',
            ["body", "context", "b", "c"],
        ),
    ],
)
def test_numbers_json_cannot_carry_get_a_422_naming_the_field(client: TestClient, raw: bytes, loc: list[Any]) -> None:
    response = client.post(URL, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert loc in [error["loc"][: len(loc)] for error in response.json()["detail"]]
    assert counted(client, 422) == 1


def test_the_largest_64_bit_keys_are_served(client: TestClient) -> None:
    body = {"entities": [{"store_id": 2**63 - 1, "product_id": -(2**63)}]}
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["key"] == body["entities"][0]


def test_an_unhandled_error_is_a_counted_500_that_does_not_reach_the_server() -> None:
    # raise_server_exceptions=True: an exception that escapes the app (which makes uvicorn drop the keep-alive
    # connection) fails this request instead of answering it.
    client = TestClient(create_app(deps_with(FailingServer())), raise_server_exceptions=True)
    response = client.post(URL, json={"entities": [{"store_id": 1, "product_id": 2}]})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; see the service log"}
    assert "x-worker-pid" in response.headers
    assert counted(client, 500) == 1


def test_413_and_unknown_use_cases_are_counted(client: TestClient) -> None:
    client.post(URL, content=b" " * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"})
    client.post("/v1/models/nope/predict", json={"entities": [{"store_id": 1, "product_id": 2}]})
    client.post("/v1/models/other/predict", json={"entities": [{"store_id": 1, "product_id": 2}]})
    assert counted(client, 413) == 1
    assert counted(client, 404, "unknown") == 2  # one label for every name not served: bounded cardinality


def test_a_chunked_body_over_the_limit_is_refused_as_it_streams_in() -> None:
    """A chunked body has no content-length: the guard counts it while it arrives and stops reading at the
    limit. The body offered here is 400 MB; the app may read only the limit and one chunk of it."""
    app = create_app(deps_with(EchoServer()))
    chunk = b" " * 65_536
    offered = 400 * 1024 * 1024 // len(chunk)
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < offered}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"fewer entities" in b"".join(m.get("body", b"") for m in sent[1:])
    assert pulled <= MAX_BODY_BYTES // len(chunk) + 1, pulled


def test_integral_numbers_are_integer_keys_as_json_schema_says(client: TestClient) -> None:
    response = client.post(URL, json={"entities": [{"store_id": 3.0, "product_id": -2.0}]})
    assert response.status_code == 200, response.text
    key = response.json()["predictions"][0]["key"]
    assert key == {"store_id": 3, "product_id": -2} and isinstance(key["store_id"], int)
    refused = client.post(URL, json={"entities": [{"store_id": 3.5, "product_id": 2}]})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "entities", 0, "store_id"]


def test_the_openapi_document_states_each_use_cases_request(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    body = document["components"]["schemas"][f"PredictRequest_{USECASE.name}"]
    entity = body["properties"]["entities"]["items"]
    assert entity["required"] == ["store_id", "product_id"] and entity["additionalProperties"] is False
    assert entity["properties"]["store_id"] == {
        "type": "integer",
        "format": "int64",
        "minimum": -(2**63),
        "maximum": 2**63 - 1,
    }
    assert body["properties"]["entities"]["maxItems"] == 1_000
    assert set(document["paths"][URL]["post"]["responses"]) == {"200", "413", "422", "500"}


def test_the_openapi_document_explains_missing_features_and_group_ages(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    fields = schemas["Prediction"]["properties"]
    for name, words in (("missing_features", "no value for"), ("group_ages_s", "'batch'")):
        assert words in fields[name]["description"], name
        assert {"type": "null"} in fields[name]["anyOf"], name  # null for a lookup answer
    assert fields["group_ages_s"]["anyOf"][0]["additionalProperties"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
