"""A damaged shadow-log or label file is an `UnreadableLogError` naming it, also when DuckDB's own error names no
file (a damaged page's header reads as a bare ``duckdb.Error``: "don't know what type", "TProtocolException"), and
also when only a measure after the load reads the damaged column (comparisons/shadow_rows.py, `readable`)."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from comparison_fixtures import USECASE, at, label, record, write_shadow
from duckdb.sqltypes import BIGINT
from parquet_damage import damage_page

from comparisons import segments, skew
from comparisons.comparison import compare
from comparisons.shadow_rows import Rows, Window, damaged_file, load, logged_requests, readable
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
    for read in (load, logged_requests):
        with pytest.raises(UnreadableLogError) as caught:
            read(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
        assert f"a {kind} file under {root}" in caught.value.what
        assert str(damaged) in caught.value.what
        assert caught.value.fix is not None and "move that file out" in caught.value.fix


def test_a_damaged_newest_label_file_past_the_window_is_named(settings: Settings, usecase: UseCase) -> None:
    # The window's labels are read from hours 06-07; the watermark from the newest label's hour (10), whose file
    # another tool wrote without column statistics (so its values are decoded, not read off the footer).
    _world(settings)
    damaged = settings.labels_dir / USECASE / "date=2026-11-14/hour=10/part-other-tool.parquet"
    damaged.parent.mkdir(parents=True)
    pq.write_table(label_table([label(4 * 60 + 10, 1.0, product=12)], [0], [0]), damaged, write_statistics=False)
    damage_page(damaged, "event_time")
    window = Window(at(0), at(60))
    for read in (load, logged_requests):
        with pytest.raises(UnreadableLogError) as caught:
            read(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, window)
        assert str(damaged) in caught.value.what


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
