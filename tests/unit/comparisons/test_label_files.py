"""A comparison reads only the label partitions that can label its window's requests, and still knows how far the
labels go from every file: a use case's labels pile up for as long as it runs (comparisons/shadow_rows.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from comparison_fixtures import T0, USECASE, at, label, labels_by_hand, record, write_shadow

from comparisons.shadow_rows import Window, label_files, load, logged_requests, newest_label, requests_span
from migrate.settings import Settings
from migrate.usecase import UseCase, parse_duration

pytestmark = pytest.mark.unit

HOUR = 60  # minutes


def _hours(files: list[str], root: Path) -> list[str]:
    return [str(Path(f).parent.relative_to(root)) for f in files]


def test_the_partitions_read_are_the_hours_a_windows_labels_can_fall_in(settings: Settings) -> None:
    # One label in each hour from two days before T0 (06:00) to two days after.
    write_shadow(settings, [], [label(h * HOUR + 30, 1.0) for h in range(-48, 49)])
    root = settings.labels_dir / USECASE
    # Requests in [07:00, 08:00), labels one hour later at most: label times in (07:00, 09:00).
    window = Window(since=at(HOUR), until=at(2 * HOUR))
    assert _hours(label_files(root, window, timedelta(hours=1)), root) == [
        "date=2026-11-14/hour=07",
        "date=2026-11-14/hour=08",
    ]
    # A label delay of 90 minutes reaches into 09:00-09:30.
    assert _hours(label_files(root, window, timedelta(minutes=90)), root)[-1] == "date=2026-11-14/hour=09"
    # A window starting on an hour boundary excludes the hour before it (its labels are all before the requests).
    assert "date=2026-11-14/hour=06" not in _hours(label_files(root, window, timedelta(hours=1)), root)
    # Open ends read everything on their side.
    assert len(label_files(root, Window(until=at(2 * HOUR)), timedelta(hours=1))) == 48 + 3
    assert len(label_files(root, Window(since=at(HOUR)), timedelta(hours=1))) == 48
    assert len(label_files(root, Window(), timedelta(hours=1))) == 97


def test_a_window_long_before_the_newest_label_is_labeled_as_with_every_label(
    settings: Settings, usecase: UseCase
) -> None:
    delay = parse_duration(usecase.label.available_after)
    assert delay == timedelta(hours=1), "the hand-worked labels below assume the example's one-hour delay"
    records = [
        record(1, 0),  # labeled by the label at 00:30 of its own hour
        record(2, 50, product=11),  # labeled at 07:20: the next hour's partition, still within the delay
        record(3, 55, product=12),  # its only label is 2 h later: unlabeled, not pending (the watermark is days on)
        record(4, 59, product=13),  # a label a day before (an older partition) does not label it: unlabeled
        record(5, 30, product=14),  # its label exactly at its request time does not count; the next one at +45 does
    ]
    labels = [
        label(30, 1.0),
        label(80, 0.0, product=11),
        label(55 + 2 * HOUR, 1.0, product=12),
        label(59 - 24 * HOUR, 1.0, product=13),
        label(30, 1.0, product=14),
        label(75, 0.0, product=14),
        label(5 * 24 * HOUR, 1.0, store=9, product=9),  # the newest label: five days on
    ]
    write_shadow(settings, records, labels)
    window = Window(since=at(0), until=at(HOUR))
    root = settings.labels_dir / USECASE
    read = _hours(label_files(root, window, delay), root)
    assert read == ["date=2026-11-14/hour=06", "date=2026-11-14/hour=07"]  # not the day before, not five days on

    rows = load(usecase, settings.shadow_dir / USECASE, root, window)
    try:
        assert rows.label_watermark == at(5 * 24 * HOUR)
        got = rows.con.execute(f"SELECT k_product_id, label_state, label FROM s ORDER BY {rows.key_columns}")
        expected = sorted(
            (r.key["product_id"], state, value) for r, state, value in labels_by_hand(records, labels, delay)
        )
        assert sorted(got.fetchall()) == expected
        assert [state for _, state, _ in expected] == ["labeled", "labeled", "unlabeled", "unlabeled", "labeled"]
    finally:
        rows.con.close()

    spine = logged_requests(usecase, settings.shadow_dir / USECASE, root, window)
    assert (spine.labeled, spine.unlabeled, spine.pending) == (3, 2, 0)
    assert spine.label_watermark == at(5 * 24 * HOUR)


def test_a_damaged_label_file_outside_the_window_is_never_read(settings: Settings, usecase: UseCase) -> None:
    write_shadow(settings, [record(1, 0)], [label(30, 1.0), label(3 * HOUR, 0.0, store=9, product=9)])
    old = settings.labels_dir / USECASE / "date=2026-11-01/hour=00" / "part-test-0-0-0.parquet"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"not parquet")  # a file damaged weeks ago
    for window in (Window(since=T0), Window()):  # an open window reads the labels of the hours its requests are in
        rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, window)
        try:
            assert rows.con.execute("SELECT label_state, label FROM s").fetchall() == [("labeled", 1.0)]
        finally:
            rows.con.close()


def test_the_span_of_the_requests_is_the_hours_of_the_shadow_files_inside_the_window() -> None:
    files = [
        "/x/date=2026-11-14/hour=06/part-a.parquet",
        "/x/date=2026-11-14/hour=06/part-b.parquet",
        "/x/date=2026-11-15/hour=01/part-a.parquet",
    ]
    assert requests_span(files, Window()) == Window(at(0), at(20 * HOUR))
    assert requests_span(files, Window(since=at(30))) == Window(at(30), at(20 * HOUR))
    assert requests_span(files, Window(until=at(19 * HOUR + 5))) == Window(at(0), at(19 * HOUR + 5))
    assert requests_span([], Window(since=at(30))) == Window(since=at(30))


def _newest(root: Path) -> datetime | None:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return newest_label(con, root)


def test_the_newest_label_is_found_past_partitions_without_one(settings: Settings) -> None:
    root = settings.labels_dir / USECASE
    assert _newest(root) is None  # no label dir at all
    write_shadow(settings, [], [label(30, 1.0), label(HOUR + 10, 0.0)])
    (root / "date=2026-11-14/hour=09").mkdir(parents=True)  # a newer partition with no file in it
    assert _newest(root) == at(HOUR + 10)
