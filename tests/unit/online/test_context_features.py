"""Context features: declared in the YAML with type and bounds, checked on arrival (422 naming the field), fed to
the online model in declared order."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from migrate.registry import load_usecase
from migrate.usecase import UseCase
from online.serving.app import ServingDeps, create_app
from online.serving.metrics import ServingMetrics
from online.serving.validation import context_values

pytestmark = pytest.mark.unit

BASE = load_usecase(Path(__file__).resolve().parents[3] / "usecases" / "item_availability.yaml")
CONTEXT = [
    {"name": "amount", "type": "float", "min": 0, "max": 10_000},
    {"name": "hour", "type": "int", "min": 0, "max": 23},
    {"name": "channel", "type": "str", "required": False},
    {"name": "returning", "type": "bool", "required": False},
]
USECASE = UseCase.model_validate({**BASE.model_dump(), "context": CONTEXT})


class Recorder:
    usecase = USECASE

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def predict(self, entities: list[dict[str, int | str]], context: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(context)
        return {"request_id": "r", "usecase": USECASE.name, "stage": "batch", "predictions": []}


@pytest.fixture
def served() -> tuple[TestClient, Recorder]:
    server = Recorder()
    deps = ServingDeps(
        servers={USECASE.name: server},  # type: ignore[dict-item]
        usecases={USECASE.name: USECASE},
        metrics=ServingMetrics(CollectorRegistry()),
        flag_store=None,
        admin_token=None,
        readiness=lambda: {"lookup": "ok"},
    )
    return TestClient(create_app(deps), raise_server_exceptions=False), server


def post(client: TestClient, context: Any) -> Any:
    return client.post(
        f"/v1/models/{USECASE.name}/predict",
        content=f'{{"entities": [{{"store_id": 1, "product_id": 2}}], "context": {context}}}',
        headers={"content-type": "application/json"},
    )


@pytest.mark.parametrize(
    ("context", "field", "kind"),
    [
        ('{"hour": 3}', "amount", "missing"),
        ('{"amount": "12", "hour": 3}', "amount", "float_type"),
        ('{"amount": true, "hour": 3}', "amount", "float_type"),
        ('{"amount": -0.01, "hour": 3}', "amount", "greater_than_equal"),
        ('{"amount": 10000.5, "hour": 3}', "amount", "less_than_equal"),
        ('{"amount": 1e400, "hour": 3}', "amount", "finite_number"),
        ('{"amount": 5, "hour": 2.5}', "hour", "int_type"),
        ('{"amount": 5, "hour": 24}', "hour", "less_than_equal"),
        ('{"amount": 5, "hour": 1, "channel": 7}', "channel", "string_type"),
        ('{"amount": 5, "hour": 1, "returning": 1}', "returning", "bool_type"),
    ],
)
def test_a_bad_context_value_is_a_422_naming_its_field(
    served: tuple[TestClient, Recorder], context: str, field: str, kind: str
) -> None:
    client, server = served
    response = post(client, context)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", "context", field], kind)]
    assert server.seen == []  # refused before any path ran


def test_a_valid_context_reaches_the_server_and_feeds_the_model_in_declared_order(
    served: tuple[TestClient, Recorder],
) -> None:
    client, server = served
    response = post(client, '{"hour": 23, "amount": 0, "channel": "web", "note": "kept for the log"}')
    assert response.status_code == 200, response.text
    assert server.seen == [{"hour": 23, "amount": 0, "channel": "web", "note": "kept for the log"}]
    # Numeric context values are model inputs (strings only key feature groups); a missing optional one is NaN.
    assert USECASE.context_names == ["amount", "hour", "returning"]
    assert USECASE.online_feature_names[-3:] == ["amount", "hour", "returning"]
    values = context_values(USECASE, server.seen[0])
    assert values[:2] == [0.0, 23.0] and math.isnan(values[2])


def test_context_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match=r"min 5\.0 is above max 1\.0"):
        UseCase.model_validate({**BASE.model_dump(), "context": [{"name": "x", "min": 5, "max": 1}]})
    with pytest.raises(ValueError, match="takes no min or max"):
        UseCase.model_validate({**BASE.model_dump(), "context": [{"name": "x", "type": "str", "min": 0}]})
    with pytest.raises(ValueError, match="appear twice"):
        UseCase.model_validate({**BASE.model_dump(), "context": [{"name": "scans_30m"}]})
