"""The comparison process compares the jobs that queued together: one feature read, one model call, one lookup
query for all of them, and every record as if each request had been compared alone."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from migrate.artifact import ArtifactStore
from migrate.cutover.flags import Flag, Stage
from migrate.models.lifecycle import load_version
from migrate.registry import load_usecase
from migrate.scoring import Model
from online.features.store import BatchRow, OnlineRead
from online.serving.prediction_paths import NOTHING, Outcome, Paths, Request
from online.serving.predictor import OnlinePredictor, OnlineResult
from online.serving.shadow_compare import Job, compare, compare_many
from online.serving.shadow_handoff import serve_jobs, take_together
from online.shadow.record import ShadowRecord, WireRecord

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
USECASE = load_usecase(ROOT / "usecases" / "item_availability.yaml")
AS_OF = datetime(2026, 11, 14, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
TIMED = {"batch_latency_ms", "online_latency_ms", "candidate_latency_ms"}  # a shared call's, by design


@dataclass(frozen=True)
class _Row:
    prediction: float
    model_version: str
    version: int
    features_as_of: datetime


class _Store:
    """Batch features that differ per entity (all as of AS_OF), no window state; counts its reads."""

    def __init__(self) -> None:
        self.reads: list[int] = []

    def read_online(self, usecase: str, keys: Any, names: Any, group_keys: Any, partitions: int) -> OnlineRead:
        self.reads.append(len(keys))
        width = len(names)
        features = [BatchRow([float(key[0]) + 0.1 * n for n in range(width)], [AS_OF] * width) for key in keys]
        return OnlineRead(features, {group: [[] for _ in keys] for group in group_keys})


class _Lookup:
    """Rows for even stores only; counts its queries."""

    def __init__(self) -> None:
        self.queries: list[int] = []

    def get_many(self, spec: Any, keys: Any) -> dict[Any, Any]:
        self.queries.append(len(keys))
        return {k: _Row(0.5 + k[0] / 100, "batch-v1", 3, AS_OF) for k in keys if k[0] % 2 == 0}

    def active(self, spec: Any) -> _Row:
        return _Row(0.0, "batch-v1", 3, AS_OF)  # only its version is read


def _model(tmp_path: Path) -> Model:
    width = len(USECASE.feature_names)
    rng = np.random.default_rng(1)
    x = rng.random((300, width)) * 10
    y = (x[:, 0] + rng.random(300) > 5).astype(int)
    files = ArtifactStore(tmp_path / "artifacts", tmp_path)
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    info = files.save(USECASE, model, trained_as_of=AS_OF, metrics={})
    return load_version(USECASE, files, info.version)


def _predictor(model: Model, store: _Store) -> OnlinePredictor:
    return OnlinePredictor(USECASE, model, store)  # type: ignore[arg-type]


def _jobs() -> list[Job]:
    flag = Flag(USECASE.name, Stage.SHADOW, revision=1)
    jobs = []
    for j in range(5):
        keys = [(j + e, 100 + e) for e in range(j % 3 + 1)]  # 1 to 3 entities, stores shared across requests
        entities = [{"store_id": k[0], "product_id": k[1]} for k in keys]
        now = NOW + timedelta(minutes=7 * j)  # each request its own instant
        req = Request(f"r{j}", now, flag, keys, entities, {}, sample_percent=100.0 if j else 12.5)
        jobs.append(Job(req, ["batch"] * len(keys), NOTHING, NOTHING))
    # A request whose online path was served already: its answer is logged, not computed again.
    served = OnlineResult(0.25, "served-v", {"x": 1.0})
    req = Request("served", NOW, flag, [(8, 1)], [{"store_id": 8, "product_id": 1}], {})
    jobs.append(Job(req, ["online"], Outcome({0: served}, 2.0, asked=frozenset({0})), NOTHING))
    return jobs


class _Recorder:
    def __init__(self) -> None:
        self.records: list[ShadowRecord] = []

    def log_many(self, records: Sequence[WireRecord]) -> int:
        self.records.extend(record.decode() for record in records)  # as the sink reads them off the topic
        return len(records)


def test_requests_compared_together_log_what_each_alone_logs_in_one_read_and_one_query(tmp_path: Path) -> None:
    alone_store, together_store = _Store(), _Store()
    alone_lookup, together_lookup = _Lookup(), _Lookup()
    alone, together = _Recorder(), _Recorder()
    jobs = _jobs()
    model = _model(tmp_path)
    alone_paths = Paths(alone_lookup, None, _predictor(model, alone_store))
    for job in jobs:
        compare(alone_paths, alone, USECASE.name, job.req, served=job.served, online=job.online, batch=job.batch)
    compare_many(Paths(together_lookup, None, _predictor(model, together_store)), together, USECASE.name, jobs)

    def untimed(records: list[ShadowRecord]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.model_dump().items() if k not in TIMED} for r in records]

    assert untimed(together.records) == untimed(alone.records)
    # Each record carries its request's shadow sample (the comparator weighs entities by it).
    assert [r.sample_percent for r in together.records[: len(jobs[0].req.keys)]] == [12.5] * len(jobs[0].req.keys)
    assert {r.sample_percent for r in together.records[len(jobs[0].req.keys) :]} == {100.0}
    computed = sum(len(j.req.keys) for j in jobs[:-1])  # every entity but the one served online
    assert together_store.reads == [computed] and len(alone_store.reads) == len(jobs) - 1
    assert together_lookup.queries == [computed + 1] and len(alone_lookup.queries) == len(jobs)
    # Independently of either path: each request's batch features are aged from its own instant.
    for record in together.records[:-1]:
        ages = set(record.online_feature_ages_s.values())
        assert ages == {(record.request_time - AS_OF).total_seconds()}, record.request_id
        assert record.online_prediction is not None and record.online_model_version != "served-v"
        expected_row = record.key["store_id"] % 2 == 0
        assert (record.batch_prediction is not None) == expected_row and record.lookup_version == 3
    last = together.records[-1]
    assert (last.online_prediction, last.online_model_version, last.online_latency_ms) == (0.25, "served-v", 2.0)
    assert len({r.online_latency_ms for r in together.records[:-1]}) == 1  # the one call's, for every request


def test_a_failing_shared_read_is_every_request_s_online_error_and_the_batch_rows_stand(tmp_path: Path) -> None:
    class _Down(_Store):
        def read_online(self, *args: Any) -> OnlineRead:
            raise ConnectionError("feature store down")

    recorder = _Recorder()
    jobs = _jobs()[:3]
    compare_many(Paths(_Lookup(), None, _predictor(_model(tmp_path), _Down())), recorder, USECASE.name, jobs)
    assert len(recorder.records) == sum(len(j.req.keys) for j in jobs)
    assert {r.online_error for r in recorder.records} == {"ConnectionError: feature store down"}
    assert all(r.online_prediction is None for r in recorder.records)
    assert [r.batch_prediction is not None for r in recorder.records] == [
        r.key["store_id"] % 2 == 0 for r in recorder.records
    ]


def test_the_process_takes_every_queued_job_up_to_its_bound_and_sees_the_end() -> None:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    buffer = memoryview(bytearray(1 << 16))
    with sender, receiver:
        for n in range(4):
            for entities, name in ((300, b"a"), (100, b"b")):
                sender.send(struct.pack("<I", entities) + name + b"%d" % n)  # what ShadowProcess.submit sends
        first, more = take_together(receiver, buffer, 1_000)
        assert [job for _, job in first] == [b"a0", b"b0", b"a1", b"b1", b"a2"] and more  # 1,100: past the bound
        assert [entities for entities, _ in first] == [300, 100, 300, 100, 300]
        sender.send(struct.pack("<I", 1) + b"lone")
        second, more = take_together(receiver, buffer, 1_000)
        assert [job for _, job in second] == [b"b2", b"a3", b"b3", b"lone"] and more  # no waiting for more
        sender.send(struct.pack("<I", 2) + b"last")
        sender.shutdown(socket.SHUT_WR)
        assert take_together(receiver, buffer, 1_000) == ([(2, b"last")], False)  # the last job, then the end
        assert take_together(receiver, buffer, 1_000) == ([], False)


def test_each_record_carries_the_latency_of_the_call_that_answered_its_entity(tmp_path: Path) -> None:
    """A canary request: the worker served entity 0 online (a 10 s call, say) and read entity 1's lookup row
    (0.7 ms); the comparison computed the rest. Each entity's record carries the latency of the call that answered
    it, never the sum of the worker's and the comparison's: the comparator reads the served ones as what requests
    waited for, and the comparison's apart (comparisons/latency.py)."""
    flag = Flag(USECASE.name, Stage.CANARY, revision=1, percent=50)
    keys = [(2, 100), (4, 101)]
    req = Request("canary", NOW, flag, keys, [{"store_id": k[0], "product_id": k[1]} for k in keys], {})
    served_online = Outcome({0: OnlineResult(0.25, "served-v", {"x": 1.0})}, 10_000.0, asked=frozenset({0}))
    row = _Row(0.5, "batch-v1", 3, AS_OF)
    served_batch = Outcome({1: row}, 0.7, asked=frozenset({1}))
    recorder = _Recorder()
    paths = Paths(_Lookup(), None, _predictor(_model(tmp_path), _Store()))
    compare_many(paths, recorder, USECASE.name, [Job(req, ["online", "batch"], served_online, served_batch)])
    first, second = recorder.records
    assert (first.served_source, first.online_latency_ms) == ("online", 10_000.0)
    assert (second.served_source, second.batch_latency_ms) == ("batch", 0.7)
    # What the comparison computed: its own calls' latencies (far under the worker's 10 s, which a sum would hold).
    assert first.batch_latency_ms is not None and 0 < first.batch_latency_ms < 10_000
    assert second.online_latency_ms is not None and 0 < second.online_latency_ms < 10_000
    assert second.online_prediction is not None and first.batch_prediction is not None


