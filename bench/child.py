"""A suite's measured part in a process of its own: its peak RSS and its imports are that part's alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_child(module: str, *args: str, what: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -m <module> <args>`` from the repository root; its last stdout line is its JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=3600,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
