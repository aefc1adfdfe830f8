"""The guardrail's sliding window and the in-memory flag watcher, without a database."""

from __future__ import annotations

import threading
import time

import pytest

from migrate.cutover.flags import Flag, FlagWatcher, Stage
from migrate.cutover.guardrail import Guardrail
from migrate.usecase import CutoverPolicy

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _guardrail(clock: Clock, **options: int | float) -> Guardrail:
    settings: dict[str, float] = {"window_s": 60.0, "min_samples": 100, "max_samples": 10_000} | options
    return Guardrail(
        max_error_rate=0.01,
        max_p99_latency_ms=25.0,
        window_s=settings["window_s"],
        min_samples=int(settings["min_samples"]),
        max_samples=int(settings["max_samples"]),
        clock=clock,
    )


def test_healthy_traffic_never_breaches() -> None:
    clock = Clock()
    guard = _guardrail(clock)
    for i in range(5_000):
        clock.now += 0.01
        # 0.5 % errors, 0.5 % slow: both under their thresholds.
        assert guard.record(ok=i % 200 != 0, latency_ms=80.0 if i % 200 == 100 else 5.0) is None
    assert guard.check() is None
    assert "errors" in guard.describe()


def test_an_error_burst_breaches_once_then_latches() -> None:
    clock = Clock()
    guard = _guardrail(clock)
    for _ in range(200):
        clock.now += 0.01
        assert guard.record(ok=True, latency_ms=5.0) is None
    breaches = []
    for _ in range(20):
        clock.now += 0.01
        breach = guard.record(ok=False, latency_ms=5.0)
        if breach is not None:
            breaches.append(breach)
    assert len(breaches) == 1  # reported once: one rollback, not one per request
    breach = breaches[0]
    assert breach.kind == "error_rate" and breach.errors == 3 and breach.samples == 203
    assert "error rate 1.48% > 1.00%" in str(breach)
    assert guard.breach is breach and guard.describe() == str(breach)
    guard.reset()
    assert guard.breach is None and guard.samples == 0


def test_a_slow_burst_breaches_on_p99() -> None:
    clock = Clock()
    guard = _guardrail(clock)
    for _ in range(300):
        clock.now += 0.01
        assert guard.record(ok=True, latency_ms=5.0) is None
    # Nearest-rank p99 of 303 calls is the 300th smallest: 3 slow calls keep it at 5 ms, a 4th makes it slow.
    for _ in range(3):
        assert guard.record(ok=True, latency_ms=400.0) is None
    breach = guard.record(ok=True, latency_ms=400.0)
    assert breach is not None and breach.kind == "p99_latency"
    assert breach.p99_ms == 400.0 and "p99 latency 400.0 ms > 25 ms" in str(breach)


def test_too_few_samples_never_breach() -> None:
    clock = Clock()
    guard = _guardrail(clock)
    for _ in range(99):
        clock.now += 0.01
        assert guard.record(ok=False, latency_ms=5_000.0) is None
    assert guard.check() is None
    assert guard.record(ok=False, latency_ms=5_000.0) is not None  # the 100th sample


def test_old_calls_leave_the_window() -> None:
    clock = Clock()
    guard = _guardrail(clock)
    for _ in range(50):
        guard.record(ok=False, latency_ms=5.0)
    clock.now += 61  # the errors are now older than the window
    for _ in range(150):
        clock.now += 0.01
        assert guard.record(ok=True, latency_ms=5.0) is None
    assert guard.samples == 150


def test_the_window_holds_at_most_max_samples() -> None:
    clock = Clock()
    guard = _guardrail(clock, min_samples=10, max_samples=100)
    for _ in range(10):
        guard.record(ok=False, latency_ms=5.0)
    guard.reset()
    for _ in range(10):
        guard.record(ok=True, latency_ms=5.0)
    assert guard.record(ok=False, latency_ms=5.0) is not None
    guard.reset()
    for _ in range(1_000):
        guard.record(ok=True, latency_ms=5.0)
    assert guard.samples == 100


def test_record_is_thread_safe() -> None:
    guard = Guardrail(max_error_rate=1.0, max_p99_latency_ms=1e9, min_samples=1, max_samples=100_000)

    def hammer() -> None:
        for i in range(5_000):
            guard.record(ok=i % 2 == 0, latency_ms=float(i))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert guard.samples == 40_000
    assert "40000 online calls, 20000 errors" in guard.describe()


def test_from_policy_and_bad_settings() -> None:
    guard = Guardrail.from_policy(CutoverPolicy(max_error_rate=0.02, max_p99_latency_ms=30), min_samples=10)
    assert (guard.max_error_rate, guard.max_p99_latency_ms, guard.min_samples) == (0.02, 30, 10)
    with pytest.raises(ValueError, match="min_samples"):
        Guardrail(max_error_rate=0.01, max_p99_latency_ms=10, min_samples=0)
    with pytest.raises(ValueError, match="window_s"):
        Guardrail(max_error_rate=0.01, max_p99_latency_ms=10, window_s=0)


