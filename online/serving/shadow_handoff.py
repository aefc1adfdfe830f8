"""Where shadow comparisons run: a process of their own (production) or a bounded thread pool (in-process).

Measured (docs/benchmarks.md): on background threads of the serving process the comparison and the Kafka
producer held the GIL long enough to add milliseconds to the served latency. In a separate process the request
thread only pays for encoding a job to bytes (online/serving/shadow_wire.py) and one non-blocking ``send`` on a
socket to the process; a full socket drops the job, counted.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from migrate.artifact import ArtifactStore
from migrate.models.alias_store import AliasStore
from migrate.models.aliases import AliasWatcher
from migrate.settings import get_settings
from online.serving.assembly import build_paths
from online.serving.heap import settle_heap
from online.serving.metrics import mark_dead
from online.serving.model_swap import ModelSwitcher
from online.serving.pool import BoundedPool
from online.serving.prediction_paths import Outcome, Paths, Request
from online.serving.predictor import OnlinePredictor
from online.serving.shadow_compare import Job, Logger, compare, compare_many
from online.serving.shadow_wire import decode_job, encode_job
from online.shadow.log import DROP_REASONS, ShadowLogger

log = logging.getLogger(__name__)
_COUNTS = ("sent", *DROP_REASONS)
PROBLEM_BYTES = 512
SEND_BUFFER_BYTES = 4 << 20  # jobs queued for the process, in the kernel (~6,000 one-entity jobs); see ShadowProcess
_COUNT = struct.Struct("<I")  # each message: the job's entity count, then the job
TOGETHER_ENTITIES = 1_000  # the most entities the comparison process compares in one go (one feature read)
# After each comparison the process sleeps this long before it takes the next jobs. The jobs sent meanwhile queue in
# the socket with no reader waiting on it, so the worker's `send` wakes nobody: a send that finds the process blocked
# in `recv` makes the sender's kernel wake it (docs/serving.md, item 22). The records are logged this much later.
GATHER_S = 0.002
# What a use case's shadow log says until the comparison process first reports (it imports, loads the model and
# connects first; under SCHED_IDLE on a busy machine, seconds later): no record is known to be delivered yet.
STARTING = b"starting: the shadow comparison process has not reported yet"


class ShadowSink(Protocol):
    """Takes one request's comparison job; False when it had to drop it."""

    def submit(self, req: Request, served: Sequence[str], online: Outcome, batch: Outcome) -> bool: ...

    def health(self) -> str | None:
        """None while shadow records are delivered; else why not (``/readyz``'s ``shadow_log`` check)."""
        ...


class InProcessShadow:
    """Comparisons on a bounded thread pool of this process (tests, and a single-process embedding)."""

    def __init__(
        self,
        usecase: str,
        paths: Paths,
        logger: Logger,
        pool: BoundedPool,
        candidates: Callable[[str], OnlinePredictor | None] | None = None,
    ) -> None:
        self.usecase, self.paths, self.logger, self.pool = usecase, paths, logger, pool
        self.candidates = candidates

    def submit(self, req: Request, served: Sequence[str], online: Outcome, batch: Outcome) -> bool:
        return self.pool.submit(self._run, req, served, online, batch) is not None

    def health(self) -> str | None:
        check = getattr(self.logger, "health", None)  # a ShadowLogger has one; a test's recorder need not
        problem = check() if callable(check) else None
        return None if problem is None else str(problem)

    def _run(self, req: Request, served: Sequence[str], online: Outcome, batch: Outcome) -> None:
        _compare_or_log(
            self.paths, self.logger, self.usecase, req, job=(served, online, batch), candidates=self.candidates
        )


class _Channel:
    def __init__(self, process: ShadowProcess, usecase: str) -> None:
        self.process, self.usecase = process, usecase

    def submit(self, req: Request, served: Sequence[str], online: Outcome, batch: Outcome) -> bool:
        try:
            job = encode_job(self.usecase, req, served, online, batch)
        except (NotImplementedError, TypeError, ValueError, OverflowError):
            # A value the job cannot carry is a bug to fix, not a reason to fail the answer: logged, and counted
            # as skipped by the caller.
            log.exception("the shadow job of request %s for %s could not be encoded", req.id, self.usecase)
            return False
        return self.process.submit(job, len(req.keys))

    def health(self) -> str | None:
        return self.process.health(self.usecase)


