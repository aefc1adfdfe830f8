"""The comparison process's CPU policy (MIGRATE_SHADOW_CPU): a lower nice value, or Linux's SCHED_IDLE."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
