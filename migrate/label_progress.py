"""How far a label stream has been read, in event time: the label sink's progress, kept beside the label files.

A label is a row only when an outcome happened (a chargeback, a late departure). The comparator closes a request's
label window once the labels are known past its end; with the newest *label* as that watermark, a rare outcome kept
requests pending long after their windows closed, although the sink had read every event up to then. So the sink
also records the newest event time of every valid event it read of the label stream, labels or not, in
``<labels root>/_progress/<reader>.json`` (one file per sink run and partition, replaced atomically before the
offsets are committed, never moved back), and the comparator's watermark is the newest of the labels and of these.

An event the stream processor would dead-letter as in the future (online/stream/arrival.py) counts for neither.

A stream whose every event is a label (a topic of chargebacks alone) moves its watermark only with its labels, as
before: nothing else says how far it has been read in event time.

Partitions: the sink reads every partition in one consumer, and one it has read less far than another (its lag
between partitions, usually seconds) may still hold a label for a window the newest progress would close. So each
file also says whether its partition was still **behind** its end when written (the consumer's position below the
partition's high watermark) and which topic (and topic id) it belongs to. The comparator's watermark is then held at
the oldest progress of a partition read behind its end (`progress_bound`), as Flink's watermarks take the oldest over
partitions; a partition read to its end (idle, or caught up) does not hold it, and neither does a file of an earlier
incarnation of a topic (recreated since: its id differs from the topic's newest file). A partition the sink has not
read at all yet has no file and holds nothing (its lag shows as the sink's consumer lag). A topic written by a
transactional producer ends each transaction with a marker the consumer never returns: read to its end, such a
partition still reads as behind by that offset, so it holds the watermark at its newest event (requests stay
pending longer, no window closes early) until its next event is read.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

__all__ = [
    "PROGRESS_DIR",
    "Progress",
    "mark_read_to_end",
    "progress_and_bound",
    "progress_bound",
    "read_progress",
    "write_progress",
]

log = logging.getLogger(__name__)

PROGRESS_DIR = "_progress"
_READER = re.compile(r"^[\w.-]+$")


@dataclass(frozen=True)
class Progress:
    """One progress file: how far its reader read, and whether its partition was still behind its end then."""

    event_time: datetime
    behind: bool = False
    topic: str | None = None  # the Kafka topic of the partition (None: a reader of no topic, a backtest's)
    topic_id: str | None = None  # which incarnation of the topic (a recreated topic has a new id)
    written_at: datetime | None = None


def write_progress(
    root: Path,
    reader: str,
    event_time: datetime,
    *,
    behind: bool = False,
    topic: str | None = None,
    topic_id: str | None = None,
) -> datetime:
    """Record that `reader` has read the label stream up to `event_time` (kept if newer than what it recorded);
    the time recorded. `behind`: the reader's partition held more events past what it read (it says so at this
    write: the last write wins). Durable when it returns (written, fsynced and renamed into place).

    Raises:
        ValueError: `reader` is not a plain file name, or `event_time` is naive.
    """
    if not _READER.match(reader):
        raise ValueError(f"label progress reader {reader!r} must be letters, digits, '.', '_' or '-'")
    if event_time.tzinfo is None:
        raise ValueError(f"label progress time {event_time.isoformat()} has no time zone")
    folder = root / PROGRESS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{reader}.json"
    previous = _read(path)
    moment = event_time.astimezone(UTC)
    if previous is not None and previous.event_time > moment:
        moment = previous.event_time
    record = {
        "event_time": moment.isoformat(),
        "behind": behind,
        "topic": topic,
        "topic_id": topic_id,
        "written_at": datetime.now(UTC).isoformat(),
    }
    with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=f".{reader}.", delete=False) as handle:
        handle.write(orjson.dumps(record))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return moment


def mark_read_to_end(root: Path, reader: str) -> bool:
    """Record that `reader`'s partition has no event left past what was read, its time unchanged: a flush whose
    events were all invalid (counted by the sink) moves no time, but must not leave an earlier "behind" holding the
    watermark for good. False when the reader has no progress yet, or was not behind."""
    previous = _read(root / PROGRESS_DIR / f"{reader}.json") if _READER.match(reader) else None
    if previous is None or not previous.behind:
        return False
    write_progress(root, reader, previous.event_time, topic=previous.topic, topic_id=previous.topic_id)
    return True


def _files(root: Path) -> list[Progress]:
    folder = root / PROGRESS_DIR
    if not folder.is_dir():
        return []
    return [progress for path in sorted(folder.glob("*.json")) if (progress := _read(path)) is not None]


def read_progress(root: Path) -> datetime | None:
    """The newest event time any reader of the label stream under `root` recorded; None when none did."""
    return progress_and_bound(root)[0]


def progress_bound(root: Path) -> datetime | None:
    """The oldest event time recorded for a partition still behind its end (the watermark may not pass it: that
    partition may yet hold a label for an earlier window); None when no partition is behind. Only a topic's newest
    incarnation counts: a file of a topic id older than the topic's newest file is of a topic since recreated."""
    return progress_and_bound(root)[1]


def progress_and_bound(root: Path) -> tuple[datetime | None, datetime | None]:
    """`read_progress` and `progress_bound` from one read of the files (the comparator's label watermark needs
    both, and a sink may rewrite a file between two reads)."""
    files = _files(root)
    newest: dict[str, tuple[datetime, str | None]] = {}
    for progress in files:
        if progress.topic is None or progress.written_at is None:
            continue
        seen = newest.get(progress.topic)
        if seen is None or progress.written_at > seen[0]:
            newest[progress.topic] = (progress.written_at, progress.topic_id)
    held = [
        progress.event_time
        for progress in files
        if progress.behind and (progress.topic is None or newest[progress.topic][1] == progress.topic_id)
    ]
    return max((progress.event_time for progress in files), default=None), min(held, default=None)


def _read(path: Path) -> Progress | None:
    """A progress file; None when absent, or unreadable (logged: the watermark then leaves it out, which can only
    keep requests pending longer, except for a file that said its partition was behind; a torn file cannot exist,
    as it is renamed whole). A file written before the flag existed reads as not behind (the rule then)."""
    try:
        raw = orjson.loads(path.read_bytes())
        moment = datetime.fromisoformat(raw["event_time"])
        written = raw.get("written_at")
        written_at = None if written is None else datetime.fromisoformat(written)
        behind, topic, topic_id = raw.get("behind", False), raw.get("topic"), raw.get("topic_id")
        if not isinstance(behind, bool) or not isinstance(topic, str | None) or not isinstance(topic_id, str | None):
            raise TypeError("behind must be true or false, topic and topic_id text")
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("ignoring the unreadable label progress file %s: %s", path, exc)
        return None
    if moment.tzinfo is None or (written_at is not None and written_at.tzinfo is None):
        log.warning("ignoring the label progress file %s: its time has no time zone", path)
        return None
    return Progress(moment.astimezone(UTC), behind, topic, topic_id, written_at)
