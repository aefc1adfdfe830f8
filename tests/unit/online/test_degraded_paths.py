"""Without its online model a use case's online path answers an error (never raises), and readiness says
degraded, still ready; anything else not ok keeps /readyz at 503."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from online.serving.app import ServingDeps, create_app
from online.serving.metrics import ServingMetrics
from online.serving.prediction_paths import Outcome, Paths
from online.serving.predictor import OnlineResult

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


class StalledPredictor:
    """An online predictor whose feature read hangs until released: a Redis that stopped answering."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def predict(self, keys: Any, now: Any, context: Any) -> list[OnlineResult]:
        self.calls += 1
        self.release.wait(timeout=30)
        return [OnlineResult(0.5, "v1") for _ in keys]

    async def predict_async(self, keys: Any, now: Any, context: Any) -> list[OnlineResult]:
        return await asyncio.to_thread(self.predict, keys, now, context)  # the stalled read holds a thread


def test_a_stalled_feature_store_costs_a_request_its_deadline_not_the_stall() -> None:
    """Before, a request waited for the stalled call (each socket timeout, its retry, and the calls queued ahead
    of it: ~4.5 timeouts). Now each waits its deadline and answers the timeout as the online path's error; the
    call in the thread is left to finish and its late answer is dropped."""
    stalled = StalledPredictor()
    paths = Paths(lookup=None, lookup_spec=None, predictor=stalled, deadline_s=0.05)  # type: ignore[arg-type]

    async def stall_then_recover() -> tuple[list[Outcome], Outcome]:
        stalled_answers = await asyncio.gather(*(paths.online_async([(i,)], [0], NOW, {}) for i in range(5)))
        stalled.release.set()  # Redis answers again (one event loop throughout, as in a worker)
        return list(stalled_answers), await paths.online_async([(7,)], [0], NOW, {})

    try:
        outcomes, answered = asyncio.run(stall_then_recover())
        assert [o.error for o in outcomes] == [
            "TimeoutError: the online path did not answer within 0.05 s (MIGRATE_REDIS_TIMEOUT_S)"
        ] * 5
        assert all(o.results == {} and o.asked == frozenset({0}) for o in outcomes)
        assert stalled.calls == 2  # the stalled call, then the one after it: the four queued gave up without one
        assert answered.error is None and answered.results[0].prediction == 0.5
    finally:
        stalled.release.set()
        paths.close()


class StalledLookup:
    """A lookup store whose read hangs until released: a database behind a lock, or failing over."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def get_many(self, spec: Any, keys: list[Any]) -> dict[Any, Any]:
        self.calls += 1
        self.release.wait(timeout=30)
        return {key: {"prediction": 0.25} for key in keys}


def test_a_stalled_lookup_table_costs_a_request_its_deadline_not_the_stall() -> None:
    """Before, a batch-served request waited as long as the database held its read (up to the lookup store's
    600 s statement timeout), and every request queued behind it. Now each waits MIGRATE_LOOKUP_TIMEOUT_S and
    answers the timeout as the batch path's error; the read goes on in its thread and its late rows are dropped."""
    stalled = StalledLookup()
    paths = Paths(lookup=stalled, lookup_spec=None, predictor=None, lookup_deadline_s=0.05)

    async def stall_then_recover() -> tuple[list[Outcome], Outcome, float]:
        started = asyncio.get_running_loop().time()
        stalled_answers = await asyncio.gather(*(paths.lookup_read_async([(i,)], [0]) for i in range(5)))
        waited = asyncio.get_running_loop().time() - started
        stalled.release.set()  # the database answers again
        return list(stalled_answers), await paths.lookup_read_async([(7,)], [0]), waited

    try:
        outcomes, answered, waited = asyncio.run(stall_then_recover())
        assert [o.error for o in outcomes] == [
            "TimeoutError: the lookup table did not answer within 0.05 s (MIGRATE_LOOKUP_TIMEOUT_S)"
        ] * 5
        assert all(o.results == {} and o.asked == frozenset({0}) for o in outcomes)
        assert waited < 10  # not the stall (released only after every request answered, or 30 s)
        assert stalled.calls == 2  # the stalled read, then the one after it: the four queued gave up without one
        assert answered.error is None and answered.results == {0: {"prediction": 0.25}}
    finally:
        stalled.release.set()
        paths.close()
