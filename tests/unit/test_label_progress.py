"""The label sink's progress file: newest wins, replaced whole, and a broken file is left out loudly."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from migrate.label_progress import PROGRESS_DIR, mark_read_to_end, progress_bound, read_progress, write_progress

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 2, 10, tzinfo=UTC)


def test_each_reader_keeps_its_newest_time_and_the_stream_its_newest_reader(tmp_path: Path) -> None:
    assert read_progress(tmp_path) is None
    assert write_progress(tmp_path, "a-0", T0) == T0
    assert write_progress(tmp_path, "a-0", T0 - timedelta(hours=1)) == T0  # a replay behind it: kept
    write_progress(tmp_path, "b-1", T0 + timedelta(minutes=5))
    assert read_progress(tmp_path) == T0 + timedelta(minutes=5)
    # Another zone is the same instant, read back in UTC.
    write_progress(tmp_path, "c-0", datetime(2026, 11, 2, 12, 30, tzinfo=timezone(timedelta(hours=2))))
    assert read_progress(tmp_path) == datetime(2026, 11, 2, 10, 30, tzinfo=UTC)
    assert sorted(p.name for p in (tmp_path / PROGRESS_DIR).iterdir()) == ["a-0.json", "b-1.json", "c-0.json"]


def test_a_reader_name_that_is_no_plain_file_name_and_a_naive_time_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be letters"):
        write_progress(tmp_path, "../x", T0)
    with pytest.raises(ValueError, match="no time zone"):
        write_progress(tmp_path, "a", T0.replace(tzinfo=None))


def test_an_unreadable_progress_file_is_left_out_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_progress(tmp_path, "good", T0)
    (tmp_path / PROGRESS_DIR / "broken.json").write_text("{not json")
    (tmp_path / PROGRESS_DIR / "naive.json").write_text('{"event_time": "2030-01-01T00:00:00"}')
    with caplog.at_level(logging.WARNING, logger="migrate.label_progress"):
        assert read_progress(tmp_path) == T0  # neither the broken file nor the naive (later) time counts
    assert "broken.json" in caplog.text and "naive.json" in caplog.text


def test_the_oldest_partition_behind_its_end_bounds_the_progress(tmp_path: Path) -> None:
    topic = {"topic": "labels.cards", "topic_id": "t2"}
    write_progress(tmp_path, "t2-0", T0 + timedelta(hours=3), **topic)  # at its end: holds nothing
    assert progress_bound(tmp_path) is None
    write_progress(tmp_path, "t2-1", T0 + timedelta(hours=1), behind=True, **topic)
    write_progress(tmp_path, "t2-2", T0 + timedelta(hours=2), behind=True, **topic)
    assert progress_bound(tmp_path) == T0 + timedelta(hours=1)  # the oldest of the two behind
    assert read_progress(tmp_path) == T0 + timedelta(hours=3)  # the newest read is unchanged
    # Partition 1 reads to its end: the next oldest behind holds it.
    write_progress(tmp_path, "t2-1", T0 + timedelta(hours=4), **topic)
    assert progress_bound(tmp_path) == T0 + timedelta(hours=2)
    # A file written before the flag existed reads as at its end (the rule then): it holds nothing.
    (tmp_path / PROGRESS_DIR / "t0-7.json").write_text('{"event_time": "2026-11-01T00:00:00+00:00"}')
    assert progress_bound(tmp_path) == T0 + timedelta(hours=2)
    # A reader of no topic that says it is behind holds it: it names no topic to have been recreated since.
    write_progress(tmp_path, "backtest", T0, behind=True)
    assert progress_bound(tmp_path) == T0


def test_a_topic_recreated_since_holds_nothing(tmp_path: Path) -> None:
    write_progress(tmp_path, "a1-0", T0 - timedelta(days=3), behind=True, topic="labels.cards", topic_id="a1")
    assert progress_bound(tmp_path) == T0 - timedelta(days=3)
    write_progress(tmp_path, "b2-0", T0, topic="labels.cards", topic_id="b2")  # the topic's new incarnation
    assert progress_bound(tmp_path) is None
    # Another topic of the same labels (the event topic beside the label topic) is judged on its own.
    write_progress(tmp_path, "c3-1", T0 - timedelta(hours=5), behind=True, topic="events.cards", topic_id="c3")
    assert progress_bound(tmp_path) == T0 - timedelta(hours=5)


def test_a_progress_file_with_a_flag_of_the_wrong_type_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_progress(tmp_path, "good", T0)
    (tmp_path / PROGRESS_DIR / "odd.json").write_text('{"event_time": "2030-01-01T00:00:00+00:00", "behind": "yes"}')
    (tmp_path / PROGRESS_DIR / "list.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING, logger="migrate.label_progress"):
        assert read_progress(tmp_path) == T0
    assert "odd.json" in caplog.text and "list.json" in caplog.text


def test_a_partition_read_to_its_end_keeps_its_time_and_holds_nothing(tmp_path: Path) -> None:
    assert not mark_read_to_end(tmp_path, "t2-0")  # nothing recorded yet: nothing to mark
    write_progress(tmp_path, "t2-0", T0, behind=True, topic="events.cards", topic_id="t2")
    assert progress_bound(tmp_path) == T0
    assert mark_read_to_end(tmp_path, "t2-0")
    assert progress_bound(tmp_path) is None and read_progress(tmp_path) == T0
    assert not mark_read_to_end(tmp_path, "t2-0")  # already at its end
    write_progress(tmp_path, "t2-1", T0 - timedelta(hours=1), behind=True, topic="events.cards", topic_id="t2")
    assert progress_bound(tmp_path) == T0 - timedelta(hours=1)  # the topic and id were kept for the rule
