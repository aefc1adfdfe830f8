"""Key-aware fuzzing of the predict endpoint: requests built from each use case's declared keys, context and
limits, valid or broken in one known way, each sent through the real routes, validation and `UseCaseServer`.

The strategy knows whether it built a valid request; the service must agree: 200 for every valid one (with each
entity answered, in order), 422 naming the body for every other, and never a 5xx. Together with
test_openapi_fuzz.py these send more than 10,000 requests (`REQUESTS_PER_USECASE` × 4 use cases here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fuzz_app import fuzz_app, usecases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.usecase import ContextFeature, UseCase
from online.serving.schemas import MAX_ENTITIES, PredictResponse
from online.serving.validation import INT64_MAX, INT64_MIN

pytestmark = pytest.mark.unit

REQUESTS_PER_USECASE = 2_000
USECASES = usecases()


@dataclass(frozen=True)
class Built:
    """A request body and whether the use case accepts it (decided here, independently of the service)."""

    body: Any
    valid: bool


def _all_valid(parts: list[Built]) -> bool:
    return all(part.valid for part in parts)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Built]:
    """A valid value about seven times in eight, so that many requests with several values are still valid (the
    rare branch is the largest roll: Hypothesis favours the smallest)."""
    return st.integers(0, 7).flatmap(
        lambda roll: bad.map(lambda v: Built(v, False)) if roll == 7 else good.map(lambda v: Built(v, True))
    )


# --- leaves ---------------------------------------------------------------------------------------------------

VALID_INT = st.integers(INT64_MIN, INT64_MAX)
INTEGRAL_FLOAT = st.integers(-(2**53), 2**53).map(float)  # 3.0: JSON Schema's integer includes it
FRACTIONAL = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
PAST_64_BITS = (
    st.integers(min_value=INT64_MAX + 1)
    | st.integers(max_value=INT64_MIN - 1)
    | st.floats(min_value=2.0**63, allow_infinity=False)
    | st.floats(max_value=-(2.0**63) * 1.001, allow_infinity=False)  # -2**63 itself is in range
)
NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
NOT_AN_INT = FRACTIONAL | NOT_FINITE | PAST_64_BITS
IN_RANGE_FLOAT = st.floats(-9.2e18, 9.2e18, allow_nan=False)
# JSON values an undeclared context key may hold (numbers finite and within the signed 64-bit range), and ones
# it may not (NaN, ±inf, past 64 bits: JSON cannot carry them back to the shadow log).
JSON_LEAF = st.none() | st.booleans() | VALID_INT | IN_RANGE_FLOAT | st.text()
JSON_VALUE = st.recursive(
    JSON_LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3), max_leaves=6
)
BAD_LEAF = NOT_FINITE | PAST_64_BITS


def key_value(kind: str) -> st.SearchStrategy[Built]:
    if kind == "int":
        good = VALID_INT | INTEGRAL_FLOAT
        bad = NOT_AN_INT | st.booleans() | st.text() | st.lists(VALID_INT, max_size=2) | st.none()
    else:
        good = st.text(max_size=30)
        bad = VALID_INT | st.booleans() | IN_RANGE_FLOAT | NOT_FINITE | st.lists(st.text(), max_size=2) | st.none()
    return _mostly(good, bad)


@st.composite
def entity(draw: st.DrawFn, usecase: UseCase) -> Built:
    values = {key.name: draw(key_value(key.type)) for key in usecase.entity.keys}
    body = {name: built.body for name, built in values.items()}
    valid = _all_valid(list(values.values()))
    if draw(st.integers(0, 19)) == 19:  # a key left out
        body.pop(draw(st.sampled_from(sorted(body))))
        valid = False
    if draw(st.integers(0, 19)) == 19:  # a column the use case is not keyed by
        extra = draw(st.text(min_size=1, max_size=10).filter(lambda n: n not in body))
        body[extra] = draw(JSON_LEAF)
        valid = False
    return Built(body, valid)


def _in_bounds(item: ContextFeature) -> st.SearchStrategy[Any]:
    low = item.min if item.min is not None else -1e12
    high = item.max if item.max is not None else 1e12
    ints = st.integers(math.ceil(low), math.floor(high))
    if item.type == "int":
        return ints | ints.map(float)
    return st.floats(low, high, allow_nan=False, allow_infinity=False) | ints


def context_value(item: ContextFeature) -> st.SearchStrategy[Built]:
    if item.type == "str":
        good: st.SearchStrategy[Any] = st.text(max_size=30)
        bad: st.SearchStrategy[Any] = VALID_INT | st.booleans() | IN_RANGE_FLOAT | NOT_FINITE
    elif item.type == "bool":
        good, bad = st.booleans(), VALID_INT | st.text() | IN_RANGE_FLOAT | NOT_FINITE
    else:
        good = _in_bounds(item)
        bad = BAD_LEAF | st.booleans() | st.text()
        if item.min is not None:
            bad |= st.floats(max_value=item.min, exclude_max=True, allow_nan=False, allow_infinity=False)
        if item.max is not None:
            bad |= st.floats(min_value=item.max, exclude_min=True, allow_nan=False, allow_infinity=False)
        if item.type == "int":
            bad |= FRACTIONAL
    return _mostly(good, bad)


@st.composite
def context(draw: st.DrawFn, usecase: UseCase) -> Built:
    body: dict[str, Any] = {}
    valid = True
    for item in usecase.context:
        if draw(st.integers(0, 9)) == 9:  # left out: refused only when required (null counts as left out)
            if draw(st.booleans()):
                body[item.name] = None
            valid = valid and not item.required
            continue
        built = draw(context_value(item))
        body[item.name] = built.body
        valid = valid and built.valid
    declared = {item.name for item in usecase.context}
    extras = draw(st.dictionaries(st.text(max_size=10).filter(lambda n: n not in declared), JSON_VALUE, max_size=3))
    body |= extras
    if draw(st.integers(0, 15)) == 15:  # an undeclared value JSON cannot carry back, nested or not
        bad = draw(BAD_LEAF)
        body[draw(st.text(max_size=10).filter(lambda n: n not in declared))] = draw(
            st.sampled_from([bad, [bad], {"deep": [1, bad]}])
        )
        valid = False
    return Built(body, valid)


@st.composite
def request_body(draw: st.DrawFn, usecase: UseCase) -> Built:
    none = draw(st.integers(0, 19)) == 19  # an empty list of entities
    entities = [] if none else draw(st.lists(entity(usecase), min_size=1, max_size=4))
    built_context = draw(context(usecase))
    valid = bool(entities) and _all_valid(entities) and built_context.valid
    body: dict[str, Any] = {"entities": [e.body for e in entities]}
    if built_context.body or draw(st.booleans()):
        body["context"] = built_context.body
    elif any(item.required for item in usecase.context):  # no context at all: its required values are missing
        valid = False
    if draw(st.integers(0, 19)) == 19:  # a top-level field the API does not take
        body["colour"] = "red"
        valid = False
    return Built(body, valid)


# --- the test -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app, _ = fuzz_app()
    with TestClient(app, raise_server_exceptions=False) as served:
        yield served


SEEN: dict[str, int] = {}  # statuses seen across the module, to show both kinds of request were sent


def check(client: TestClient, usecase: UseCase, built: Built) -> None:
    raw = json.dumps(built.body, allow_nan=True).encode()  # NaN and Infinity as JSON literals
    url = f"/v1/models/{usecase.name}/predict"
    response = client.post(url, content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    SEEN[str(response.status_code)] = SEEN.get(str(response.status_code), 0) + 1
    if built.valid:
        assert response.status_code == 200, (raw, response.text)
        answer = PredictResponse.model_validate_json(response.content)
        assert [p.key for p in answer.predictions] == built.body["entities"]
        assert {p.source for p in answer.predictions} <= {"batch", "batch_fallback"}
    else:
        assert response.status_code == 422, (raw, response.text)
        errors = response.json()["detail"]
        assert errors and all(error["loc"][0] == "body" for error in errors), errors


@pytest.mark.parametrize("name", sorted(USECASES))
def test_no_request_built_from_the_use_case_gets_a_5xx(client: TestClient, name: str) -> None:
    usecase = USECASES[name]

    @settings(
        max_examples=REQUESTS_PER_USECASE,
        deadline=None,
        derandomize=True,  # the same requests on every run: a failure is reproducible, CI is not flaky
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(request_body(usecase))
    def fuzz(built: Built) -> None:
        check(client, usecase, built)

    before = dict(SEEN)
    fuzz()
    sent = {status: SEEN[status] - before.get(status, 0) for status in SEEN}
    # Both kinds, in earnest: a strategy that built only broken (or only valid) requests would prove little.
    assert sent.get("200", 0) >= REQUESTS_PER_USECASE // 5 and sent.get("422", 0) >= REQUESTS_PER_USECASE // 5, sent
    assert sum(sent.values()) >= REQUESTS_PER_USECASE
    assert MAX_ENTITIES == 1_000  # the strategy stays far below it; test_app_requests sends 1,001
