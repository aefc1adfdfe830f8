"""The Redis feature store: one record of batch features per entity, written and read by Lua scripts.

The key layout and the record format are online/features/redis_layout.py's (documented in
docs/online_features.md), the scripts online/features/redis_scripts.py's. An entity's batch features, values
and event times, are one string written by one ``SET``, so a reader never sees a value without its time; a
read is one round trip. A write decides most entities on the server in one pass (every stored feature older, or
newer, or the same record); the rest (corrections, mixed times, another feature set) are decided here, feature
by feature, and written only where the record is still the one read (compare and set), read again otherwise.

A serving worker's online read is awaited on its event loop (`read_online_async`, through redis-py's asyncio
client, opened by `aopen` on that loop); every other read and write blocks, on the caller's thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from migrate.errors import FeatureStoreError, FeatureStoreUnavailableError
from migrate.realtime_schema import ENTITY_GROUP
from migrate.settings import Settings
from online.features.redis_layout import (
    OLD_LAYOUT_FIELD,
    PREFIX,
    batch_key,
    check_feature_names,
    entity_key,
    key_suffixes,
    parse_entity_key,
    parse_record,
    prefix_of,
    record,
    state_key,
    window_columns,
)
from online.features.redis_scripts import (
    CAS_SCRIPT,
    CAS_SHA,
    ONLINE_READ_SCRIPT,
    ONLINE_READ_SHA,
    READ_SCRIPT,
    READ_SHA,
    UPGRADE_SCRIPT,
)
from online.features.store import (
    BatchRow,
    EncodedColumns,
    EntityKey,
    FeatureStore,
    FeatureValue,
    OnCorrection,
    OnlineRead,
    Rejection,
    WriteReport,
    correction_error,
    decode_time,
    decode_value,
    encode_columns,
)

if TYPE_CHECKING:  # the rows written are Arrow tables; reads never load pyarrow (~36 MiB per serving worker)
    import pyarrow as pa

__all__ = [
    "PREFIX",
    "RedisFeatureStore",
    "entity_key",
    "mask_url",
    "open_feature_store",
    "parse_entity_key",
    "state_key",
]

log = logging.getLogger(__name__)
ENTITIES_PER_SCRIPT = 100  # one script call holds the server well under 1 ms: readers wait at most that
SCRIPTS_PER_ROUND_TRIP = 40  # 4,000 entities per round trip
CAS_TRIES = 10  # rounds of compare-and-set before a write gives up on records other writers keep changing


def mask_url(url: str) -> str:
    """The URL with its password (in the authority or a ``password=`` query parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if "password" in query:
        query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(query)], safe="*")
    # Not urlunsplit: it turns "unix:///path" (empty authority) into "unix:/path".
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


# --- the store ------------------------------------------------------------------------------------------------


class _ThreadReader:
    """A thread's own read connection, held in the store's thread-local (weakly referenceable: a finaliser closes
    the connection when the thread ends)."""

    __slots__ = ("__weakref__", "client", "pid")

    def __init__(self, pid: int, client: redis.Redis) -> None:
        self.pid, self.client = pid, client


def _close_thread_reader(reader: redis.Redis, readers: dict[int, redis.Redis], lock: threading.Lock) -> None:
    with lock:
        mine = readers.get(id(reader)) is reader  # else `close` took it already
        if mine:
            del readers[id(reader)]
    if mine:
        reader.close()


def _record_and_hash_keys(usecase: str, keys: Sequence[EntityKey]) -> list[str]:
    """Each entity's batch record key, then its hash's key (`batch_key`, `entity_key`): what the read scripts take."""
    batch, entity = prefix_of(usecase, "batch"), prefix_of(usecase)
    return [k for suffix in key_suffixes(keys) for k in (batch + suffix, entity + suffix)]


_FLOAT_OR_NONE = frozenset({float, type(None)})


