"""Without its online model a use case's online path answers an error (never raises), and readiness says
degraded, still ready; anything else not ok keeps /readyz at 503."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from online.serving.app import ServingDeps, create_app
from online.serving.metrics import ServingMetrics
from online.serving.prediction_paths import Paths

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_an_online_path_without_its_model_answers_the_reason() -> None:
    paths = Paths(lookup=None, lookup_spec=None, predictor=None, down="model artifact x has sha256 a, expected b")
    outcome = paths.online([(1,), (2,)], [0, 1], NOW, {})
    assert outcome.results == {} and outcome.asked == frozenset({0, 1})
    assert outcome.error == "the online model is not loaded: model artifact x has sha256 a, expected b"
    later = asyncio.run(paths.online_async([(1,)], [0], NOW, {}))
    assert later.error == outcome.error and later.asked == frozenset({0})


@pytest.mark.parametrize(
    ("checks", "status"),
    [
        ({"usecase:a": "ok", "usecase:b": "degraded: no model", "feature_store": "ok", "flags": "ok"}, 200),
        ({"usecase:a": "ok", "feature_store": "connection refused", "flags": "ok"}, 503),
        ({"usecase:a": "ok", "feature_store": "ok", "flags": "not loaded yet"}, 503),
    ],
)
def test_readiness_is_ready_when_every_served_use_case_can_answer(checks: dict[str, str], status: int) -> None:
    deps = ServingDeps(
        servers={},
        usecases={},
        metrics=ServingMetrics(CollectorRegistry()),
        flag_store=None,
        admin_token=None,
        readiness=lambda: checks,
    )
    response = TestClient(create_app(deps)).get("/readyz")
    assert response.status_code == status and response.json()["checks"] == checks
