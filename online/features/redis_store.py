"""The Redis feature store: one hash per entity, written and read by Lua scripts, one round trip per call.

The key layout is online/features/redis_layout.py's (documented in docs/online_features.md), the scripts
online/features/redis_scripts.py's. A value and its event time are written by the same ``HSET`` inside one
script call, so a reader never sees one without the other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from migrate.errors import FeatureStoreError, FeatureStoreUnavailableError
from migrate.realtime_schema import ENTITY_GROUP
from migrate.settings import Settings
from online.features.redis_layout import PREFIX, entity_key, parse_entity_key, state_key, window_columns
from online.features.redis_scripts import (
    ONLINE_READ_SCRIPT,
    ONLINE_READ_SHA,
    READ_SCRIPT,
    READ_SHA,
)
from online.features.store import (
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

ENTITIES_PER_SCRIPT = 100  # one script call holds the server ~1 ms (8 features): readers wait at most that
SCRIPTS_PER_ROUND_TRIP = 40  # 4,000 entities per round trip


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
        self._writer_lock = threading.Lock()  # writes may come from several threads (materialize's batches)
        self._fields: dict[tuple[str, ...], list[bytes]] = {}
        self._times: dict[bytes, datetime] = {}

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

    def _client(self, timeout_s: float) -> redis.Redis:
        # A bad URL raises ValueError from redis-py; connections open lazily, on the first command.
        try:
            return redis.Redis.from_url(
                self._url,
                socket_timeout=timeout_s,
                socket_connect_timeout=self._connect_timeout_s,
                health_check_interval=30,
                retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), self._retries),
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

    def close(self) -> None:
        self._reader.close()
        if self._writer is not None:
            self._writer.close()

    # --- reads: the serving hot path ---------------------------------------------------------------------------

    def _field_names(self, feature_names: Sequence[str]) -> list[bytes]:
        names = tuple(feature_names)
        fields = self._fields.get(names)
        if fields is None:
            fields = self._fields[names] = [b"_", *[f"{p}:{n}".encode() for n in names for p in ("v", "t")]]
        return fields

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
        fields = self._field_names(feature_names)
        redis_keys = [entity_key(usecase, key) for key in keys]
        payload = self._call(READ_SHA, READ_SCRIPT, f"reading {len(keys)} entities of {usecase!r}", redis_keys, fields)
        return self._rows(cast(bytes, payload), feature_names, len(keys))

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
        fields = self._field_names(feature_names)
        windows = window_columns(partitions) if group_keys else []
        redis_keys = [entity_key(usecase, key) for key in keys]
        slots: dict[str, int] = {}  # group hash → its position among KEYS (entities first, each group key once)
        where: dict[str, list[int | None]] = {}
        for group, per_entity in group_keys.items():
            if group == ENTITY_GROUP:
                where[group] = list(range(len(keys)))
                continue
            positions: list[int | None] = []
            for key in per_entity:
                if key is None:
                    positions.append(None)
                    continue
                hashed = state_key(usecase, group, key)
                if hashed not in slots:
                    slots[hashed] = len(redis_keys)
                    redis_keys.append(hashed)
                positions.append(slots[hashed])
            where[group] = positions
        args = [len(keys), len(fields), len(windows), *fields, *windows]
        payload = cast(
            list[bytes],
            self._call(
                ONLINE_READ_SHA, ONLINE_READ_SCRIPT, f"reading {len(keys)} entities of {usecase!r}", redis_keys, args
            ),
        )
        decoded: dict[int, list[Any]] = {}

        def partials(position: int | None) -> list[Any]:
            if position is None:
                return []
            found = decoded.get(position)
            if found is None:
                raw = payload[position + 1]
                found = decoded[position] = [orjson.loads(part) for part in raw.split(b"\n")] if raw else []
            return found

        states = {group: [partials(position) for position in positions] for group, positions in where.items()}
        return OnlineRead(self._rows(payload[0], feature_names, len(keys)), states)

    def _call(self, sha: str, script: str, action: str, keys: list[str], args: Sequence[Any]) -> Any:
        with self._translated(action, self._read_timeout_s):
            try:
                return self._reader.evalsha(sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                self._reader.script_load(script)  # a new or restarted server: load once, then retry
                return self._reader.evalsha(sha, len(keys), *keys, *args)

    def _rows(self, payload: bytes, feature_names: Sequence[str], count: int) -> list[dict[str, FeatureValue] | None]:
        tokens = payload.split(b",")
        names = tuple(feature_names)
        times = self._times
        decode = self._time
        stride = 1 + 2 * len(names)
        new = tuple.__new__
        out: list[dict[str, FeatureValue] | None] = []
        for base in range(0, stride * count, stride):
            if not tokens[base]:
                out.append(None)
                continue
            stored = zip(names, tokens[base + 1 : base + stride : 2], tokens[base + 2 : base + stride : 2], strict=True)
            out.append(
                {
                    # tuple.__new__: what FeatureValue(...) does, without its Python-level __new__ (800 per
                    # 100-entity read)
                    name: new(FeatureValue, (float(raw) if raw else None, times.get(raw_time) or decode(raw_time)))
                    for name, raw, raw_time in stored
                    if raw_time
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

        encoded = encode_columns(rows, key_names, feature_names, event_times)
        with self._writer_lock:
            if self._writer is None:
                self._writer = self._client(self._write_timeout_s)
            writer = self._writer
        report = WriteReport()
        with self._translated(f"writing features of {usecase!r}", self._write_timeout_s):
            try:
                calls = redis_wire.script_calls(usecase, encoded, on_correction, ENTITIES_PER_SCRIPT)
            except TypeError as exc:
                raise FeatureStoreError(
                    f"an entity key of {usecase!r} is neither int nor str: {exc}",
                    fix="cast the key columns to the types the use case declares (int or str)",
                ) from exc
            for call, result in redis_wire.run_calls(writer, calls, SCRIPTS_PER_ROUND_TRIP):
                report = report + _counts(call.start, call.stop - call.start, result, encoded)
        if report.rejected and on_correction == "reject":
            raise correction_error(usecase, self._masked, report)
        return report


def _counts(start: int, entities: int, result: list[Any], encoded: EncodedColumns) -> WriteReport:
    """One script call's reply as a `WriteReport`: counts, then (entity, feature, stored value) per example."""
    examples = []
    for e in range(5, len(result), 3):
        i, j = start + int(result[e]), int(result[e + 1])
        examples.append(
            Rejection(
                encoded.key(i),
                encoded.features[j],
                decode_time(encoded.times[j][i].as_py()),
                decode_value(result[e + 2]),
                decode_value(encoded.values[j][i].as_py()),
            )
        )
    written, unchanged, stale, corrected, rejected = (int(x) for x in result[:5])
    return WriteReport(entities, written, unchanged, stale, corrected, rejected, tuple(examples))


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
