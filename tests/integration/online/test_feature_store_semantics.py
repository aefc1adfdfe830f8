"""The write semantics against a model: Redis's contents and the counts after random writes equal a hand computation.

The model applies the decision table of online/features/store.py's docstring to plain dicts of encoded strings;
hostile values (NaN, ±inf, -0.0, subnormals, huge floats, missing), keys with unicode, ``:`` and ``%``, event
times drawn from a few instants (so equal times, corrections and stale writes all happen), one shared time column
or one per feature, and both correction modes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.errors import CorrectionRejectedError
from online.features.redis_layout import batch_key
from online.features.redis_store import RedisFeatureStore
from online.features.store import MAX_EXAMPLES, WriteReport, encode_time, encode_value

pytestmark = pytest.mark.integration

FEATURES = ["a", "b", "c"]
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
INSTANTS = [T0 + timedelta(hours=h, microseconds=m) for h, m in [(0, 0), (0, 1), (24, 0)]]
KEYS = [(0, "a"), (1, "b:c"), (-7, "50%"), (2**62, "é:%3A"), (3, ""), (4, "a"), (0, "b")]
VALUES = st.one_of(
    st.none(),
    st.floats(),
    st.sampled_from([0.0, -0.0, float("nan"), float("inf"), 5e-324, 1.7976931348623157e308, 1e16, 1.0]),
)
ROW = st.tuples(
    st.sampled_from(range(len(KEYS))), st.tuples(VALUES, VALUES, VALUES), st.tuples(*[st.sampled_from(INSTANTS)] * 3)
)
WRITE = st.tuples(
    st.lists(ROW, max_size=12, unique_by=lambda row: row[0]), st.booleans(), st.sampled_from(["reject", "apply"])
)

Stored = dict[tuple[int, str], dict[str, tuple[str, str]]]  # key → feature → (value text, time text)


def _apply(model: Stored, rows: list, shared: bool, mode: str) -> tuple[list[int], list[str]]:
    """The decision table by hand: the counts (written, unchanged, stale, corrected, rejected) and rejections."""
    counts = [0, 0, 0, 0, 0]
    rejected = []
    for index, values, times in rows:
        key = KEYS[index]
        stored = model.setdefault(key, {})
        for j, name in enumerate(FEATURES):
            value = encode_value(values[j])
            moment = encode_time(times[0] if shared else times[j])
            old = stored.get(name)
            if old is None or int(old[1]) < int(moment):
                counts[0] += 1
                stored[name] = (value, moment)
            elif int(old[1]) > int(moment):
                counts[2] += 1
            elif old[0] == value:
                counts[1] += 1
            elif mode == "apply":
                counts[3] += 1
                stored[name] = (value, moment)
            else:
                counts[4] += 1
                rejected.append(f"{key}/{name}")
        if not stored:
            del model[key]
    return counts, rejected


def _table(rows: list) -> pa.Table:
    timestamps = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "s": [KEYS[r[0]][0] for r in rows],
            "p": pa.array([KEYS[r[0]][1] for r in rows], pa.string()),
            **{name: pa.array([r[1][j] for r in rows], pa.float64()) for j, name in enumerate(FEATURES)},
            **{f"t_{name}": pa.array([r[2][j] for r in rows], timestamps) for j, name in enumerate(FEATURES)},
        }
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(WRITE, min_size=1, max_size=4))
def test_random_writes_leave_what_the_decision_table_says(
    feature_store: RedisFeatureStore, writes: list[tuple[list, bool, str]]
) -> None:
    usecase = f"t_{uuid.uuid4().hex[:12]}"
    model: Stored = {}
    try:
        for rows, shared, mode in writes:
            if not rows:
                continue
            counts, rejected = _apply(model, rows, shared, mode)
            times = "t_a" if shared else {name: f"t_{name}" for name in FEATURES}
            try:
                report = feature_store.write_features(
                    usecase, ["s", "p"], _table(rows), FEATURES, times, on_correction=mode
                )  # type: ignore[arg-type]
                assert not rejected
            except CorrectionRejectedError as caught:
                assert rejected and mode == "reject"
                assert isinstance(caught.report, WriteReport)
                report = caught.report
            got = [report.written, report.unchanged, report.stale, report.corrected, report.rejected]
            assert (report.entities, got) == (len(rows), counts)
            assert [f"{r.key}/{r.feature}" for r in report.rejected_examples] == rejected[:MAX_EXAMPLES]

        client = feature_store.client
        assert {k.decode() for k in client.scan_iter(f"mig:{usecase}#b:*", count=1_000)} == {
            batch_key(usecase, key) for key in model
        }
        for key, stored in model.items():
            raw = client.get(batch_key(usecase, key))
            assert raw is not None, key
            assert _record_by_hand(raw) == {name.encode(): (v.encode(), t.encode()) for name, (v, t) in stored.items()}
    finally:
        keys = list(feature_store.client.scan_iter(f"mig:{usecase}#b:*", count=1_000))
        if keys:
            feature_store.client.delete(*keys)


def _record_by_hand(raw: bytes) -> dict[bytes, tuple[bytes, bytes]]:
    """A stored record read as docs/online_features.md describes it, checked to be canonical on the way."""
    lines = raw.split(b"\n")
    assert len(lines) in (3, 4), raw
    low, high = lines[0].split(b",")
    names, values = lines[1].split(b","), lines[2].split(b",")
    times = lines[3].split(b",") if len(lines) == 4 else [low] * len(names)
    numbers = [int(t) for t in times]
    assert (int(low), int(high)) == (min(numbers), max(numbers)), raw
    assert (len(lines) == 4) == (min(numbers) != max(numbers)), raw  # the times line only when they differ
    assert len(names) == len(values) == len(times) == len(set(names)), raw
    return {name: (value, time) for name, value, time in zip(names, values, times, strict=True)}
