"""The serving series a use case writes: fallbacks by reason, the guardrail's window and breaches, the stage and
the data age per feature group, each compared with what the answers say."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from migrate.cutover.flags import Flag, Stage, in_shadow_sample
from migrate.cutover.guardrail import Guardrail
from migrate.feature_windows import groups_of
from migrate.registry import load_usecase
from migrate.usecase import ShadowSpec, UseCase
from online.serving.metrics import ServingMetrics, fallback_reason
from online.serving.prediction_paths import Key, Outcome, Paths, Request
from online.serving.predictor import OnlineResult
from online.serving.usecase_server import UseCaseServer

pytestmark = pytest.mark.unit

USECASE = load_usecase(Path(__file__).resolve().parents[3] / "usecases" / "item_availability.yaml")
NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


class Row:
    prediction = 0.25
    model_version = "batch-1"
    features_as_of = datetime(2026, 11, 25, 2, tzinfo=UTC)


class StubPaths:
    """A lookup with a row for even product ids; an online path that fails with `error`, or answers with these
    feature and group ages (as OnlinePredictor gives them: tests/integration/stream/test_online_model.py)."""

    def __init__(
        self,
        error: str | None,
        ages: dict[str, float] | None = None,
        group_ages: dict[str, float | None] | None = None,
    ) -> None:
        self.error, self.ages, self.group_ages = error, ages or {}, group_ages or {}

    async def lookup_read_async(self, keys: Sequence[Key], indexes: Sequence[int]) -> Outcome:
        return Outcome({i: Row() if int(keys[i][1]) % 2 == 0 else None for i in indexes}, 0.1)

    async def online_async(self, keys: Sequence[Key], indexes: Sequence[int], now: Any, context: Any) -> Outcome:
        if self.error is not None:
            return Outcome({}, 1.0, self.error, frozenset(indexes))
        answer = {
            i: OnlineResult(0.5, "online-7", dict(self.ages), group_ages_s=dict(self.group_ages)) for i in indexes
        }
        return Outcome(answer, 1.0)


class AtStage:
    def __init__(self, stage: Stage) -> None:
        self.flag = Flag(USECASE.name, stage, revision=1)

    def current(self, usecase: str) -> Flag:
        return self.flag


def _server(
    paths: Any,
    stage: Stage,
    registry: CollectorRegistry,
    guardrail: Guardrail | None = None,
    *,
    usecase: UseCase = USECASE,
    shadow: Any = None,
) -> Any:
    breaches: list[str] = []
    server = UseCaseServer(
        usecase,
        paths=paths,
        flags=AtStage(stage),  # type: ignore[arg-type]
        guardrail=guardrail or Guardrail(max_error_rate=0.5, max_p99_latency_ms=1_000),
        shadow=shadow,
        background=type("Now", (), {"submit": staticmethod(lambda f, *a: breaches.append(a[1]))})(),
        metrics=ServingMetrics(registry),
        on_breach=None,
        clock=lambda: NOW,
    )
    return server, breaches


def _entities(n: int) -> list[dict[str, int | str]]:
    return [{"store_id": 1, "product_id": p} for p in range(n)]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("TimeoutError: the online path did not answer within 0.05 s (MIGRATE_REDIS_TIMEOUT_S)", "timeout"),
        ("the online model is not loaded: no artifact", "model_not_loaded"),
        ("ConnectionError: Redis went away", "online_error"),
    ],
)
def test_fallbacks_are_counted_by_reason_and_misses_by_the_answers(error: str, reason: str) -> None:
    registry = CollectorRegistry()
    server, _ = _server(StubPaths(error), Stage.ONLINE, registry)
    answer = asyncio.run(server.predict(_entities(6), {}))
    sources = [p["source"] for p in answer["predictions"]]
    assert sources == ["batch_fallback"] * 6 and fallback_reason(error) == reason
    value = registry.get_sample_value
    assert value("migrate_fallbacks_total", {"usecase": USECASE.name, "reason": reason}) == 6
    misses = sum(p["miss"] for p in answer["predictions"])
    assert misses == 3 and value("migrate_lookup_misses_total", {"usecase": USECASE.name}) == misses
    assert value("migrate_usecase_stage", {"usecase": USECASE.name, "stage": "online"}) == 1
    assert value("migrate_usecase_stage", {"usecase": USECASE.name, "stage": "batch"}) == 0
    assert value("migrate_guardrail_window_errors", {"usecase": USECASE.name}) == 1  # one online call, failed


def test_a_guardrail_breach_is_counted_by_kind_once() -> None:
    registry = CollectorRegistry()
    guardrail = Guardrail(max_error_rate=0.1, max_p99_latency_ms=1_000, min_samples=5, min_bad=1)
    server, breaches = _server(StubPaths("ConnectionError: down"), Stage.ONLINE, registry, guardrail)
    for _ in range(8):
        asyncio.run(server.predict(_entities(1), {}))
    labels = {"usecase": USECASE.name, "kind": "error_rate"}
    assert len(breaches) == 1 and registry.get_sample_value("migrate_guardrail_breaches_total", labels) == 1
    server.before_scrape()  # requests write the window gauges at most every 0.1 s; a scrape brings them up to date
    calls = registry.get_sample_value("migrate_guardrail_window_calls", {"usecase": USECASE.name})
    assert calls == guardrail.window()[0] == 8


def test_the_guardrail_window_holds_the_calls_of_the_flag_revision_in_force_only() -> None:
    """Failing calls made before a re-promotion (a new revision) do not count against it: the guardrail needs
    its 5 calls again, all at the new revision. A new flag object of the same revision keeps the window."""
    registry = CollectorRegistry()
    guardrail = Guardrail(max_error_rate=0.1, max_p99_latency_ms=1_000, min_samples=5, min_bad=1)
    server, breaches = _server(StubPaths("ConnectionError: down"), Stage.ONLINE, registry, guardrail)
    flags = AtStage(Stage.ONLINE)
    server.flags = flags
    for _ in range(4):  # under min_samples: no breach yet
        asyncio.run(server.predict(_entities(1), {}))
    assert guardrail.window()[0] == 4 and not breaches
    flags.flag = Flag(USECASE.name, Stage.ONLINE, revision=2)  # moved back and forth: a new revision
    for _ in range(4):
        asyncio.run(server.predict(_entities(1), {}))
    assert guardrail.window()[0] == 4 and not breaches  # without the reset: 8 calls, a breach at the 5th
    flags.flag = Flag(USECASE.name, Stage.ONLINE, revision=2)  # the same revision, read again
    asyncio.run(server.predict(_entities(1), {}))
    assert guardrail.window()[0] == 5 and len(breaches) == 1


def test_data_age_is_observed_per_feature_group_of_each_answered_entity() -> None:
    groups = [g for g in groups_of(USECASE) if g.spec.names]
    assert groups, "the example declares real-time groups"
    ages = {name: 5.0 for name in USECASE.feature_names}
    ages[USECASE.feature_names[0]] = 86_400.0  # the oldest batch feature sets the batch group's age
    for n, group in enumerate(groups):
        ages.update(dict.fromkeys(group.spec.names, 10.0 * (n + 1)))
    expected = {"batch": 86_400.0} | {group.name: 10.0 * (n + 1) for n, group in enumerate(groups)}
    quiet: dict[str, float | None] = {"quiet_group": None}  # a group with no event: no age, nothing observed
    registry = CollectorRegistry()
    server, _ = _server(StubPaths(None, ages, {**expected, **quiet}), Stage.ONLINE, registry)
    asyncio.run(server.predict(_entities(2), {}))
    none = {"usecase": USECASE.name, "group": "quiet_group"}
    assert registry.get_sample_value("migrate_feature_age_seconds_count", none) is None
    for group, age in expected.items():
        labels = {"usecase": USECASE.name, "group": group}
        assert registry.get_sample_value("migrate_feature_age_seconds_count", labels) == 2, group
        assert registry.get_sample_value("migrate_feature_age_seconds_sum", labels) == 2 * age, group


def test_paths_error_texts_are_the_ones_the_reasons_read() -> None:
    """The reasons are read from the errors Paths writes: keep the two in step."""
    down = Paths(lookup=None, lookup_spec=None, predictor=None, down="x")
    assert fallback_reason(down.online([(1, 1)], [0], NOW, {}).error or "") == "model_not_loaded"


class Recorder:
    """A shadow sink that keeps what it is handed."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Request, list[str], Outcome, Outcome]] = []

    def submit(self, req: Request, served: Any, online: Outcome, batch: Outcome) -> bool:
        self.jobs.append((req, list(served), online, batch))
        return True

    def health(self) -> str | None:
        return None


