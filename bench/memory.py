"""Peak resident memory of this process alone.

``getrusage(RUSAGE_SELF).ru_maxrss`` is not it for a child process on Linux: at ``exec`` the kernel folds the
high-water mark of the address space being replaced (the parent's, shared through vfork, or its copy after fork)
into the child's, so a child started by a parent that had built a 10M-entity world reports the parent's peak.
The address space's own ``VmHWM`` (/proc/self/status) starts afresh at ``exec``.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB: ``VmHWM`` where /proc exists, else ``ru_maxrss`` (an upper bound)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
