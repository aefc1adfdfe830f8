"""Malformed, extra-field, wrong-type and oversized requests get 4xx with field locations, never a 500."""

from __future__ import annotations

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


@pytest.fixture
def client() -> TestClient:
    deps = ServingDeps(
        servers={USECASE.name: EchoServer()},
        usecases={USECASE.name: USECASE},  # type: ignore[dict-item]
        metrics=ServingMetrics(CollectorRegistry()),
        flag_store=None,
        admin_token=None,
        readiness=lambda: {"lookup": "ok"},
    )
    return TestClient(create_app(deps), raise_server_exceptions=False)


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
    assert "/v1/models/{usecase}/predict" in client.get("/openapi.json").json()["paths"]
    client.post(URL, json={"entities": [{"store_id": 1, "product_id": 2}]})
    assert 'migrate_predict_requests_total{status="200",usecase="item_availability"} 1.0' in client.get("/metrics").text
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
