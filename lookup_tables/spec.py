"""What a lookup table looks like: its view name, its key columns and how many old versions it keeps."""

from __future__ import annotations

import hashlib
import operator
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal, SupportsIndex, cast

from lookup_tables.records import Key
from migrate.errors import LookupStoreError

if TYPE_CHECKING:
    from migrate.settings import Settings
    from migrate.usecase import UseCase

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# PostgreSQL silently truncates longer identifiers, which would make two versions' tables collide.
_MAX_IDENTIFIER = 63


def check_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is a safe SQL identifier; raise ``ValueError`` naming ``what`` otherwise."""
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} is not an identifier like 'item_availability' (a-z, 0-9, _)")
    return value


@dataclass(frozen=True)
class KeyColumn:
    """One column of the lookup key: ``int`` is stored as BIGINT, ``str`` as TEXT."""

    name: str
    type: Literal["int", "str"]

    def __post_init__(self) -> None:
        check_identifier(self.name, "key column")
        if self.type not in ("int", "str"):
            raise ValueError(f"key column {self.name!r} has type {self.type!r}; use 'int' or 'str'")


_RESERVED = frozenset({"prediction", "features_as_of", "chunk", "model_version", "scored_at", "run_id", "version"})


@dataclass(frozen=True)
class TableSpec:
    """A use case's lookup table: applications read the view ``name``; versions live in ``name__v<N>``."""

    usecase: str
    name: str
    keys: tuple[KeyColumn, ...]
    keep_versions: int

    def __post_init__(self) -> None:
        check_identifier(self.usecase, "use case")
        check_identifier(self.name, "lookup table")
        if not self.keys:
            raise ValueError(f"lookup table {self.name!r} needs at least one key column")
        names = [key.name for key in self.keys]
        clashes = sorted(set(names) & _RESERVED)
        if clashes or len(set(names)) != len(names):
            raise ValueError(f"lookup table {self.name!r}: key columns {names} repeat or use reserved names {clashes}")
        if self.keep_versions < 1:
            raise ValueError(f"lookup table {self.name!r}: keep_versions must be >= 1, not {self.keep_versions}")

    @classmethod
    def for_usecase(cls, usecase: UseCase, settings: Settings) -> TableSpec:
        """The lookup table a use-case YAML declares, keeping ``settings.keep_versions`` unless it overrides it."""
        table = usecase.lookup_table
        keep = settings.keep_versions if table.keep_versions is None else table.keep_versions
        keys = tuple(KeyColumn(key.name, key.type) for key in usecase.entity.keys)
        return cls(usecase=usecase.name, name=table.name, keys=keys, keep_versions=keep)

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)

    @cached_property
    def _key_types(self) -> tuple[type, ...]:
        return tuple(int if key.type == "int" else str for key in self.keys)

    def key_of(self, key: Key) -> Key:
        """``key`` with plain ``int``/``str`` parts (numpy integers accepted), checked against the key columns."""
        types = self._key_types
        if type(key) is tuple and tuple(map(type, key)) == types:
            return key  # the common case, checked without a loop over the parts
        example = tuple(k.type for k in self.keys)
        if not isinstance(key, tuple) or len(key) != len(types):
            raise LookupStoreError(
                f"key {key!r} does not match the keys {self.key_names} of {self.name} (use case {self.usecase})",
                fix=f"pass a tuple of {len(types)} values of types {example}",
            )
        try:
            return tuple(_part(part, kind) for part, kind in zip(key, types, strict=True))
        except TypeError as exc:
            raise LookupStoreError(f"key {key!r} of {self.name}: {exc}", fix=f"use values of types {example}") from exc

    def version_table(self, version: int) -> str:
        """The physical table of one version, shortened with a hash when the name would be too long."""
        return _fit(self.name, f"__v{version}")

    def key_index(self, version: int) -> str:
        """The unique index on the key columns of one version's table."""
        return _fit(self.name, f"__v{version}_key")


def _part(value: object, kind: type) -> int | str:
    if kind is int:
        return operator.index(cast(SupportsIndex, value))  # raises TypeError for str, float, None
    if kind is str and isinstance(value, str):
        return value
    raise TypeError(f"{value!r} is not a {kind.__name__}")


def _fit(base: str, suffix: str) -> str:
    if len(base) + len(suffix) <= _MAX_IDENTIFIER:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[: _MAX_IDENTIFIER - len(suffix) - 9]}_{digest}{suffix}"
