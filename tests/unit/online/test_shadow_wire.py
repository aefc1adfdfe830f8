"""The shadow job's bytes: what the comparison process decodes is what pickle (the library the queue used before)
would have carried, on hostile values: NaN, infinities, -0.0, extreme floats, any text, None results, errors."""

from __future__ import annotations

import dataclasses
import math
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookup_tables.records import LookupRow
from migrate.cutover.flags import Flag, Stage
from online.serving.prediction_paths import Outcome, Request
from online.serving.predictor import OnlineResult
from online.serving.shadow_wire import decode_job, encode_job

pytestmark = pytest.mark.unit

floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308])
texts = st.text(max_size=12)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
moments = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
keys = st.tuples(int64, texts) | st.tuples(int64) | st.tuples(texts, int64, texts)
json_values = st.recursive(
    st.none() | st.booleans() | int64 | floats | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def jobs(draw: st.DrawFn) -> tuple[str, Request, list[str], Outcome, Outcome]:
    n = draw(st.integers(min_value=0, max_value=6))
    request_keys: list[tuple[int | str, ...]] = [draw(keys) for _ in range(n)]
    names = draw(st.lists(texts, max_size=5, unique=True))
    flag = Flag(
        draw(texts),
        draw(st.sampled_from(list(Stage))),
        draw(st.none() | st.integers(1, 99)),
        draw(st.integers(0, 2**40)),
        draw(st.none() | moments),
        draw(st.none() | texts),
        draw(st.none() | texts),
    )
    req = Request(
        draw(texts),
        draw(moments),
        flag,
        request_keys,
        [{draw(texts): value} for value in draw(st.lists(int64 | texts, min_size=n, max_size=n))],
        draw(st.dictionaries(texts, json_values, max_size=3)),
        draw(st.floats(0.01, 100)),
    )
    online_results: dict[int, Any] = {}
    batch_results: dict[int, Any] = {}
    for i in range(n):
        if draw(st.booleans()):
            online_results[i] = OnlineResult(
                draw(floats),
                draw(texts),
                {name: draw(floats) for name in names},
                {name: draw(st.none() | floats) for name in names},
                draw(st.lists(texts, max_size=3)),
                {name: draw(st.none() | floats) for name in names},
                draw(floats),
                draw(floats),
            )
        else:
            online_results[i] = None
        batch_results[i] = (
            LookupRow(
                request_keys[i],
                draw(st.none() | floats),
                draw(texts),
                draw(moments),
                draw(moments),
                draw(texts),
                draw(int64),
            )
            if draw(st.booleans())
            else None
        )
    asked = frozenset(range(n))
    return (
        draw(texts),
        req,
        [draw(st.sampled_from(["batch", "online", "fallback"])) for _ in range(n)],
        Outcome(online_results, draw(floats), draw(st.none() | texts), asked),
        Outcome(batch_results, draw(floats), draw(st.none() | texts), frozenset(draw(st.sets(st.integers(0, 9))))),
    )


def same(a: Any, b: Any, where: str = "job") -> None:
    """a equals b, field by field, with NaN equal to NaN and -0.0 told from 0.0; the types must match too."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), where
    elif isinstance(a, datetime):
        assert a == b and a.utcoffset() == b.utcoffset(), where
    else:
        assert a == b, where


@settings(max_examples=300, deadline=None)
@given(jobs())
def test_a_decoded_job_is_what_pickle_would_have_carried(job: tuple[Any, ...]) -> None:
    same(decode_job(encode_job(*job)), pickle.loads(pickle.dumps(job)))


def test_numpy_scalars_arrive_as_the_numbers_they_hold() -> None:
    ages: dict[str, Any] = {"a": np.float32(1.5)}
    result = OnlineResult(np.float64(0.25), "v1", ages, {"a": np.float64("nan")})
    now = datetime(2026, 12, 1, tzinfo=UTC)
    req = Request("r", now, Flag("u", Stage.SHADOW), [(np.int64(7),)], [{"k": 7}], {})  # type: ignore[list-item]
    _, got_req, _, online, _ = decode_job(encode_job("u", req, ["batch"], Outcome({0: result}, 1.0), Outcome({}, 0)))
    decoded = online.results[0]
    assert decoded.prediction == 0.25 and type(decoded.prediction) is float
    assert decoded.feature_ages_s == {"a": 1.5} and math.isnan(decoded.features["a"])
    assert got_req.keys == [(7,)] and type(got_req.keys[0][0]) is int


def test_a_time_in_another_zone_arrives_as_the_same_instant_in_utc() -> None:
    local = datetime(2026, 12, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    req = Request("r", local, Flag("u"), [], [], {})
    _, got, _, _, _ = decode_job(encode_job("u", req, [], Outcome({}, 0.0), Outcome({}, 0.0)))
    assert got.now == local and got.now.utcoffset() == timedelta(0)


def test_a_value_the_job_cannot_carry_is_refused_by_name() -> None:
    req = Request("r", datetime(2026, 12, 1, tzinfo=UTC), Flag("u"), [], [], {"odd": object()})
    with pytest.raises(NotImplementedError, match="object"):
        encode_job("u", req, [], Outcome({}, 0.0), Outcome({}, 0.0))