@pytest.mark.parametrize("stage", [Stage.SHADOW, Stage.ONLINE])
def test_a_sampled_shadow_hands_over_only_its_entities_each_with_its_own_answers(stage: Stage) -> None:
    """At 30 % the comparison gets the sampled entities of the request, renumbered, each with what its own path
    answered; the others are counted, and every entity is still answered. A request with none sampled costs no
    job; at 100 % every entity goes."""
    sampled = USECASE.model_copy(update={"shadow": ShadowSpec(sample_percent=30)})
    registry, recorder = CollectorRegistry(), Recorder()
    server, _ = _server(StubPaths(None), stage, registry, usecase=sampled, shadow=recorder)
    entities = _entities(40)
    answer = asyncio.run(server.predict(entities, {}))
    assert len(answer["predictions"]) == 40
    inside = [e for e in entities if in_shadow_sample(USECASE.name, (e["store_id"], e["product_id"]), 30)]
    assert 0 < len(inside) < 40
    [(req, served, online, batch)] = recorder.jobs
    assert list(req.entities) == inside and req.keys == [(e["store_id"], e["product_id"]) for e in inside]
    assert req.sample_percent == 30
    expected = "batch" if stage is Stage.SHADOW else "online"
    assert served == [expected] * len(inside)
    if stage is Stage.SHADOW:  # the lookup answered (even product ids have a row) and the online path was not asked
        assert sorted(batch.results) == list(range(len(inside))) and not online.results
        assert [batch.results[j] is not None for j in range(len(inside))] == [
            int(e["product_id"]) % 2 == 0 for e in inside
        ]
    else:  # the online path answered every entity; the lookup was not read (the comparison reads it)
        assert sorted(online.results) == list(range(len(inside))) and not batch.results
    unsampled = registry.get_sample_value("migrate_shadow_unsampled_total", {"usecase": USECASE.name})
    assert unsampled == 40 - len(inside)

    outside = [e for e in entities if e not in inside][:3]
    asyncio.run(server.predict(outside, {}))
    assert len(recorder.jobs) == 1  # nothing of it sampled: no job
    assert registry.get_sample_value("migrate_shadow_unsampled_total", {"usecase": USECASE.name}) == unsampled + 3

    everyone, registry = Recorder(), CollectorRegistry()
    server, _ = _server(StubPaths(None), stage, registry, shadow=everyone)
    asyncio.run(server.predict(entities, {}))
    assert [len(job[0].keys) for job in everyone.jobs] == [40] and everyone.jobs[0][0].sample_percent == 100


def test_an_outcome_for_some_of_its_entities_is_renumbered_in_their_order() -> None:
    outcome = Outcome({0: "a", 2: "c", 3: None}, 1.5, "e", frozenset({0, 2, 3}))
    assert outcome.only([3, 2]) == Outcome({1: "c", 0: None}, 1.5, "e", frozenset({0, 1}))
    assert outcome.only([1]) == Outcome({}, 1.5, "e", frozenset())
