"""The checkpoint writer: a stream processor's checkpoints go to Redis while it parses the next fetch.

A checkpoint's states are serialized in the processor's thread, since they move on as soon as it goes back to
its events; the Redis transaction (online/stream/checkpoint.py) runs in the writer thread. One write at a time,
so a partition's checkpoints land in order. A write's outcome is known only once settled: per partition when it
was written, or None when another processor had taken the partition over (fenced: nothing was written, and the
processor must let the partition go); a failed write raises there.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from online.stream.checkpoint import Checkpoint, CheckpointStore, FencedError, PreparedCheckpoint
from online.stream.partition import Partition

__all__ = ["CheckpointWriter", "Sent"]


@dataclass(frozen=True)
class Sent:
    """One partition's checkpoint handed to the writer, and what it covers."""

    partition: Partition
    messages: int  # the partition's messages since its previous checkpoint
    arrivals: list[float]  # broker timestamps (s) of its events among them
    prepared: PreparedCheckpoint


class CheckpointWriter:
    """Writes one processor's checkpoints: in a thread of its own between `start` and `stop`, else in the caller's."""

    def __init__(self, store: CheckpointStore, token: str) -> None:
        self.store = store
        self.token = token
        self._thread: ThreadPoolExecutor | None = None
        self._writing: Future[list[float | None]] | None = None  # the write in flight
        self._sent: list[Sent] = []  # what it writes

    def start(self, name: str) -> None:
        """Write in a thread of its own from now on: `send` returns while the write goes on."""
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)

    def stop(self) -> None:
        """Let a write in flight end (or fail) and the thread go, before the Redis client closes."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    def send(self, partitions: list[Partition]) -> None:
        """Serialize each partition's changed states now, start afresh what its next checkpoint covers, and write
        the checkpoints (one transaction each). The previous write must be settled first."""
        sent: list[Sent] = []
        for part in partitions:
            states = [(at, part.states[at].to_json()) for at in part.dirty]
            assert part.next_offset is not None
            checkpoint = Checkpoint(part.number, part.next_offset, part.watermark, states)
            sent.append(Sent(part, part.pending, part.arrivals, self.store.prepare(checkpoint, self.token)))
            part.dirty.clear()
            part.arrivals = []
            part.pending = 0
        prepared = [item.prepared for item in sent]
        if self._thread is None:
            # Written before it is in flight: a failed write raises here and leaves nothing for `settle` to wait on.
            done: Future[list[float | None]] = Future()
            done.set_result(self._write(prepared))
            self._writing = done
        else:
            self._writing = self._thread.submit(self._write, prepared)
        self._sent = sent

    def written(self) -> bool:
        """Whether a write was sent and has ended (written, fenced or failed): `settle` would not wait."""
        return self._writing is not None and self._writing.done()

    def settle(self) -> list[tuple[Sent, float | None]]:
        """Wait for the write in flight, if any: per checkpoint sent, when it was written or None if fenced.

        Raises:
            The write's error (Redis unreachable: `FeatureStoreUnavailableError`).
        """
        writing, self._writing = self._writing, None
        if writing is None:
            return []
        sent, self._sent = self._sent, []
        return list(zip(sent, writing.result(), strict=True))

    def _write(self, prepared: list[PreparedCheckpoint]) -> list[float | None]:
        """Write the checkpoints in order (the writer thread): per checkpoint when it was written, None if fenced."""
        written: list[float | None] = []
        for checkpoint in prepared:
            try:
                self.store.write(checkpoint)
            except FencedError:
                written.append(None)
                continue
            written.append(time.time())
        return written
