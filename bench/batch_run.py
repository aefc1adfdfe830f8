"""One batch run (snapshot → score → validate → publish) in its own process; prints a JSON result line.

Run by bench/__main__.py once per backend and size so that peak RSS is this process's own. On PostgreSQL it
also measures the floor: the published rows copied out in binary and loaded again by one raw ``COPY ... FROM
STDIN`` into a scratch table, the same bytes with nothing else around them.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.memory import peak_rss_mib
from bench.world import AS_OF
from migrate.batch import steps as batch
from migrate.registry import Registry
from migrate.settings import Settings, get_settings

_COPY_SLICE = 1 << 20


def own_cpu_s() -> float:
    """User + system CPU seconds of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu_s() -> float | None:
    """CPU seconds of every local process named postgres*, with their reaped children (ended backends count in
    the postmaster's); None where /proc cannot tell (no local server, another OS)."""
    ticks, seen = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        if not text[text.index("(") + 1 : text.rindex(")")].startswith("postgres"):
            continue
        seen = True
        ticks += sum(int(field) for field in text[text.rindex(")") + 2 :].split()[11:15])
    return ticks / os.sysconf("SC_CLK_TCK") if seen else None


def copy_floor(settings: Settings, version: int) -> dict[str, float]:
    """One raw binary COPY of the version's rows (copied out first) into a scratch table, timed alone."""
    import psycopg  # noqa: PLC0415 - PostgreSQL runs only
    import sqlalchemy as sa  # noqa: PLC0415 - PostgreSQL runs only

    from lookup_tables import TableSpec  # noqa: PLC0415 - PostgreSQL runs only

    usecase = Registry(settings.usecases_dir).get("item_availability")
    table = TableSpec.for_usecase(usecase, settings).version_table(version)
    url = sa.make_url(settings.sql_url_value).set(drivername="postgresql")
    data = bytearray()
    with psycopg.connect(url.render_as_string(hide_password=False), connect_timeout=10) as conn:
        with conn.cursor() as cursor, cursor.copy(f'COPY "{table}" TO STDOUT (FORMAT binary)') as copy:
            for block in copy:
                data += block
        conn.execute(f'CREATE TABLE bench_copy_floor (LIKE "{table}")')
        conn.commit()
        server = postgres_cpu_s()
        started = time.perf_counter()
        view = memoryview(data)
        with conn.cursor() as cursor, cursor.copy("COPY bench_copy_floor FROM STDIN (FORMAT binary)") as copy:
            for start in range(0, len(view), _COPY_SLICE):
                copy.write(view[start : start + _COPY_SLICE])
        conn.commit()
        seconds = time.perf_counter() - started
        after = postgres_cpu_s()
        view.release()
        conn.execute("DROP TABLE bench_copy_floor")
        conn.commit()
    return {
        "seconds": seconds,
        "bytes": float(len(data)),
        "server_cpu_s": after - server if after is not None and server is not None else float("nan"),
    }


def main() -> None:
    settings = get_settings()
    usecase = Registry(settings.usecases_dir).get("item_availability")
    interval = batch.Interval(AS_OF - timedelta(days=1), AS_OF)
    cpu, server = own_cpu_s(), postgres_cpu_s()
    started = time.perf_counter()
    result = batch.run_batch(usecase, settings, interval, run_id=f"bench__{sys.argv[1]}")
    seconds = time.perf_counter() - started
    server_after = postgres_cpu_s()
    out: dict[str, Any] = {
        "rows": result.rows,
        "seconds": seconds,
        "rows_per_s": result.rows / seconds,
        "peak_rss_mib": peak_rss_mib(),
        "version": result.version,
        "activated": result.activated,
        "steps": result.steps,
        "cpu_s": own_cpu_s() - cpu,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if settings.backend == "postgresql":
        if server is not None and server_after is not None:
            out["postgres_cpu_s"] = server_after - server
        out["copy_floor"] = copy_floor(settings, result.version)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
