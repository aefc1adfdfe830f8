"""Loads a big lookup version chunk after chunk until it is killed (``SIGKILL``) by the test that started it.

Usage: ``python slow_writer.py <store-url> <rows-per-chunk>``; prints ``chunk <n>`` after each committed chunk.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from lookup_support import T0, make_batch, spec_for

from lookup_tables import open_store


def main() -> None:
    url, per_chunk = sys.argv[1], int(sys.argv[2])
    store = open_store(url)
    spec = spec_for()
    info = store.begin_version(
        spec,
        run_id="doomed",
        model_version="m-doomed",
        data_interval_start=T0 + timedelta(days=9),
        data_interval_end=T0 + timedelta(days=10),
    )
    print(f"version {info.version}", flush=True)
    # Far more chunks than the test waits for: the process is always mid-load when it dies.
    for chunk in range(10_000):
        store.write_chunk(spec, info.version, chunk, make_batch(per_chunk, 99.0, start=chunk * per_chunk))
        print(f"chunk {chunk}", flush=True)


if __name__ == "__main__":
    main()