def _rows_together(
    items: Sequence[bytes],
    width: int,
    plans: Mapping[bytes, tuple[int, ...] | None],
    times: Mapping[bytes, datetime],
    decode: Callable[[bytes], datetime],
) -> list[BatchRow | None] | None:
    """`RedisFeatureStore._online_rows`' answer parsed for every record at once, or None when a record needs the
    per-record parse: the materialized case, where each record holds exactly the asked features in their order
    (its names line already planned so) at one shared event time. The records are split by one `split` and their
    values parsed by one `orjson.loads`, instead of a `split` and a `float()` per value (docs/serving.md, item 15).

    The answer is the per-record parse's, value for value (tests/unit/online/test_redis_rows_together.py): a record
    is read so only when its line holds exactly `width` values, each empty (None) or a JSON number, which reads
    as the same float as `float()` reads it. Anything else (``nan``, ``inf``, another number form, a record of
    another layout, the previous layout's marker) leaves the whole call to the per-record parse, which reads it
    or refuses it as before.
    """
    if not width or b"?" in items:  # "?": the previous layout, which the per-record parse refuses
        return None
    records = [raw for raw in items if len(raw) > 1]  # the others: no record ("" nothing, "!" window states only)
    if not records:
        return [None] * len(items)
    n = len(records)
    lines = b"\n".join(records).split(b"\n")
    heads, values = lines[0::3], lines[2::3]
    if (
        set(map(bytes.count, records, repeat(b"\n", n))) != {2}  # head, names, values: one shared event time
        or any(plans.get(names, ()) is not None for names in set(lines[1::3]))  # planned: exactly the asked
        or set(map(bytes.count, values, repeat(b",", n))) != {width - 1}  # each record's own count
        or not all(b"," in head for head in set(heads))
    ):
        return None
    flat = _floats_at_once(b",".join(values), n * width)
    if flat is None:
        return None
    moments = {head: times.get(stamp) or decode(stamp) for head in set(heads) for stamp in (head.split(b",", 1)[0],)}
    rows: list[BatchRow | None] = [
        tuple.__new__(BatchRow, (flat[i * width : (i + 1) * width], [moments[head]] * width))
        for i, head in enumerate(heads)
    ]
    if n == len(items):
        return rows
    taken = iter(rows)
    return [next(taken) if len(raw) > 1 else None for raw in items]


def _floats_at_once(joined: bytes, count: int) -> list[float | None] | None:
    """The `count` comma-separated values of `joined` (empty: None) by one `orjson.loads`, or None unless each is
    empty or a JSON number with a fraction or an exponent: only those read as `float()` reads them. With no string
    or container among them, every comma is a separator, so the values stay aligned with the records'."""
    if b"n" in joined:  # nan, inf, null: the per-record parse decides what they are
        return None
    if b",," in joined or joined[:1] == b"," or joined[-1:] == b",":
        text = b"," + joined + b","
        while b",," in text:  # an empty value is a missing one
            text = text.replace(b",,", b",null,")
        joined = text[1:-1]
    try:
        flat = orjson.loads(b"[" + joined + b"]")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(flat, list) or len(flat) != count or not set(map(type, flat)) <= _FLOAT_OR_NONE:
        return None  # e.g. an integer ("7"), which float() reads as 7.0
    return flat


class _OnlineCall:
    """One `read_online` script call: its keys (each entity's record and hash, then each group's state hash once)
    and arguments, and where each group's state of each entity comes back among the answer's hashes."""

    def __init__(
        self,
        usecase: str,
        keys: Sequence[EntityKey],
        group_keys: Mapping[str, Sequence[EntityKey | None]],
        feature_names: Sequence[str],
        partitions: int,
    ) -> None:
        n = len(keys)
        self.usecase, self.entities, self.feature_names = usecase, n, feature_names
        self.redis_keys = _record_and_hash_keys(usecase, keys)
        slots: dict[str, int] = {}  # group hash → its position among the hashes (the entities' come first)
        self.where: dict[str, list[int | None]] = {}
        for group, per_entity in group_keys.items():
            if group == ENTITY_GROUP:
                self.where[group] = list(range(n))
                continue
            positions: list[int | None] = []
            for key in per_entity:
                if key is None:
                    positions.append(None)
                    continue
                hashed = state_key(usecase, group, key)
                if hashed not in slots:
                    slots[hashed] = n + len(slots)
                    self.redis_keys.append(hashed)
                positions.append(slots[hashed])
            self.where[group] = positions
        windows = window_columns(partitions) if group_keys else []
        self.args: list[Any] = [n, _probe(feature_names), *windows]
        self.action = f"reading {n} entities of {usecase!r}"