@pytest.mark.parametrize("kind", ["error", "slow"])
def test_as_served_a_breach_takes_at_least_ten_offending_calls(kind: str) -> None:
    guard = Guardrail.from_policy(CutoverPolicy(max_error_rate=0.01, max_p99_latency_ms=25), min_samples=100)
    assert guard.min_bad == 10
    for _ in range(91):
        assert guard.record(ok=True, latency_ms=5.0) is None
    ok, latency_ms = kind != "error", 400.0 if kind == "slow" else 5.0
    for _ in range(9):  # 9 % errors, or 9 calls over T: far beyond both thresholds, still too few calls
        assert guard.record(ok=ok, latency_ms=latency_ms) is None
    breach = guard.record(ok=ok, latency_ms=latency_ms)
    assert breach is not None and breach.kind == ("error_rate" if kind == "error" else "p99_latency")
    assert breach.samples == 101


def test_the_constructor_keeps_one_offending_call_enough() -> None:
    guard = Guardrail(max_error_rate=0.01, max_p99_latency_ms=25, min_samples=100)
    assert guard.min_bad == 1
    for _ in range(99):
        guard.record(ok=True, latency_ms=5.0)
    assert guard.record(ok=True, latency_ms=400.0) is None  # p99 of 100 calls is the 99th: one slow call is fine
    breach = guard.record(ok=True, latency_ms=400.0)  # 2 slow of 101: nearest-rank p99 is slow
    assert breach is not None and breach.kind == "p99_latency"
    with pytest.raises(ValueError, match="min_bad"):
        Guardrail(max_error_rate=0.01, max_p99_latency_ms=10, min_bad=0)


# -- the watcher ---------------------------------------------------------------------------------------------------


class FakeStore:
    """A flag source whose revision and flags the test sets, and which can be made to fail."""

    def __init__(self) -> None:
        self.rev = 0
        self.flags: dict[str, Flag] = {}
        self.failing = False
        self.loads = 0

    def revision(self) -> int:
        if self.failing:
            raise ConnectionError("database down")
        return self.rev

    def get_all(self) -> dict[str, Flag]:
        self.loads += 1
        return dict(self.flags)

    def move(self, flag: Flag) -> None:
        self.rev += 1
        self.flags[flag.usecase] = flag


def test_the_watcher_reloads_only_when_the_revision_moves() -> None:
    store = FakeStore()
    watcher = FlagWatcher(store, interval_s=60)
    watcher.start()
    try:
        assert watcher.current("uc") == Flag("uc") and store.loads == 1
        assert watcher.poll() is False and store.loads == 1
        store.move(Flag("uc", Stage.CANARY, 5, revision=1))
        assert watcher.poll() is True
        assert watcher.current("uc").percent == 5 and watcher.revision == 1 and store.loads == 2
        with pytest.raises(TypeError):
            watcher.flags["uc"] = Flag("uc")  # type: ignore[index]
    finally:
        watcher.stop()


def test_poll_errors_are_counted_and_the_last_flags_stay(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    store.move(Flag("uc", Stage.ONLINE, revision=1))
    watcher = FlagWatcher(store, interval_s=60).start()
    try:
        store.failing = True
        for _ in range(3):
            assert watcher.poll() is False
        assert watcher.errors == 3 and "database down" in (watcher.last_error or "")
        assert watcher.current("uc").stage is Stage.ONLINE
        assert len([r for r in caplog.records if "not refreshed" in r.getMessage()]) == 1  # not once per poll
        store.failing = False
        store.move(Flag("uc", Stage.SHADOW, revision=2))
        assert watcher.poll() is True and watcher.current("uc").stage is Stage.SHADOW
        assert any("refreshed again after 3 failures" in r.getMessage() for r in caplog.records)
    finally:
        watcher.stop()


def test_the_background_thread_picks_up_changes_and_survives_failures() -> None:
    store = FakeStore()
    seen = threading.Event()
    watcher = FlagWatcher(store, interval_s=0.01, on_change=lambda flags: seen.set() if "uc" in flags else None)
    with watcher:
        store.failing = True
        time.sleep(0.1)
        assert watcher.errors > 0
        store.failing = False
        store.move(Flag("uc", Stage.SHADOW, revision=1))
        assert seen.wait(5)
        assert watcher.current("uc").stage is Stage.SHADOW
        assert watcher.staleness_s < 5
    assert watcher._thread is not None and not watcher._thread.is_alive()


def test_a_watcher_that_cannot_load_at_start_raises() -> None:
    store = FakeStore()
    store.failing = True
    with pytest.raises(ConnectionError):
        FlagWatcher(store).start()
    with pytest.raises(ValueError, match="interval_s"):
        FlagWatcher(store, interval_s=0)


def test_a_revision_that_went_back_is_caught_by_the_periodic_full_reload() -> None:
    store = FakeStore()
    store.move(Flag("uc", Stage.ONLINE, revision=1))
    watcher = FlagWatcher(store, interval_s=60, full_reload_s=0.05).start()
    try:
        # The tables were recreated: the new flag has the revision the old one had.
        store.flags = {"uc": Flag("uc", Stage.SHADOW, revision=1)}
        assert watcher.poll() is False  # not due yet: the revision alone cannot tell
        time.sleep(0.06)
        assert watcher.poll() is True and watcher.current("uc").stage is Stage.SHADOW
        time.sleep(0.06)
        assert watcher.poll() is False  # reloaded again, nothing changed: no change reported
    finally:
        watcher.stop()
