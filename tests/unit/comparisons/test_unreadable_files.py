"""A damaged shadow-log or label file is an `UnreadableLogError` naming it, also when DuckDB's own error names no
file (a damaged page's header reads as a bare ``duckdb.Error``: "don't know what type", "TProtocolException"), and
also when only a measure after the load reads the damaged column (comparisons/shadow_rows.py, `readable`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from comparison_fixtures import USECASE, at, label, record, write_shadow
from duckdb.sqltypes import BIGINT
from parquet_damage import damage_page

from comparisons import segments, skew
from comparisons.comparison import compare
from comparisons.shadow_rows import Rows, Window, damaged_file, load, logged_requests, readable, wrong_columns
from migrate.errors import UnreadableLogError
from migrate.settings import Settings
from migrate.usecase import UseCase
from online.shadow.parquet import label_table

pytestmark = pytest.mark.unit


def _world(settings: Settings) -> None:
    features: dict[str, float | None] = {"found_rate_1d": 0.4, "scans_1d": 3.0}
    write_shadow(
        settings,
        [record(1, 0, features=features), record(2, 70, product=11, features=features)],
        [label(30, 1.0), label(100, 0.0, product=11)],
    )


def _refused_by_both(settings: Settings, usecase: UseCase, window: Window | None = None) -> list[UnreadableLogError]:
    """The error each reader of the log raises: the comparison's (`load`) and the spine's (`logged_requests`)."""
    errors = []
    for read in (load, logged_requests):
        with pytest.raises(UnreadableLogError) as caught:
            read(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, window or Window())
        errors.append(caught.value)
    return errors


@pytest.mark.parametrize(("kind", "column"), [("label", "event_time"), ("shadow-log", "request_time")])
def test_a_damaged_page_duckdb_does_not_place_is_found_and_named(
    settings: Settings, usecase: UseCase, kind: str, column: str
) -> None:
    _world(settings)
    root = (settings.labels_dir if kind == "label" else settings.shadow_dir) / USECASE
    damaged = next(root.glob("date=*/hour=07/*.parquet"))
    damage_page(damaged, column)
    with pytest.raises(duckdb.Error) as bare:  # what DuckDB says of it: no file named
        duckdb.execute(f"SELECT max(hash({column})) FROM read_parquet('{damaged}')").fetchall()
    assert type(bare.value) is duckdb.Error and str(damaged) not in str(bare.value)
    for error in _refused_by_both(settings, usecase):
        assert f"a {kind} file under {root}" in error.what and str(damaged) in error.what
        assert error.what.isprintable(), error.what  # DuckDB's "don't know what type: \x0f" holds the raw byte
        assert error.fix is not None and "move that file out" in error.fix


@pytest.mark.parametrize("kind", ["label", "shadow-log"])
def test_a_file_cut_short_is_named(settings: Settings, usecase: UseCase, kind: str) -> None:
    _world(settings)
    root = (settings.labels_dir if kind == "label" else settings.shadow_dir) / USECASE
    damaged = next(root.glob("date=*/hour=07/*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:-100])  # its footer is gone: DuckDB names the file itself
    for error in _refused_by_both(settings, usecase):
        assert f"a {kind} file under {root}" in error.what and str(damaged) in error.what
        assert error.fix is not None and "move that file out" in error.fix


def test_a_damaged_newest_label_file_past_the_window_is_named(settings: Settings, usecase: UseCase) -> None:
    # The window's labels are read from hours 06-07; the watermark from the newest label's hour (10), whose file
    # another tool wrote without column statistics (so its values are decoded, not read off the footer).
    _world(settings)
    damaged = settings.labels_dir / USECASE / "date=2026-11-14/hour=10/part-other-tool.parquet"
    damaged.parent.mkdir(parents=True)
    pq.write_table(label_table([label(4 * 60 + 10, 1.0, product=12)], [0], [0]), damaged, write_statistics=False)
    damage_page(damaged, "event_time")
    window = Window(at(0), at(60))
    for error in _refused_by_both(settings, usecase, window):
        assert str(damaged) in error.what


def test_a_column_only_a_later_measure_reads_is_named_by_the_comparison(settings: Settings, usecase: UseCase) -> None:
    # The load does not read the logged features; the feature-skew check and the explanation do.
    _world(settings)
    damaged = next((settings.shadow_dir / USECASE).glob("date=*/hour=07/*.parquet"))
    damage_page(damaged, "online_features")
    rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    rows.con.close()
    with pytest.raises(UnreadableLogError) as caught:
        compare(usecase, settings)
    assert str(damaged) in caught.value.what


def test_the_damaged_file_is_the_first_that_does_not_read_whole(settings: Settings) -> None:
    _world(settings)
    files = sorted(str(p) for p in (settings.shadow_dir / USECASE).glob("date=*/hour=*/*.parquet"))
    assert damaged_file(files) is None
    damage_page(Path(files[1]), "online_model_version")
    found = damaged_file(files)
    assert found is not None and found[0] == files[1] and found[1]


def test_an_error_that_is_not_a_files_passes_as_it_was(settings: Settings) -> None:
    _world(settings)
    files = [str(p) for p in (settings.shadow_dir / USECASE).glob("date=*/hour=*/*.parquet")]
    with pytest.raises(duckdb.Error) as caught, readable(settings.shadow_dir, settings.labels_dir) as reading:
        reading.extend(files)  # every one of them reads whole
        raise duckdb.Error("an error of DuckDB's own")
    assert str(caught.value) == "an error of DuckDB's own"
    with pytest.raises(duckdb.BinderException), readable(settings.shadow_dir, settings.labels_dir) as reading:
        reading.extend(files)
        duckdb.execute("SELECT no_such_column FROM range(1)").fetchall()


class _MeasureFailed(Exception):
    pass


def test_an_error_while_a_fork_runs_is_the_error_raised(
    settings: Settings, usecase: UseCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The segments run on a cursor of the comparison's connection; the feature-skew check fails while they are
    # inside a query. Closing the connection then is refused ("connection is busy"): the comparison must wait for
    # the fork and raise the check's own error, not that refusal.
    _world(settings)
    inside, release = threading.Event(), threading.Event()

    def held(value: int) -> int:
        inside.set()
        release.wait(10)
        return value

    def busy_segments(fork: Rows, metric: str) -> object:
        fork.con.create_function("held", held, [BIGINT], BIGINT)
        return fork.con.execute("SELECT held(1)").fetchall()

    def failing_skew(*args: object, **kwargs: object) -> object:
        assert inside.wait(10)
        threading.Timer(0.2, release.set).start()
        raise _MeasureFailed("the feature-skew check failed")

    monkeypatch.setattr(segments, "measure", busy_segments)
    monkeypatch.setattr(skew, "measure", failing_skew)
    with pytest.raises(_MeasureFailed):
        compare(usecase, settings)


def _rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def _as(name: str, values: pa.Array) -> Callable[[pa.Table], pa.Table]:
    return lambda table: table.set_column(table.schema.get_field_index(name), name, values)


def _text(name: str, value: str) -> Callable[[pa.Table], pa.Table]:
    """Column `name` written as text, `value` in every row."""
    return lambda table: _as(name, pa.array([value] * table.num_rows))(table)


def _without(name: str) -> Callable[[pa.Table], pa.Table]:
    return lambda table: table.drop_columns([name])


SHAPES = {
    # (which file, what another tool wrote) → (the column the error names, the change)
    ("shadow-log", "a prediction as text"): ("batch_prediction", _text("batch_prediction", "0.5")),
    ("shadow-log", "no request time"): ("request_time", _without("request_time")),
    ("shadow-log", "the request time as text"): ("request_time", _text("request_time", "noon")),
    ("shadow-log", "an integer key as text"): ("key_store_id", _text("key_store_id", "x")),
    ("label", "the label as text"): ("label", _text("label", "yes")),
    ("label", "no label"): ("label", _without("label")),
    ("label", "an integer key as text"): ("key_product_id", _text("key_product_id", "p")),
}


@pytest.mark.parametrize(("kind", "shape"), list(SHAPES))
def test_a_file_of_another_shape_is_named_with_its_column_before_any_row_is_read(
    settings: Settings, usecase: UseCase, kind: str, shape: str
) -> None:
    # Each of these stopped DuckDB mid-query ("Could not convert string 'x' to INT64") or made the report fail.
    column, change = SHAPES[(kind, shape)]
    _world(settings)
    root = (settings.labels_dir if kind == "label" else settings.shadow_dir) / USECASE
    other = next(root.glob("date=*/hour=07/*.parquet"))
    _rewrite(other, change)
    for error in _refused_by_both(settings, usecase):
        assert f"a {kind} file under {root} cannot be read: {other}: " in error.what
        assert f"has no column {column}" in error.what or f"its column {column} holds" in error.what
        assert error.fix is not None and "written by another tool" in error.fix


def test_the_newest_label_file_read_for_the_watermark_is_checked_too(settings: Settings, usecase: UseCase) -> None:
    _world(settings)
    newest = settings.labels_dir / USECASE / "date=2026-11-14/hour=10/part-other-tool.parquet"
    newest.parent.mkdir(parents=True)
    table = label_table([label(4 * 60 + 10, 1.0, product=12)], [0], [0])
    pq.write_table(_as("event_time", pa.array(["10:10"]))(table), newest)
    with pytest.raises(UnreadableLogError) as caught:
        load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window(at(0), at(60)))
    assert str(newest) in caught.value.what and "event_time" in caught.value.what


def test_only_top_level_columns_are_checked(settings: Settings, usecase: UseCase) -> None:
    # A nested column whose fields bear the names of the columns read (a feature named request_id, say) is not one
    # of them; a column of nulls holds any kind; columns the comparison does not read may hold anything.
    _world(settings)
    path = next((settings.shadow_dir / USECASE).glob("date=*/hour=07/*.parquet"))
    n = pq.read_metadata(path).num_rows
    nested = pa.array([{"request_id": 1.5, "inner": {"request_time": "x"}}] * n)
    _rewrite(path, lambda t: t.append_column("extra", nested).append_column("note", pa.array([[1, 2]] * n)))
    _rewrite(path, _as("batch_error", pa.nulls(n)))
    assert wrong_columns([str(path)], {"request_id": "text", "request_time": "timestamp"}, ["request_id"]) is None
    rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    assert rows.rows == 2
    rows.con.close()