class RedisFeatureStore(FeatureStore):
    """Features in Redis: reads time out after ``read_timeout_s``, writes (long scripts) after ``write_timeout_s``."""

    def __init__(
        self,
        url: str,
        *,
        read_timeout_s: float = 0.05,
        write_timeout_s: float = 30.0,
        connect_timeout_s: float = 1.0,
        retries: int = 1,
    ) -> None:
        self._url = url
        self._masked = mask_url(url)
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._retries = retries
        with self._translated("connecting", connect_timeout_s):
            self._reader = self._client(read_timeout_s)
        self._writer: redis.Redis | None = None
        self._thread = threading.local()  # each reading thread's own connection (`_thread_reader`)
        self._thread_readers: dict[int, redis.Redis] = {}  # by id: every thread's own, open until it ends
        self._thread_readers_lock = threading.Lock()
        self._writer_lock = threading.Lock()  # writes may come from several threads (materialize's batches)
        self._times: dict[bytes, datetime] = {}
        # Per asked names, per record names line: each asked feature's position in the record (None: the same).
        self._plans: dict[tuple[str, ...], dict[bytes, tuple[int, ...] | None]] = {}
        self._async: tuple[asyncio.AbstractEventLoop, AsyncRedis] | None = None  # `aopen`'s loop and its client

    @classmethod
    def from_settings(cls, settings: Settings, url: str) -> RedisFeatureStore:
        """A store at `url` with the timeouts and retries of `settings`."""
        return cls(
            url,
            read_timeout_s=settings.redis_timeout_s,
            write_timeout_s=settings.redis_write_timeout_s,
            connect_timeout_s=settings.redis_connect_timeout_s,
            retries=settings.redis_retries,
        )

    def _client(self, timeout_s: float, *, single: bool = False) -> redis.Redis:
        # A bad URL raises ValueError from redis-py; connections open lazily, on the first command (`single`: at
        # once, one connection held by the client).
        try:
            return redis.Redis.from_url(
                self._url,
                socket_timeout=timeout_s,
                socket_connect_timeout=self._connect_timeout_s,
                health_check_interval=30,
                retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), self._retries),
                single_connection_client=single,
            )
        except ValueError as exc:
            raise FeatureStoreError(
                f"feature-store URL {self._masked} is not a Redis URL: {exc}",
                fix="use redis://[:password@]host:port/db, rediss://… or unix:///path/redis.sock (MIGRATE_REDIS_URL)",
            ) from exc

    @property
    def url(self) -> str:
        return self._masked

    @property
    def client(self) -> redis.Redis:
        """The read client (for diagnostics and tests)."""
        return self._reader

    @contextmanager
    def _translated(self, action: str, timeout_s: float) -> Iterator[None]:
        try:
            yield
        except redis.AuthenticationError as exc:
            raise FeatureStoreUnavailableError(
                f"feature store at {self._masked} refused the credentials while {action}: {exc}",
                fix="correct the user and password in MIGRATE_REDIS_URL",
            ) from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise FeatureStoreUnavailableError(
                f"feature store at {self._masked} did not answer while {action} (timeout {timeout_s} s): {exc}",
                fix="start that Redis or correct MIGRATE_REDIS_URL (unset it to use the embedded Redis); "
                "if it is only slow, raise MIGRATE_REDIS_TIMEOUT_S / MIGRATE_REDIS_WRITE_TIMEOUT_S",
            ) from exc
        except redis.RedisError as exc:
            raise FeatureStoreError(
                f"feature store at {self._masked} failed while {action}: {exc}",
                fix="read the Redis error above; check the server's memory (maxmemory) and its log",
            ) from exc

    def ping(self) -> None:
        with self._translated("answering PING", self._read_timeout_s):
            self._reader.ping()

    def _thread_reader(self) -> redis.Redis:
        """This thread's own connection for the reads (a serving worker reads on one batching thread per use case).

        Through the shared pool, each command took a connection out (a lock and a poll of the socket for stray
        data) and gave it back: ~30 µs of a ~85 µs round trip on the bench's machine (docs/serving.md).
        """
        owned: _ThreadReader | None = getattr(self._thread, "reader", None)
        if owned is not None and owned.pid == os.getpid():  # a forked child opens its own
            return owned.client
        reader = self._client(self._read_timeout_s, single=True)
        owned = _ThreadReader(os.getpid(), reader)
        with self._thread_readers_lock:
            self._thread_readers[id(reader)] = reader
        # When the thread ends, its thread-local holder goes and the connection is closed with it: threads that
        # come and go (a thread pool's idle workers exit) would otherwise each leave one open until `close`.
        weakref.finalize(owned, _close_thread_reader, reader, self._thread_readers, self._thread_readers_lock)
        self._thread.reader = owned
        return reader

    def close(self) -> None:
        self._reader.close()
        with self._thread_readers_lock:
            readers = list(self._thread_readers.values())
            self._thread_readers.clear()
        for reader in readers:
            reader.close()
        if self._writer is not None:
            self._writer.close()

    # --- reads: the serving hot path ---------------------------------------------------------------------------

    def _time(self, raw: bytes) -> datetime:
        # The features of a read share a handful of event times: decode each distinct one once per process.
        if len(self._times) > 65_536:
            self._times.clear()
        moment = self._times[raw] = decode_time(raw)
        return moment

    def read(
        self, usecase: str, keys: Sequence[EntityKey], feature_names: Sequence[str]
    ) -> list[dict[str, FeatureValue] | None]:
        if not keys:
            return []
        redis_keys = _record_and_hash_keys(usecase, keys)
        action = f"reading {len(keys)} entities of {usecase!r}"
        items = self._call(READ_SHA, READ_SCRIPT, action, redis_keys, [_probe(feature_names)])
        return self._rows(usecase, cast(list[bytes], items), feature_names)

    def read_online(
        self,
        usecase: str,
        keys: Sequence[EntityKey],
        feature_names: Sequence[str],
        group_keys: Mapping[str, Sequence[EntityKey | None]],
        partitions: int,
    ) -> OnlineRead:
        if not keys:
            return OnlineRead([], {group: [] for group in group_keys})
        call = _OnlineCall(usecase, keys, group_keys, feature_names, partitions)
        payload = self._call(ONLINE_READ_SHA, ONLINE_READ_SCRIPT, call.action, call.redis_keys, call.args)
        return self._online_read(call, cast(list[bytes], payload))

    async def aopen(self) -> None:
        self._async = (asyncio.get_running_loop(), self._async_client())

    async def read_online_async(
        self,
        usecase: str,
        keys: Sequence[EntityKey],
        feature_names: Sequence[str],
        group_keys: Mapping[str, Sequence[EntityKey | None]],
        partitions: int,
    ) -> OnlineRead:
        opened = self._async
        if opened is None or opened[0] is not asyncio.get_running_loop():  # not opened on this loop: a thread
            return await super().read_online_async(usecase, keys, feature_names, group_keys, partitions)
        if not keys:
            return OnlineRead([], {group: [] for group in group_keys})
        call = _OnlineCall(usecase, keys, group_keys, feature_names, partitions)
        client = opened[1]
        with self._translated(call.action, self._read_timeout_s):
            try:
                payload = await client.evalsha(ONLINE_READ_SHA, len(call.redis_keys), *call.redis_keys, *call.args)
            except redis.exceptions.NoScriptError:
                await client.script_load(ONLINE_READ_SCRIPT)  # a new or restarted server: load once, then retry
                payload = await client.evalsha(ONLINE_READ_SHA, len(call.redis_keys), *call.redis_keys, *call.args)
        return self._online_read(call, cast(list[bytes], payload))

    async def aclose(self) -> None:
        opened, self._async = self._async, None
        if opened is not None:
            await opened[1].aclose()

    def _async_client(self) -> AsyncRedis:
        # The read client's settings, and one connection (opened on the loop by the first command), as each
        # reading thread holds one: the pool's checkout cost ~10 µs of a ~105 µs call (docs/serving.md, item 19).
        return AsyncRedis.from_url(
            self._url,
            socket_timeout=self._read_timeout_s,
            socket_connect_timeout=self._connect_timeout_s,
            health_check_interval=30,
            retry=AsyncRetry(ExponentialBackoff(cap=0.05, base=0.005), self._retries),
            single_connection_client=True,
        )

    def _online_read(self, call: _OnlineCall, payload: list[bytes]) -> OnlineRead:
        """The script's answer as an `OnlineRead`: the entities' batch rows, then each group's decoded partials."""
        n = call.entities
        decoded: dict[int, list[Any]] = {}

        def partials(position: int | None) -> list[Any]:
            if position is None:
                return []
            found = decoded.get(position)
            if found is None:
                raw = payload[n + position]
                found = decoded[position] = [orjson.loads(part) for part in raw.split(b"\n")] if raw else []
            return found

        states = {group: [partials(position) for position in positions] for group, positions in call.where.items()}
        return OnlineRead(self._online_rows(call.usecase, payload[:n], call.feature_names), states)

    def _call(self, sha: str, script: str, action: str, keys: list[str], args: Sequence[Any]) -> Any:
        with self._translated(action, self._read_timeout_s):
            reader = self._thread_reader()
            try:
                return reader.evalsha(sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                reader.script_load(script)  # a new or restarted server: load once, then retry
                return reader.evalsha(sha, len(keys), *keys, *args)

    def _online_rows(self, usecase: str, items: Sequence[bytes], feature_names: Sequence[str]) -> list[BatchRow | None]:
        """Each entity's requested features as a `BatchRow` aligned with `feature_names`: the one parser of the batch
        record (`_rows` builds `read()`'s dicts from it)."""
        times = self._times
        decode = self._time
        new = tuple.__new__
        asked = tuple(feature_names)
        width = len(asked)
        plans = self._plans.get(asked)
        if plans is None:
            if len(self._plans) > 64:
                self._plans.clear()
            plans = self._plans[asked] = {}
        together = _rows_together(items, width, plans, times, decode)
        if together is not None:
            return together
        out: list[BatchRow | None] = []
        for raw in items:
            if len(raw) < 2:  # no record: "" nothing stored, "!" window states only, "?" the previous layout
                if raw == b"?":
                    raise _old_layout_error(self._masked, usecase)
                out.append(None)
                continue
            head, names, values_line, *times_line = raw.split(b"\n")
            if names in plans:
                plan = plans[names]
            else:
                if len(plans) > 1024:
                    plans.clear()
                positions = {n.decode(): i for i, n in enumerate(names.split(b","))}
                order = tuple(positions.get(name, -1) for name in asked)  # -1: the record lacks that feature
                # None: the record holds exactly the asked features, in their order (the materialized case).
                plan = plans[names] = None if order == tuple(range(len(positions))) else order
            values = values_line.split(b",")
            if plan is None:
                row_values = [float(v) if v else None for v in values]
                if times_line:
                    row_times: list[datetime | None] = [times.get(s) or decode(s) for s in times_line[0].split(b",")]
                else:
                    shared = head[: head.index(b",")]
                    row_times = [times.get(shared) or decode(shared)] * width
            else:
                row_values = [(float(values[i]) if values[i] else None) if i >= 0 else None for i in plan]
                if times_line:
                    stamps = times_line[0].split(b",")
                    row_times = [(times.get(stamps[i]) or decode(stamps[i])) if i >= 0 else None for i in plan]
                else:
                    shared = head[: head.index(b",")]
                    at = times.get(shared) or decode(shared)
                    row_times = [at if i >= 0 else None for i in plan]
            out.append(new(BatchRow, (row_values, row_times)))
        return out

    def _rows(
        self, usecase: str, items: Sequence[bytes], feature_names: Sequence[str]
    ) -> list[dict[str, FeatureValue] | None]:
        """Each entity's requested features by name, from `_online_rows`' parse: a feature the record does not hold
        (no event time) is left out; an entity with window states only ("!") reads as {}, no record at all as None."""
        new = tuple.__new__
        out: list[dict[str, FeatureValue] | None] = []
        for raw, row in zip(items, self._online_rows(usecase, items, feature_names), strict=True):
            if row is None:
                out.append({} if raw == b"!" else None)
                continue
            out.append(
                {
                    name: new(FeatureValue, (value, at))
                    for name, value, at in zip(feature_names, row.values, row.times, strict=True)
                    if at is not None
                }
            )
        return out

    # --- writes -------------------------------------------------------------------------------------------------

    def write_features(
        self,
        usecase: str,
        key_names: Sequence[str],
        rows: pa.Table,
        feature_names: Sequence[str],
        event_times: str | Mapping[str, str],
        *,
        on_correction: OnCorrection = "reject",
    ) -> WriteReport:
        if on_correction not in ("reject", "apply"):
            raise ValueError(f"on_correction must be 'reject' or 'apply', not {on_correction!r}")
        from online.features import redis_wire  # noqa: PLC0415 - start-up cost: pyarrow only on the write path

        try:
            check_feature_names(feature_names)
        except ValueError as exc:
            raise FeatureStoreError(str(exc), fix="rename the features (letters, digits and '_' are safe)") from exc
        encoded = encode_columns(rows, key_names, feature_names, event_times)
        writer = self._write_client()
        report = WriteReport()
        left: dict[int, bytes] = {}  # entities the script left to this side: row → the record it found
        with self._translated(f"writing features of {usecase!r}", self._write_timeout_s):
            try:
                calls = redis_wire.script_calls(usecase, encoded, ENTITIES_PER_SCRIPT)
            except TypeError as exc:
                raise FeatureStoreError(
                    f"an entity key of {usecase!r} is neither int nor str: {exc}",
                    fix="cast the key columns to the types the use case declares (int or str)",
                ) from exc
            for call, result in redis_wire.run_calls(writer, calls, SCRIPTS_PER_ROUND_TRIP):
                written, unchanged, stale = (int(x) for x in result[:3])
                report = report + WriteReport(call.stop - call.start, written, unchanged, stale)
                for e in range(3, len(result), 2):
                    left[call.start + int(result[e])] = result[e + 1]
            if left:
                report = report + self._decide(writer, usecase, encoded, left, on_correction)
        if report.rejected and on_correction == "reject":
            raise correction_error(usecase, self._masked, report)
        return report

    def _decide(
        self,
        writer: redis.Redis,
        usecase: str,
        encoded: EncodedColumns,
        left: dict[int, bytes],
        on_correction: OnCorrection,
    ) -> WriteReport:
        """The entities the write script left undecided, decided feature by feature and written by compare and
        set; an entity whose record changed meanwhile is read and decided again."""
        keys = {row: batch_key(usecase, encoded.key(row)) for row in left}
        pending: dict[int, bytes] = dict(left)
        report = WriteReport()
        for _ in range(CAS_TRIES):
            decided = {row: _merge(encoded, row, stored, on_correction) for row, stored in pending.items()}
            writes = [(row, merged) for row, (_, merged) in decided.items() if merged is not None]
            applied = self._compare_and_set(writer, [(keys[row], pending[row], merged) for row, merged in writes])
            changed = [row for (row, _), ok in zip(writes, applied, strict=True) if not ok]
            for row, (counts, _) in decided.items():
                if row not in changed:
                    report = report + counts
            if not changed:
                return report
            fresh = cast(list[bytes | None], writer.mget([keys[row] for row in changed]))
            pending = {row: stored or b"" for row, stored in zip(changed, fresh, strict=True)}
        raise FeatureStoreError(
            f"{len(pending)} entities of {usecase!r} changed under this write {CAS_TRIES} times in a row (another "
            f"writer keeps writing them), e.g. {encoded.key(next(iter(pending)))}",
            fix="run one materialization of a use case at a time (the DAG's max_active_runs=1), then write again",
        )

    def _write_client(self) -> redis.Redis:
        """The client of writes (their own timeout), made on first use; writes may come from several threads."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = self._client(self._write_timeout_s)
            return self._writer

    def prepare(self, usecase: str) -> None:
        self.upgrade_layout(usecase)

    def upgrade_layout(self, usecase: str) -> int:
        """Turn `usecase`'s entity hashes of the previous layout into records; how many hashes held such fields.

        Materialization calls it before writing, so a store upgraded from 0.x keeps every stored feature, with its
        event time, and the write's decisions (stale, unchanged, corrections) are made against them as before.
        Done once per use case: a marker key (``mig:<usecase>#layout``) records that it ran. It scans the whole
        keyspace once (SCAN; ~1 µs per key on the server).
        """
        marker = f"{PREFIX}:{usecase}#layout"
        writer = self._write_client()
        with self._translated(f"upgrading the feature layout of {usecase!r}", self._write_timeout_s):
            if writer.get(marker) is not None:
                return 0
            script = writer.register_script(UPGRADE_SCRIPT)
            moved, batch = 0, []
            for key in writer.scan_iter(match=f"{PREFIX}:{usecase}:*", count=10_000, _type="hash"):
                _, entity = key.decode().split(f"{PREFIX}:{usecase}:", 1)
                batch += [key, f"{PREFIX}:{usecase}#b:{entity}"]
                if len(batch) == 2 * ENTITIES_PER_SCRIPT:
                    moved += int(script(keys=batch))
                    batch = []
            if batch:
                moved += int(script(keys=batch))
            writer.set(marker, "1")
        if moved:
            log.info("moved the batch features of %d entities of %r into records (the 1.0 layout)", moved, usecase)
        return moved

    def _compare_and_set(self, writer: redis.Redis, writes: Sequence[tuple[str, bytes, bytes]]) -> list[bool]:
        """Each (key, record read, record to write) written only if the key still holds the record read."""
        applied: list[bool] = []
        for start in range(0, len(writes), ENTITIES_PER_SCRIPT):
            chunk = writes[start : start + ENTITIES_PER_SCRIPT]
            keys = [key for key, _, _ in chunk]
            args = [part for _, seen, merged in chunk for part in (seen, merged)]
            try:
                answer = writer.evalsha(CAS_SHA, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                writer.script_load(CAS_SCRIPT)
                answer = writer.evalsha(CAS_SHA, len(keys), *keys, *args)
            applied += [bool(int(x)) for x in answer]
        return applied


def _old_layout_error(masked_url: str, usecase: str) -> FeatureStoreError:
    """A read found `usecase`'s batch features in the previous layout (the read scripts' ``?`` marker)."""
    return FeatureStoreError(
        f"the feature store at {masked_url} holds batch features of {usecase!r} in the layout of "
        "migrate 0.x (fields t:<feature> of the entity hash), which this version does not read",
        fix=f"materialize them again: `migrate materialize {usecase}` (or its DAG) first moves the "
        "stored features into the current layout",
    )


def _probe(feature_names: Sequence[str]) -> str:
    """The previous layout's field a read looks for when an entity has no record (the first feature's time)."""
    return OLD_LAYOUT_FIELD.format(feature_names[0] if feature_names else "")


def _merge(
    encoded: EncodedColumns, row: int, stored: bytes, on_correction: OnCorrection
) -> tuple[WriteReport, bytes | None]:
    """One entity's write decided feature by feature (online/features/store.py's table) against its `stored`
    record (b"" for none): the counts, and the record to write (None: nothing changes)."""
    names, values, times = parse_record(stored) if stored else ([], [], [])
    at = {name: i for i, name in enumerate(names)}
    written = unchanged = stale = corrected = rejected = 0
    examples: list[Rejection] = []
    for j, feature in enumerate(encoded.features):
        value = str(encoded.values[j][row].as_py()).encode()
        moment = str(encoded.times[j][row].as_py()).encode()
        name = feature.encode()
        i = at.get(name)
        if i is None:
            at[name] = len(names)
            names.append(name)
            values.append(value)
            times.append(moment)
            written += 1
            continue
        old_time, new_time = int(times[i]), int(moment)
        if old_time > new_time:
            stale += 1
        elif old_time < new_time:
            values[i], times[i] = value, moment
            written += 1
        elif values[i] == value:
            unchanged += 1
        elif on_correction == "apply":
            values[i] = value
            corrected += 1
        else:
            rejected += 1
            examples.append(
                Rejection(encoded.key(row), feature, decode_time(moment), decode_value(values[i]), decode_value(value))
            )
    counts = WriteReport(0, written, unchanged, stale, corrected, rejected, tuple(examples))
    # The incoming features first, in their order, then any other stored ones: the next write of the same
    # features finds the same names line and is decided by the script alone. A record in another order (moved
    # from the previous layout, or written with other features first) is rewritten in this one once, uncounted.
    incoming = [feature.encode() for feature in encoded.features]
    others = set(incoming)
    order = [at[name] for name in incoming] + [i for i, name in enumerate(names) if name not in others]
    if not (written or corrected) and order == list(range(len(names))):
        return counts, None
    return counts, record([names[i] for i in order], [values[i] for i in order], [times[i] for i in order])


def open_feature_store(settings: Settings, url: str | None = None) -> RedisFeatureStore:
    """The Redis feature store at `url` (default: ``MIGRATE_REDIS_URL``), with the settings' timeouts.

    Without either, call `migrate.devservices.redis_server.resolve_redis_url` first: it starts the embedded Redis.
    """
    if url is None:
        if settings.redis_url is None:
            raise FeatureStoreError(
                "no feature-store URL: MIGRATE_REDIS_URL is unset",
                fix="set MIGRATE_REDIS_URL, or run through the CLI (`migrate serve`, `migrate stream <usecase>`): it "
                "starts one",
            )
        url = settings.redis_url.get_secret_value()
    return RedisFeatureStore.from_settings(settings, url)
