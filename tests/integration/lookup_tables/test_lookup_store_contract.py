"""The lookup-store contract, run against every backend (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
import sqlalchemy as sa
from lookup_support import AS_OF, T0, Table, keys_for, make_batch, spec_for

from lookup_tables import KeyColumn, RunRecord, catalog, open_store
from lookup_tables.engine import create_engine_for, sql_url
from migrate.errors import (
    DuplicateKeysError,
    InvalidChunkError,
    LookupStoreError,
    NoActiveVersionError,
    RollbackError,
)

pytestmark = pytest.mark.integration


def statuses(table: Table) -> dict[int, str]:
    return {info.version: info.status for info in table.store.versions(table.spec)}


def test_reads_before_any_publish_say_how_to_publish(table: Table) -> None:
    with pytest.raises(NoActiveVersionError, match="migrate score item_availability"):
        table.store.get(table.spec, (1, "s1"))
    with pytest.raises(NoActiveVersionError):
        table.store.get_many(table.spec, keys_for(3))
    with pytest.raises(NoActiveVersionError):
        table.store.sample(table.spec)
    assert table.store.active(table.spec) is None


def test_publish_v1_then_v2_readers_see_v2_with_metadata(table: Table) -> None:
    first = table.release(1.0, day=1)
    assert (first.version, first.activated, first.reused) == (1, True, False)
    assert table.store.get(table.spec, (7, "s2")) is not None
    info = table.load(2.0, day=2, model="m2", run_id="run-day-2")
    result = table.publish(info, checksum="c2")
    assert (result.version, result.activated) == (2, True)

    rows = table.store.get_many(table.spec, [*keys_for(1_000), (5_000, "s0"), (7, "s3")])
    assert len(rows) == 1_000
    assert {row.prediction for row in rows.values()} == {2.0}
    row = rows[(7, "s2")]
    assert row.key == (7, "s2")
    assert (row.model_version, row.run_id, row.version) == ("m2", "run-day-2", 2)
    assert row.features_as_of == AS_OF and row.features_as_of.utcoffset() == timedelta(0)
    assert row.scored_at == T0 + timedelta(hours=3) and row.scored_at.utcoffset() == timedelta(0)
    assert table.store.get(table.spec, (7, "s2")) == row
    assert table.store.get(table.spec, (7, "s3")) is None
    assert table.store.get_many(table.spec, []) == {}
    assert [row.key for row in table.store.sample(table.spec, 3)] == [(0, "s0"), (1, "s1"), (2, "s2")]
    assert table.store.sample(table.spec, 3)[1] == table.store.get(table.spec, (1, "s1"))

    active = table.store.active(table.spec)
    assert active is not None
    assert (active.version, active.status, active.row_count, active.checksum) == (2, "active", 1_000, "c2")
    assert active.published_at is not None and active.data_interval_end == T0 + timedelta(days=2)
    assert statuses(table) == {2: "active", 1: "ready"}
    assert [info.version for info in table.store.versions(table.spec)] == [2, 1]


def test_stats_describe_a_loading_version(table: Table) -> None:
    info = table.load(0.25, n=100, chunks=1)
    batch = make_batch(10, 0.0, start=100).set_column(2, "prediction", pa.array([None] * 9 + [0.75], pa.float64()))
    table.store.write_chunk(table.spec, info.version, 1, batch)
    stats = table.store.stats(table.spec, info.version)
    assert (stats.row_count, stats.null_predictions) == (110, 9)
    assert (stats.min_prediction, stats.max_prediction) == (0.25, 0.75)


def test_rewriting_a_chunk_replaces_it(table: Table) -> None:
    info = table.load(1.0, n=100, chunks=1)
    assert table.store.write_chunk(table.spec, info.version, 0, make_batch(100, 3.0)) == 100
    assert table.store.write_chunk(table.spec, info.version, 1, make_batch(50, 3.0, start=100)) == 50
    assert table.store.stats(table.spec, info.version).row_count == 150
    table.publish(info)
    assert {row.prediction for row in table.store.get_many(table.spec, keys_for(150)).values()} == {3.0}


def test_a_retried_task_gets_its_loading_version_back(table: Table) -> None:
    first = table.load(1.0, run_id="run-a")
    again = table.load(1.0, run_id="run-a")
    assert again.version == first.version
    assert table.store.stats(table.spec, first.version).row_count == 1_000


def test_a_new_run_abandons_other_loading_versions(table: Table) -> None:
    stale = table.load(1.0, run_id="run-dead")
    fresh = table.load(2.0, run_id="run-new")
    assert fresh.version == stale.version + 1
    assert statuses(table)[stale.version] == "retired"
    with pytest.raises(LookupStoreError, match="retired"):
        table.store.write_chunk(table.spec, stale.version, 5, make_batch(1, 1.0))
    with pytest.raises(LookupStoreError, match="retired"):
        table.store.stats(table.spec, stale.version)


def test_rerunning_an_interval_with_identical_data_reuses_the_active_version(table: Table) -> None:
    table.release(1.0, day=1)
    before = table.store.active(table.spec)
    again = table.release(1.0, day=1)
    assert (again.version, again.activated, again.reused) == (1, False, True)
    assert "identical" in again.reason
    after = table.store.active(table.spec)
    assert after is not None and before is not None
    assert (after.version, after.row_count, after.checksum) == (1, before.row_count, before.checksum)
    assert statuses(table) == {2: "retired", 1: "active"}
    rows = table.store.get_many(table.spec, keys_for(1_000))
    assert len(rows) == 1_000 and table.store.stats(table.spec, 1).row_count == 1_000


def test_rerunning_an_interval_with_new_data_activates_it(table: Table) -> None:
    table.release(1.0, day=1)
    result = table.release(1.5, day=1)
    assert (result.version, result.activated, result.reused) == (2, True, False)


def test_publishing_twice_is_harmless(table: Table) -> None:
    info = table.load(1.0)
    assert table.publish(info).activated
    again = table.publish(info)
    assert (again.version, again.activated, again.reused) == (info.version, True, False)


def test_an_older_interval_does_not_replace_a_newer_active_version(table: Table) -> None:
    table.release(2.0, day=2)
    late = table.release(1.0, day=1)
    assert (late.version, late.activated, late.reused) == (2, False, False)
    assert "before the active version 1" in late.reason
    assert statuses(table) == {2: "ready", 1: "active"}
    assert table.store.get(table.spec, (3, "s3")).prediction == 2.0  # type: ignore[union-attr]


def test_retention_keeps_the_active_and_k_previous_versions(table: Table) -> None:
    for day in range(1, 6):
        table.release(float(day), day=day, n=50)
    assert statuses(table) == {5: "active", 4: "ready", 3: "ready", 2: "retired", 1: "retired"}
    with pytest.raises(LookupStoreError, match="retired"):
        table.store.stats(table.spec, 1)


def test_rollback_switches_back_and_forward(table: Table) -> None:
    for day in range(1, 4):
        table.release(float(day), day=day, n=200)

    back = table.store.rollback(table.spec)
    assert (back.version, back.status) == (2, "active")
    assert {row.prediction for row in table.store.get_many(table.spec, keys_for(200)).values()} == {2.0}
    assert table.store.get(table.spec, (1, "s1")).version == 2  # type: ignore[union-attr]
    assert statuses(table) == {3: "ready", 2: "active", 1: "ready"}

    forward = table.store.rollback(table.spec, to=3)
    assert forward.version == 3
    assert table.store.get(table.spec, (1, "s1")).prediction == 3.0  # type: ignore[union-attr]
    assert table.store.rollback(table.spec, to=3).version == 3

    assert table.store.rollback(table.spec, to=1).version == 1
    with pytest.raises(RollbackError, match="item_availability"):
        table.store.rollback(table.spec)


def test_rollback_to_an_unknown_or_retired_version_is_refused(table: Table) -> None:
    with pytest.raises(RollbackError, match="no active version"):
        table.store.rollback(table.spec)
    for day in range(1, 5):
        table.release(float(day), day=day, n=20)
    with pytest.raises(RollbackError, match=r"version 1: it is retired"):
        table.store.rollback(table.spec, to=1)
    with pytest.raises(RollbackError, match=r"version 99: it is unknown"):
        table.store.rollback(table.spec, to=99)
    assert table.store.active(table.spec).version == 4  # type: ignore[union-attr]


def test_duplicate_keys_are_refused_and_the_active_version_stays(table: Table) -> None:
    table.release(1.0, n=100)
    info = table.load(2.0, n=100, day=2, chunks=1)
    table.store.write_chunk(table.spec, info.version, 1, make_batch(10, 2.0, start=95))
    with pytest.raises(DuplicateKeysError, match=r"duplicate keys, e.g. \(9[5-9], 's\d'\)"):
        table.publish(info)
    assert table.store.active(table.spec).version == 1  # type: ignore[union-attr]
    assert statuses(table)[info.version] == "loading"
    assert {row.prediction for row in table.store.get_many(table.spec, keys_for(100)).values()} == {1.0}
    table.store.abandon(table.spec, info.version)
    assert statuses(table)[info.version] == "retired"


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("prediction", [0.5, math.nan], "NaN"),
        ("item_id", [1, None], "null"),
    ],
)
def test_bad_chunks_are_refused(table: Table, column: str, values: list[object], message: str) -> None:
    info = table.load(1.0, n=10)
    batch = make_batch(2, 0.5, start=100)
    batch = batch.set_column(
        batch.column_names.index(column), column, pa.array(values, batch.schema.field(column).type)
    )
    with pytest.raises(InvalidChunkError, match=message):
        table.store.write_chunk(table.spec, info.version, 9, batch)
    assert table.store.stats(table.spec, info.version).row_count == 10


def test_chunks_need_the_key_prediction_and_zoned_timestamp_columns(table: Table) -> None:
    info = table.load(1.0, n=10)
    with pytest.raises(InvalidChunkError, match="lacks columns"):
        table.store.write_chunk(table.spec, info.version, 3, make_batch(2, 1.0).drop_columns(["store"]))
    naive = make_batch(2, 1.0).set_column(3, "features_as_of", pa.array([datetime(2024, 1, 1)] * 2))
    with pytest.raises(InvalidChunkError, match="time zone"):
        table.store.write_chunk(table.spec, info.version, 3, naive)


def test_a_published_version_takes_no_more_chunks(table: Table) -> None:
    info = table.load(1.0, n=10)
    table.publish(info)
    with pytest.raises(LookupStoreError, match="active, no longer loading"):
        table.store.write_chunk(table.spec, info.version, 7, make_batch(1, 1.0, start=50))


def test_keys_of_the_wrong_shape_are_refused(table: Table) -> None:
    table.release(1.0, n=10)
    with pytest.raises(LookupStoreError, match="does not match the keys"):
        table.store.get(table.spec, (1,))
    with pytest.raises(LookupStoreError, match="not a str"):
        table.store.get(table.spec, (1, 2))


def test_naive_datetimes_are_refused(table: Table) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        table.store.begin_version(
            table.spec,
            run_id="r",
            model_version="m",
            data_interval_start=datetime(2024, 1, 1),
            data_interval_end=datetime(2024, 1, 2),
        )


def test_odd_run_ids_and_model_versions_survive_the_view(table: Table) -> None:
    info = table.load(1.0, n=10, run_id="manual__2024-01-01T00:00:00+00:00 'quoted' \\ back", model="v'1; DROP")
    table.publish(info)
    row = table.store.get(table.spec, (1, "s1"))
    assert row is not None
    assert (row.run_id, row.model_version) == ("manual__2024-01-01T00:00:00+00:00 'quoted' \\ back", "v'1; DROP")


def test_use_cases_are_independent(table: Table) -> None:
    other = type(table)(
        table.store,
        spec_for().__class__(usecase="churn", name="lt_churn", keys=table.spec.keys, keep_versions=1),
        table.url,
    )
    table.release(1.0, n=10)
    with pytest.raises(NoActiveVersionError, match="churn"):
        other.store.get(other.spec, (1, "s1"))
    other.release(5.0, n=10)
    assert table.store.get(table.spec, (1, "s1")).prediction == 1.0  # type: ignore[union-attr]
    assert other.store.get(other.spec, (1, "s1")).prediction == 5.0  # type: ignore[union-attr]


def test_batch_runs_are_recorded_and_replaced_by_run_id(table: Table) -> None:
    def run(run_id: str, outcome: str, hour: int) -> RunRecord:
        return RunRecord(
            run_id=run_id,
            usecase="item_availability",
            data_interval_start=T0,
            data_interval_end=T0 + timedelta(days=1),
            version=1,
            outcome=outcome,
            row_count=10,
            checksum="abc",
            started_at=T0 + timedelta(hours=hour),
            finished_at=T0 + timedelta(hours=hour, minutes=5),
            details={"chunks": 2, "note": "ok"},
        )

    table.store.record_run(run("r1", "failed", 1))
    table.store.record_run(run("r2", "published", 2))
    table.store.record_run(run("r1", "published", 1))
    runs = table.store.runs("item_availability")
    assert [(r.run_id, r.outcome) for r in runs] == [("r2", "published"), ("r1", "published")]
    assert runs[1] == run("r1", "published", 1)
    assert table.store.runs("item_availability", limit=1)[0].run_id == "r2"
    assert table.store.runs("churn") == []


def test_ensure_schema_is_idempotent_and_a_second_store_sees_the_same_data(table: Table) -> None:
    table.release(1.0, n=10)
    table.store.ensure_schema()
    second = open_store(table.url)
    try:
        second.ensure_schema()
        assert second.get(table.spec, (1, "s1")).prediction == 1.0  # type: ignore[union-attr]
    finally:
        second.close()


def test_an_unreachable_database_names_the_server_and_the_fix() -> None:
    dead = open_store("postgresql://user:s3cret@127.0.0.1:1/nowhere", timeout_s=2)
    with pytest.raises(LookupStoreError, match=r"127\.0\.0\.1:1") as caught:
        dead.active(spec_for())
    assert "MIGRATE_SQL_URL" in str(caught.value) and "s3cret" not in str(caught.value)
    assert "s3cret" not in dead.url


def test_a_new_key_layout_replaces_the_view(table: Table) -> None:
    table.release(1.0, n=10)
    wider = type(table.spec)(
        usecase=table.spec.usecase,
        name=table.spec.name,
        keys=(*table.spec.keys, KeyColumn("day", "int")),
        keep_versions=table.spec.keep_versions,
    )
    info = table.store.begin_version(
        wider, run_id="wide", model_version="m9", data_interval_start=T0, data_interval_end=T0 + timedelta(days=3)
    )
    table.store.write_chunk(wider, info.version, 0, make_batch(3, 9.0).append_column("day", pa.array([7, 7, 7])))
    assert table.store.publish(wider, info.version, checksum="w", scored_at=T0).activated
    row = table.store.get(wider, (1, "s1", 7))
    assert row is not None and (row.prediction, row.version) == (9.0, 2)


def test_get_many_reads_what_sqlalchemy_reads_from_the_view(table: Table) -> None:
    """`get_many` reads the driver's own tuples and converts their times itself (every request's hot path): each
    row must equal what SQLAlchemy's typed query of the same view gives, with NULL predictions, several distinct
    `features_as_of` (microseconds apart), aware UTC times, and again from the times a first read remembered."""
    info = table.store.begin_version(
        table.spec,
        run_id="run-typed",
        model_version="m-typed",
        data_interval_start=T0,
        data_interval_end=T0 + timedelta(days=1),
    )
    stamps = [AS_OF - timedelta(hours=h, microseconds=7 * h) for h in range(6)]
    batches = [make_batch(50, 0.5 + h, start=50 * h, as_of=stamp) for h, stamp in enumerate(stamps)]
    batches[0] = batches[0].set_column(2, "prediction", pa.array([None] * 50, pa.float64()))
    table.store.write_chunk(table.spec, info.version, 0, pa.concat_tables(batches))
    table.publish(info)

    engine = create_engine_for(sql_url(table.url), timeout_s=10.0)
    try:
        with engine.connect() as conn:
            typed = {tuple(row[:2]): tuple(row[2:]) for row in conn.execute(sa.select(catalog.view_table(table.spec)))}
    finally:
        engine.dispose()
    assert len(typed) == 300
    for _ in range(2):
        rows = table.store.get_many(table.spec, keys_for(300))
        assert {
            key: (r.prediction, r.features_as_of, r.model_version, r.scored_at, r.run_id, r.version)
            for key, r in rows.items()
        } == typed
        assert all(r.features_as_of.utcoffset() == r.scored_at.utcoffset() == timedelta(0) for r in rows.values())
    assert {rows[(k, f"s{k % 5}")].features_as_of for k in range(0, 300, 50)} == set(stamps)
    assert [rows[(k, f"s{k % 5}")].prediction for k in (0, 49, 50)] == [None, None, 1.5]
