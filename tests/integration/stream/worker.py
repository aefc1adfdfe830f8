"""A stream processor in a process of its own, for the kill -9 tests: ``python worker.py '<json>'``.

The JSON names the state dir, the (renamed) use case, the broker, Redis, the group and a per-event delay that
slows processing down so that kills land mid-stream.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase
from online.stream.processor import StreamProcessor


def main(args: dict[str, Any]) -> None:
    settings = get_settings(
        state_dir=Path(args["state_dir"]),
        stream_checkpoint_events=args.get("checkpoint_events", 50),
        stream_checkpoint_interval_s=args.get("checkpoint_interval_s", 0.02),
        # Behind or not, the same small checkpoints: a kill lands between and during many of them.
        stream_catch_up_checkpoint_events=args.get("checkpoint_events", 50),
        stream_catch_up_checkpoint_interval_s=args.get("checkpoint_interval_s", 0.02),
    )
    if "usecase_json" in args:  # a variant of the example, built by the test
        usecase = UseCase.model_validate_json(args["usecase_json"])
    else:
        usecase = Registry(settings.usecases_dir).get("item_availability").model_copy(update={"name": args["usecase"]})
    processor = StreamProcessor(
        settings, usecase, bootstrap=args["bootstrap"], redis_url=args["redis_url"], group_id=args["group"]
    )
    delay = float(args.get("delay_s", 0.0))
    if delay:
        handle = processor.handle_fetch

        def slow(messages: Any) -> None:
            for message in messages:  # one at a time, so a kill can land between any two events
                time.sleep(delay)
                handle([message])

        processor.handle_fetch = slow  # type: ignore[method-assign]
    report = processor.run(until_caught_up=True, max_seconds=args.get("max_seconds", 120))
    print(orjson.dumps({"events": report.events, "dead_letters": report.dead_letters}).decode(), flush=True)


if __name__ == "__main__":
    main(orjson.loads(sys.argv[1]))
