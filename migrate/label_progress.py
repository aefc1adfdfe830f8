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

Not handled: the watermark is the newest over all partitions, as the newest label was before. The sink reads every
partition in one consumer, so one it has read less far than another (its lag between partitions, usually
seconds) may still hold a label for a window the watermark closed; the comparator would label that request
``otherwise`` (or unlabeled). The exact rule, the oldest over partitions with an idle partition left out (as
Flink's watermarks), is not built.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson

__all__ = ["PROGRESS_DIR", "read_progress", "write_progress"]

log = logging.getLogger(__name__)

PROGRESS_DIR = "_progress"
_READER = re.compile(r"^[\w.-]+$")


def write_progress(root: Path, reader: str, event_time: datetime) -> datetime:
    """Record that `reader` has read the label stream up to `event_time` (kept if newer than what it recorded);
    the time recorded. Durable when it returns (written, fsynced and renamed into place).

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
    moment = event_time.astimezone(UTC) if previous is None else max(previous, event_time.astimezone(UTC))
    with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=f".{reader}.", delete=False) as handle:
        handle.write(orjson.dumps({"event_time": moment.isoformat()}))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return moment


def read_progress(root: Path) -> datetime | None:
    """The newest event time any reader of the label stream under `root` recorded; None when none did."""
    folder = root / PROGRESS_DIR
    if not folder.is_dir():
        return None
    times = [moment for path in folder.glob("*.json") if (moment := _read(path)) is not None]
    return max(times, default=None)


def _read(path: Path) -> datetime | None:
    """A progress file's time; None when absent, or unreadable (logged: the watermark then leaves it out, which
    can only keep requests pending longer; a torn file cannot exist, as it is renamed whole)."""
    try:
        raw = orjson.loads(path.read_bytes())
        moment = datetime.fromisoformat(raw["event_time"])
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring the unreadable label progress file %s: %s", path, exc)
        return None
    if moment.tzinfo is None:
        log.warning("ignoring the label progress file %s: its time has no time zone", path)
        return None
    return moment