class ShadowProcess:
    """One comparison process per serving worker, fed through a socket; its Kafka counts are exported by the
    worker's /metrics through shared counters.

    Each job is one message on a ``SOCK_SEQPACKET`` socket pair, sent without blocking from the request's own
    thread: the kernel keeps the queued jobs (up to the socket's send buffer, `SEND_BUFFER_BYTES`), so the worker
    holds none of them and no thread of its own moves them. A ``multiprocessing.Queue`` before it cost a feeder
    thread that took the GIL from the event loop to pickle and write each list: measured in isolation, ~35 µs of
    CPU per put when the sender sleeps between jobs, against ~1 µs for a ``send`` (docs/serving.md).
    The jobs and entities in flight are bounded as well (a bound in jobs alone once let 1,000 queued 100-entity
    jobs grow the worker by ~90 MiB): two single-writer counters (submitted, written by the worker; taken, by the
    process) give them without a lock.
    """

    def __init__(
        self,
        usecases: Sequence[str],
        *,
        capacity: int = 10_000,
        max_entities: int = 10_000,
        registry: CollectorRegistry,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.usecases = list(usecases)
        self.max_entities = max_entities
        self.capacity = capacity
        # Each job one message: a send never splits one, and a job larger than the buffer is refused whole.
        self._sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with contextlib.suppress(OSError):  # capped by net.core.wmem_max; the default (~200 KiB) still works
            self._sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self._sender.setblocking(False)
        largest = self._sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)  # no message can be larger
        self._counts: list[Synchronized[int]] = [
            context.Value("q", 0, lock=False) for _ in range(len(self.usecases) * len(_COUNTS))
        ]
        # Per use case: why its logger does not deliver now (empty: it does), written by the process.
        # Until its first report, the process has delivered nothing: not "ok" yet.
        self._problems: list[Any] = [
            context.Array("c", STARTING.ljust(PROBLEM_BYTES, b"\0"), lock=False) for _ in self.usecases
        ]
        self._submitted = 0  # entities, and jobs: each counted by the worker as sent, by the process as taken
        self._jobs = 0
        self._taken: Any = context.Array("q", 2, lock=False)  # [entities, jobs] the process took
        self._process = context.Process(
            target=_main,
            args=(receiver, largest, self.usecases, self._counts, self._taken, self._problems),
            name="migrate-shadow",
            daemon=True,
        )
        self._process.start()  # the process has its own copy of `receiver`
        receiver.close()
        registry.register(_Counts(self))

    def channel(self, usecase: str) -> ShadowSink:
        """The sink of one use case."""
        return _Channel(self, usecase)

    def submit(self, job: bytes, entities: int = 1) -> bool:
        """Send one encoded job (`encode_job`) of `entities` entities to the process; False (dropped) when the jobs
        or the entities in flight would pass their bound, when the socket's buffer is full, or when the process is
        gone. Never blocks."""
        if self._submitted - self._taken[0] + entities > self.max_entities:
            return False
        if self._jobs - self._taken[1] >= self.capacity:
            return False
        try:
            # The count beside the job: the process counts it taken even if the job cannot be decoded.
            self._sender.send(_COUNT.pack(entities) + job)
        except OSError:  # full (BlockingIOError), larger than the buffer (EMSGSIZE), or the process is gone
            return False
        self._submitted += entities
        self._jobs += 1
        return True

    def counts(self, usecase: str) -> dict[str, int]:
        """Records the comparison process sent and dropped for `usecase`, by reason."""
        base = self.usecases.index(usecase) * len(_COUNTS)
        return {name: int(self._counts[base + i].value) for i, name in enumerate(_COUNTS)}

    def health(self, usecase: str) -> str | None:
        """None while `usecase`'s shadow records are delivered; else why not."""
        if not self._process.is_alive():
            return f"the shadow comparison process exited (code {self._process.exitcode})"
        problem = bytes(self._problems[self.usecases.index(usecase)].value).decode("utf-8", "replace")
        return problem or None

    def close(self, timeout_s: float = 10.0) -> None:
        """Let the process compare what was sent, then stop it: it reads the end of the socket after the last job."""
        with contextlib.suppress(OSError):
            self._sender.shutdown(socket.SHUT_WR)
        self._sender.close()
        self._process.join(timeout_s)
        if self._process.is_alive():
            # Under SCHED_IDLE (MIGRATE_SHADOW_CPU=idle) a machine kept busy by other processes may not give it the
            # CPU to finish: what it had not taken is lost, and said so.
            log.error(
                "the shadow comparison process did not finish within %.0f s; %d entities queued for comparison are "
                "lost (their answers were served)",
                timeout_s,
                self._submitted - self._taken[0],
            )
            self._process.kill()


