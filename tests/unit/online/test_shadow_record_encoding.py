"""wire_record: a record sent as the bytes ShadowRecord(...) gives (its JSON and its Kafka key), without the model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online.shadow.record import RequestRecords, ShadowRecord, wire_record

NOW = datetime(2026, 12, 3, 9, 30, 15, 123456, tzinfo=UTC)


class _Float(float):
    """A float subclass, as a library's own number type may be."""


_numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.booleans(),
)
# A feature map's values as a caller may hand them: plain floats (what the comparison process decodes, copied in one
# step when every value is one), and NumPy's and other float subclasses, which JSON cannot carry as they are.
_feature_values = st.one_of(
    _numbers,
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.floats(allow_nan=True, allow_infinity=True).map(_Float),
)
_names = st.text(min_size=1, max_size=12)
_texts = st.one_of(st.none(), st.text(max_size=20))
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _fields(draw: st.DrawFn) -> dict[str, Any]:
    """Values of every field a ShadowRecord accepts, hostile ones included (NaN, ±inf, ints where floats go)."""
    offset = draw(st.integers(min_value=-12 * 60, max_value=14 * 60))
    fields: dict[str, Any] = {
        "request_id": draw(st.text(min_size=1, max_size=32)),
        "usecase": draw(st.text(min_size=1, max_size=16)),
        "key": draw(
            st.dictionaries(
                _names, st.one_of(st.integers(-(2**63), 2**63), st.text(max_size=10)), min_size=1, max_size=3
            )
        ),
        "request_time": NOW.astimezone(timezone(timedelta(minutes=offset)))
        + timedelta(microseconds=draw(st.integers(0, 10**9))),
        "served_source": draw(st.sampled_from(["batch", "online", "batch_fallback"])),
        "stage": draw(st.text(min_size=1, max_size=10)),
    }
    optional: dict[str, Any] = {
        "percent": st.one_of(st.integers(0, 100), st.floats(0, 100)),
        "sample_percent": st.one_of(st.integers(1, 100), st.floats(0.001, 100)),
        "batch_prediction": _numbers,
        "batch_miss": st.booleans(),
        "batch_data_age_s": _numbers,
        "batch_model_version": _texts,
        "lookup_version": st.one_of(st.none(), st.integers(-(2**63), 2**63)),
        "batch_latency_ms": _numbers,
        "batch_error": _texts,
        "online_prediction": _numbers,
        "online_feature_ages_s": st.dictionaries(_names, st.one_of(_feature_values, st.floats()), max_size=5),
        "online_features": st.dictionaries(_names, _feature_values, max_size=5),
        "online_model_version": _texts,
        "online_latency_ms": _numbers,
        "online_error": _texts,
        "candidate_prediction": _numbers,
        "candidate_model_version": _texts,
        "candidate_error": _texts,
        "candidate_latency_ms": _numbers,
        "context": st.dictionaries(st.text(max_size=6), _json, max_size=3),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):  # left out: both take the field's default
            fields[name] = draw(strategy)
    return fields


@settings(max_examples=400, deadline=None)
@given(fields=_fields())
def test_the_bytes_are_the_models_bytes_and_read_back_as_the_model(fields: dict[str, Any]) -> None:
    model = ShadowRecord(**fields)
    encoded = wire_record(**fields)
    assert encoded.to_json() == model.to_json()
    assert encoded.key_bytes() == model.key_bytes()
    assert encoded.request_id == model.request_id
    # What the sink reads off the topic, NaN compared as the JSON carries it (null).
    assert orjson.loads(encoded.decode().to_json()) == orjson.loads(model.to_json())


_SHARED = frozenset(
    (
        "request_id",
        "usecase",
        "request_time",
        "stage",
        "percent",
        "sample_percent",
        "batch_error",
        "candidate_error",
        "candidate_latency_ms",
        "context",
    )
)


@settings(max_examples=200, deadline=None)
@given(shared=_fields(), entities=st.lists(_fields(), min_size=1, max_size=4))
def test_the_records_of_one_request_are_each_the_models_bytes(
    shared: dict[str, Any], entities: list[dict[str, Any]]
) -> None:
    """A request's records share its fields: each is the model's bytes for the request's fields and its own, after
    every record of the request was built (one record's fields never leak into another's)."""
    request = {name: value for name, value in shared.items() if name in _SHARED}
    owns = [{name: value for name, value in fields.items() if name not in _SHARED} for fields in entities]
    records = RequestRecords(**request)
    sent = [records.record(**own) for own in owns]
    for own, record in zip(owns, sent, strict=True):
        model = ShadowRecord(**request, **own)
        assert record.to_json() == model.to_json()
        assert record.key_bytes() == model.key_bytes()
        assert record.request_id == model.request_id


def test_one_record_by_hand() -> None:
    encoded = wire_record(
        request_id="r1",
        usecase="item_availability",
        key={"store_id": 12, "product_id": 7},
        request_time=NOW,
        served_source="online",
        stage="online",
        percent=0,
        online_prediction=1,
        online_features={"found_rate_30m": None, "hour": 14, "price": float("nan")},
        online_feature_ages_s={"price": 90},
        context={"channel": "app"},
    )
    assert encoded.key_bytes() == b'{"product_id":7,"store_id":12}'
    text = encoded.to_json().decode()
    assert text.startswith('{"schema_version":1,"request_id":"r1","usecase":"item_availability",')
    assert '"request_time":"2026-12-03T09:30:15.123456+00:00"' in text
    assert '"percent":0.0,"sample_percent":100.0' in text  # ints where floats go are written as floats
    assert '"online_prediction":1.0' in text
    assert '"online_feature_ages_s":{"price":90.0}' in text
    assert '"online_features":{"found_rate_30m":null,"hour":14.0,"price":null}' in text  # NaN is null
    assert text.endswith('"context":{"channel":"app"}}')


def test_a_time_without_a_zone_and_an_unknown_source_are_refused_as_the_model_refuses_them() -> None:
    base: dict[str, Any] = {
        "request_id": "r1",
        "usecase": "u",
        "key": {"k": 1},
        "request_time": NOW,
        "served_source": "batch",
        "stage": "shadow",
    }
    for field, bad in (("request_time", NOW.replace(tzinfo=None)), ("served_source", "cache")):
        with pytest.raises(ValueError, match=field):
            wire_record(**(base | {field: bad}))
        with pytest.raises(ValueError, match=field):
            ShadowRecord(**(base | {field: bad}))


def test_a_feature_age_that_is_not_a_finite_number_reads_back_as_none() -> None:
    """Found by the property above: JSON carries NaN and infinities as null, which the record refused to read
    back, so the sink dead-lettered a record holding one such age."""
    record = ShadowRecord(
        request_id="r1",
        usecase="u",
        key={"k": 1},
        request_time=NOW,
        served_source="online",
        stage="online",
        online_feature_ages_s={"a": float("nan"), "b": float("inf"), "c": 2.5},
    )
    for data in (record.to_json(), wire_record(**record.model_dump(exclude={"schema_version"})).to_json()):
        assert ShadowRecord.from_json(data).online_feature_ages_s == {"a": None, "b": None, "c": 2.5}


def test_every_field_of_the_model_is_sent_in_its_order() -> None:
    """A field added to ShadowRecord and not to wire_record fails here first (the bytes would differ)."""
    sent = wire_record(request_id="r", usecase="u", key={"k": 1}, request_time=NOW, served_source="batch", stage="s")
    assert list(sent.fields) == list(ShadowRecord.model_fields)
