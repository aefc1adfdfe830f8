"""The comparison process's CPU: a lower nice value or Linux's SCHED_IDLE (MIGRATE_SHADOW_CPU), and a budget."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from online.serving.shadow_handoff import CpuBudget

pytestmark = pytest.mark.unit

PROBE = """
import os, sys
from online.serving.shadow_handoff import lower_priority
before = os.getpriority(os.PRIO_PROCESS, 0)
lower_priority(sys.argv[1], int(sys.argv[2]))
print(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0) - before)
"""


def _probe(policy: str, niceness: int) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, policy, str(niceness)], capture_output=True, text=True, check=True, timeout=60
    )
    scheduler, added = done.stdout.split()
    return int(scheduler), int(added)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_idle_puts_the_process_under_sched_idle() -> None:
    scheduler, _ = _probe("idle", 10)
    assert scheduler == os.SCHED_IDLE


def test_nice_adds_the_niceness_and_keeps_the_normal_scheduler() -> None:
    if os.getpriority(os.PRIO_PROCESS, 0) > 9:
        pytest.skip("this test process already runs at niceness > 9")
    scheduler, added = _probe("nice", 7)
    assert added == 7 and scheduler == os.SCHED_OTHER


class _Clocks:
    """A process's CPU time and the wall clock, moved by the test; sleeping moves the wall clock only."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0
        self.slept: list[float] = []

    def work(self, seconds: float) -> None:  # busy: both clocks move
        self.cpu += seconds
        self.wall += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.wall += seconds


def test_a_cpu_budget_sleeps_off_what_the_process_used_beyond_its_share() -> None:
    clocks = _Clocks()
    budget = CpuBudget(0.25, window_s=1.0, cpu=lambda: clocks.cpu, clock=lambda: clocks.wall, sleep=clocks.sleep)
    clocks.work(0.1)  # 0.1 s of CPU is 0.4 s of wall time at a quarter of a core: 0.3 s owed
    assert budget.pause() == pytest.approx(0.3)
    assert clocks.slept == [pytest.approx(0.3)]
    clocks.wall += 0.6  # waited 0.6 s for the next job: the window ends with the budget unused
    clocks.work(0.05)
    assert budget.pause() == 0.0  # 0.15 s of CPU over 1.05 s: within a quarter of a core
    cpu, wall = clocks.cpu, clocks.wall
    for _ in range(100):  # a process that would work all the time: held at a quarter of the wall time
        clocks.work(0.01)
        budget.pause()
    assert (clocks.cpu - cpu) / (clocks.wall - wall) == pytest.approx(0.25, abs=0.01)


def test_no_budget_never_sleeps() -> None:
    clocks = _Clocks()
    budget = CpuBudget(0.0, cpu=lambda: clocks.cpu, clock=lambda: clocks.wall, sleep=clocks.sleep)
    clocks.work(5.0)
    assert budget.pause() == 0.0 and clocks.slept == []