class _Counts(Collector):
    def __init__(self, process: ShadowProcess) -> None:
        self.process = process

    def collect(self) -> Any:
        sent = CounterMetricFamily("migrate_shadow_records_sent", "Shadow records sent to Kafka.", labels=["usecase"])
        dropped = CounterMetricFamily(
            "migrate_shadow_records_dropped", "Shadow records dropped, not blocking.", labels=["usecase", "reason"]
        )
        for usecase in self.process.usecases:
            counts = self.process.counts(usecase)
            sent.add_metric([usecase], counts["sent"])
            for reason in DROP_REASONS:
                dropped.add_metric([usecase, reason], counts[reason])
        healthy = GaugeMetricFamily(
            "migrate_shadow_log_healthy", "1 while shadow records are delivered, 0 while not.", labels=["usecase"]
        )
        for usecase in self.process.usecases:
            healthy.add_metric([usecase], 0 if self.process.health(usecase) else 1)
        yield sent
        yield dropped
        yield healthy


def _main(  # noqa: PLR0917 - a process target takes its arguments by position
    jobs: socket.socket,
    largest: int,
    usecases: list[str],
    counts: list[Synchronized[int]],
    taken: Any,
    problems: list[Any],
) -> None:
    """The comparison process: its own stores, model and Kafka producer, configured from the environment."""
    settings = get_settings()
    # Comparisons are evidence, answers are the product: on a busy machine the scheduler serves the worker first.
    lower_priority(settings.shadow_cpu, settings.shadow_niceness)
    stores = build_paths(settings, usecases)
    paths = stores.paths
    # The online model of the comparisons follows the live alias as the worker's does (the worker audits refusals).
    artifacts = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    switcher = ModelSwitcher(stores.usecases, paths, stores.features, artifacts, actor=f"shadow:{os.getpid()}")
    alias_store = AliasStore.from_settings(settings)
    alias_store.ensure_schema()
    alias_watcher = AliasWatcher(alias_store, on_change=switcher.apply).start()
    loggers = {name: ShadowLogger.from_settings(settings, name, registry=CollectorRegistry()) for name in paths}
    stop = threading.Event()

    def publish_counts() -> None:
        while not stop.wait(0.5):
            _publish(loggers, usecases, counts, problems)

    threading.Thread(target=publish_counts, name="shadow-counts", daemon=True).start()
    settle_heap()  # as the worker does: full GC passes skip what start-up loaded (online/serving/heap.py)
    budget = CpuBudget(settings.shadow_cpu_budget)

    def compare_taken(together: list[tuple[int, bytes]]) -> None:
        for entities, _ in together:
            taken[0] += entities  # this process is their only writer
            taken[1] += 1
        _compare_together(together, paths, loggers, switcher)

    try:
        serve_jobs(jobs, memoryview(bytearray(largest)), compare_taken, pause=budget.pause)
    finally:
        stop.set()
        alias_watcher.stop()
        alias_store.close()
        for logger in loggers.values():
            logger.close()
        _publish(loggers, usecases, counts, problems)
        mark_dead()  # with several workers, its live gauges leave the shared view


