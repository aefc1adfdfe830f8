"""Readers during publishes and during a writer's death only ever see one whole version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lookup_support import Table, keys_for

from lookup_tables import LookupStore, open_store

pytestmark = pytest.mark.integration

KEYS = 20_000
READERS = 4
# Generous caps: they only stop a broken run; a healthy one ends far sooner.
MAX_SECONDS = 120.0
MAX_READS = 5_000


@dataclass
class Reader:
    """Polls ``get_many`` over every key and records what each read saw."""

    url: str
    table: Table
    stop: threading.Event
    versions: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reads: int = 0

    def run(self) -> None:
        store: LookupStore = open_store(self.url)
        keys = keys_for(KEYS)
        deadline = time.monotonic() + MAX_SECONDS
        try:
            while not self.stop.is_set() and self.reads < MAX_READS and time.monotonic() < deadline:
                self.check(store.get_many(self.table.spec, keys))
        except Exception as exc:  # a reader error is the failure being tested for; keep it for the assertion
            self.problems.append(f"read {self.reads}: {type(exc).__name__}: {exc}")
        finally:
            store.close()

    def check(self, rows: dict[tuple[int | str, ...], object]) -> None:
        self.reads += 1
        seen = {(row.version, row.prediction) for row in rows.values()}  # type: ignore[attr-defined]
        if len(rows) != KEYS or len(seen) != 1:
            self.problems.append(f"read {self.reads}: {len(rows)} rows from versions {sorted(seen)[:5]}")
            return
        version, prediction = seen.pop()
        if prediction != float(version):
            self.problems.append(f"read {self.reads}: version {version} returned prediction {prediction}")
        if self.versions and version < self.versions[-1]:
            self.problems.append(f"read {self.reads}: went back from version {self.versions[-1]} to {version}")
        self.versions.append(version)


def start_readers(table: Table) -> tuple[list[Reader], list[threading.Thread], threading.Event]:
    stop = threading.Event()
    readers = [Reader(table.url, table, stop) for _ in range(READERS)]
    threads = [threading.Thread(target=reader.run, daemon=True) for reader in readers]
    for thread in threads:
        thread.start()
    return readers, threads, stop


def wait_for_reads(readers: list[Reader], at_least: int) -> None:
    """Until every reader has done ``at_least`` more reads (or one of them stopped)."""
    targets = [reader.reads + at_least for reader in readers]
    deadline = time.monotonic() + MAX_SECONDS
    while time.monotonic() < deadline and any(
        reader.reads < target and not reader.problems for reader, target in zip(readers, targets, strict=True)
    ):
        time.sleep(0.01)


def test_readers_see_complete_versions_while_versions_are_published(table: Table) -> None:
    table.release(1.0, day=1, n=KEYS)  # version 1 predicts 1.0 everywhere, version N predicts N
    readers, threads, stop = start_readers(table)
    wait_for_reads(readers, 1)
    for version in range(2, 7):
        info = table.load(float(version), day=version, n=KEYS, chunks=4)
        assert info.version == version
        assert table.publish(info).activated
        wait_for_reads(readers, 2)  # the second read surely started after the publish
    stop.set()
    for thread in threads:
        thread.join(MAX_SECONDS)

    assert [problem for reader in readers for problem in reader.problems] == []
    assert all(reader.versions and reader.versions[-1] == 6 for reader in readers)
    seen = {version for reader in readers for version in reader.versions}
    assert len(seen) >= 3, f"readers overlapped too few publishes to test anything: {sorted(seen)}"


def test_a_writer_killed_mid_load_leaves_readers_on_the_old_version(table: Table) -> None:
    table.release(1.0, day=1, n=KEYS)
    table.release(2.0, day=2, n=KEYS)
    readers, threads, stop = start_readers(table)
    here = Path(__file__).parent
    with subprocess.Popen(
        [sys.executable, str(here / "slow_writer.py"), table.url, "20000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # a crash before the kill shows up in the lines asserted on
        text=True,
        cwd=here,
    ) as writer:
        try:
            assert writer.stdout is not None
            lines = [writer.stdout.readline().strip() for _ in range(4)]  # "version 3", then three chunks
            assert lines[0] == "version 3" and lines[-1] == "chunk 2", lines
            wait_for_reads(readers, 1)
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(MAX_SECONDS)
    assert writer.returncode == -signal.SIGKILL
    wait_for_reads(readers, 2)
    stop.set()
    for thread in threads:
        thread.join(MAX_SECONDS)

    assert [problem for reader in readers for problem in reader.problems] == []
    assert {version for reader in readers for version in reader.versions} == {2}
    versions = {info.version: info.status for info in table.store.versions(table.spec)}
    assert versions == {3: "loading", 2: "active", 1: "ready"}

    after = table.load(4.0, day=4, n=KEYS, chunks=2)
    assert after.version == 4
    assert {info.version: info.status for info in table.store.versions(table.spec)}[3] == "retired"
    assert table.publish(after).activated
    rows = table.store.get_many(table.spec, keys_for(KEYS))
    assert len(rows) == KEYS and {row.prediction for row in rows.values()} == {4.0}

    assert table.store.rollback(table.spec).version == 2
    rows = table.store.get_many(table.spec, keys_for(KEYS))
    assert len(rows) == KEYS and {row.prediction for row in rows.values()} == {2.0}
