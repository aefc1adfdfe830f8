"""One batch run (snapshot → score → validate → publish) in its own process; prints a JSON result line.

Run by bench/__main__.py once per backend and size so that peak RSS is this process's own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

from bench.memory import peak_rss_mib
from bench.world import AS_OF
from migrate.batch import steps as batch
from migrate.registry import Registry
from migrate.settings import get_settings


def main() -> None:
    settings = get_settings()
    usecase = Registry(settings.usecases_dir).get("item_availability")
    interval = batch.Interval(AS_OF - timedelta(days=1), AS_OF)
    started = time.perf_counter()
    result = batch.run_batch(usecase, settings, interval, run_id=f"bench__{sys.argv[1]}")
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": result.rows,
                "seconds": seconds,
                "rows_per_s": result.rows / seconds,
                "peak_rss_mib": peak_rss_mib(),
                "version": result.version,
                "activated": result.activated,
                "steps": result.steps,
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