class CpuBudget:
    """Keeps a process's CPU time (all its threads) within `cores` of the wall time, over windows of `window_s`:
    `pause` sleeps off what it is over. 0 cores: no budget."""

    def __init__(
        self,
        cores: float,
        *,
        window_s: float = 1.0,
        cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cores, self.window_s = cores, window_s
        self._cpu, self._clock, self._sleep = cpu, clock, sleep
        self._cpu0, self._wall0 = cpu(), clock()

    def pause(self) -> float:
        """Sleep as long as the CPU used since the window began needs to be within budget; the seconds slept."""
        if self.cores <= 0:
            return 0.0
        used, elapsed = self._cpu() - self._cpu0, self._clock() - self._wall0
        owed = used / self.cores - elapsed
        if owed > 0:
            self._sleep(owed)
        if elapsed + max(owed, 0.0) >= self.window_s:  # a new window: what came before is paid
            self._cpu0, self._wall0 = self._cpu(), self._clock()
        return max(owed, 0.0)


def serve_jobs(
    jobs: socket.socket,
    buffer: memoryview,
    compare: Callable[[list[tuple[int, bytes]]], None],
    *,
    pause: Callable[[], object] = lambda: None,
    gather: Callable[[], object] = lambda: time.sleep(GATHER_S),
) -> None:
    """The comparison process's loop until the worker closes its end: take the jobs queued (`take_together`),
    `compare` them, `pause` (the CPU budget), then `gather` (`GATHER_S`) while the next ones queue, so that the
    worker's sends find no reader waiting and wake nobody, and what arrived meanwhile is compared together."""
    more = True
    while more:
        together, more = take_together(jobs, buffer, TOGETHER_ENTITIES)
        compare(together)
        pause()
        if more:
            gather()


def take_together(jobs: socket.socket, buffer: memoryview, max_entities: int) -> tuple[list[tuple[int, bytes]], bool]:
    """The jobs to compare together: the next (waiting for it), then every job already queued behind it, up to
    `max_entities`; and False once the worker closed its end (after its last job). `buffer` holds the largest job.

    Under load the worker sends faster than one comparison per job can follow; jobs compared together cost one
    feature read and one model call (online/serving/shadow_compare.py), so the backlog is what sets the batch.
    """
    together: list[tuple[int, bytes]] = []
    entities, flags = 0, 0  # the first receive waits; the others take only what is queued
    while entities < max_entities:
        try:
            size = jobs.recv_into(buffer, 0, flags)
        except BlockingIOError:
            break
        if size == 0:  # the worker's end is closed: nothing more will come
            return together, False
        (count,) = _COUNT.unpack_from(buffer)
        together.append((count, bytes(buffer[_COUNT.size : size])))
        entities += count
        flags = socket.MSG_DONTWAIT
    return together, True


def _compare_together(together: Sequence[tuple[int, bytes]], paths: Any, loggers: Any, switcher: ModelSwitcher) -> None:
    by_usecase: dict[str, list[Job]] = {}
    for entities, job in together:
        try:
            usecase, req, served, online, batch = decode_job(job)
        except Exception:  # a bug between the two ends of the wire: say so, and keep comparing the rest
            log.exception("a shadow job of %d entities could not be decoded; it is skipped", entities)
            continue
        if usecase in paths:
            by_usecase.setdefault(usecase, []).append(Job(req, served, online, batch))
    for usecase, jobs in by_usecase.items():
        try:
            compare_many(paths[usecase], loggers[usecase], usecase, jobs, candidate=switcher.candidate(usecase))
        except Exception:
            log.exception("shadow comparison of %d requests for %s failed", len(jobs), usecase)


def _compare_or_log(
    paths: Paths,
    logger: Logger,
    usecase: str,
    req: Request,
    *,
    job: tuple[Sequence[str], Outcome, Outcome],
    candidates: Any,
) -> None:
    """One request compared and logged; a failure is logged, never raised (the next request is compared)."""
    served, online, batch = job
    try:
        candidate = candidates(usecase) if candidates is not None else None
        compare(paths, logger, usecase, req, served=served, online=online, batch=batch, candidate=candidate)
    except Exception:
        log.exception("shadow comparison of request %s for %s failed", req.id, usecase)


def lower_priority(policy: str, niceness: int) -> None:
    """Lower this process's CPU priority: SCHED_IDLE (``idle``, Linux) or `niceness` added (``nice``)."""
    if policy == "idle":
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        log.warning("SCHED_IDLE does not exist here: the shadow comparison process runs at niceness 19 instead")
        os.nice(19 - os.nice(0))
        return
    os.nice(niceness)


def _publish(
    loggers: dict[str, Any], usecases: list[str], counts: list[Synchronized[int]], problems: list[Any]
) -> None:
    for name, logger in loggers.items():
        logger.publish_gauges()
        stats = logger.stats()
        base = usecases.index(name) * len(_COUNTS)
        for i, counter in enumerate(_COUNTS):
            counts[base + i].value = stats.get(counter, 0)
        problem = (logger.health() or "").encode()[: PROBLEM_BYTES - 1]
        problems[usecases.index(name)].value = problem