def test_a_path_nobody_asked_has_no_latency(tmp_path: Path) -> None:
    """At stage online_only the lookup table is not read: the records' batch latency is none, not 0 ms."""
    flag = Flag(USECASE.name, Stage.ONLINE_ONLY, revision=1)
    req = Request("only", NOW, flag, [(2, 100)], [{"store_id": 2, "product_id": 100}], {})
    served = Outcome({0: OnlineResult(0.25, "served-v", {"x": 1.0})}, 3.0, asked=frozenset({0}))
    recorder = _Recorder()
    compare_many(
        Paths(_Lookup(), None, _predictor(_model(tmp_path), _Store())),
        recorder,
        USECASE.name,
        [Job(req, ["online"], served, NOTHING)],
    )
    (only,) = recorder.records
    assert (only.online_latency_ms, only.batch_latency_ms, only.batch_prediction) == (3.0, None, None)


def test_jobs_sent_while_the_process_gathers_are_compared_together_and_the_end_stops_it() -> None:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    buffer = memoryview(bytearray(1 << 16))
    compared: list[list[bytes]] = []
    calls: list[str] = []

    def job(name: bytes) -> bytes:
        return struct.pack("<I", 1) + name  # what ShadowProcess.submit sends

    def gather() -> None:  # the worker's sends while the process sleeps between comparisons
        calls.append("gather")
        if len(compared) == 1:
            for name in (b"b", b"c", b"d"):
                sender.send(job(name))
        else:
            sender.send(job(b"last"))
            sender.shutdown(socket.SHUT_WR)

    # Were the loop to wait for the next job without gathering first, none would come: the end, sent after 5 s,
    # stops it, and the assertions say what it missed.
    def end() -> None:
        with contextlib.suppress(OSError):
            sender.shutdown(socket.SHUT_WR)

    watchdog = threading.Timer(5.0, end)
    with sender, receiver:
        sender.send(job(b"a"))
        watchdog.start()
        serve_jobs(
            receiver,
            buffer,
            lambda together: compared.append([j for _, j in together]),
            pause=lambda: calls.append("pause"),
            gather=gather,
        )
        watchdog.cancel()
    assert compared == [[b"a"], [b"b", b"c", b"d"], [b"last"]]  # the three sent meanwhile: one comparison
    assert calls == ["pause", "gather", "pause", "gather", "pause"]  # after the end: no gathering, it returns
