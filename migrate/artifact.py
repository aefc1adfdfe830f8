"""Versioned model artifacts: skops files (no code runs on load) whose sha256 is recorded and checked."""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from migrate.errors import ArtifactError
from migrate.usecase import UseCase

MANIFEST = "manifest.json"
Role = Literal["batch", "online"]
# The batch model reads batch features only; the online model adds the real-time ones. Each has its manifest.
_MANIFESTS: dict[Role, str] = {"batch": MANIFEST, "online": "manifest.online.json"}
# Types skops may rebuild beyond its own defaults; anything else in a file is refused.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.")


class ArtifactInfo(BaseModel):
    """What the manifest records of one trained model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usecase: str
    version: str
    number: int
    file: str
    sha256: str
    trained_at: datetime
    trained_as_of: datetime
    feature_names: tuple[str, ...]
    label_kind: str
    metrics: dict[str, float]
    role: Role = "batch"
    # The model's trees compiled for NumPy (`migrate.scoring.forest_file`), when it has them: served and explained
    # without importing scikit-learn (`migrate.scoring.model_from_artifact`). Older entries have none.
    forest_file: str | None = None
    forest_sha256: str | None = None


def sha256_of(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ArtifactStore:
    """Model artifacts of every use case under one directory (``<state_dir>/artifacts``)."""

    def __init__(self, root: Path, project_dir: Path) -> None:
        self.root = root
        self.project_dir = project_dir

    def _manifest_path(self, usecase: str, role: Role = "batch") -> Path:
        return self.root / usecase / _MANIFESTS[role]

    def list(self, usecase: str, role: Role = "batch") -> list[ArtifactInfo]:
        """Every recorded version of the use case's `role` model, oldest first."""
        path = self._manifest_path(usecase, role)
        if not path.exists():
            return []
        try:
            entries = orjson.loads(path.read_bytes())
            return [ArtifactInfo.model_validate(entry) for entry in entries]
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise ArtifactError(
                f"artifact manifest {path} is corrupt: {exc}",
                fix=f"restore it or retrain with `migrate train {usecase}`",
            ) from None

    def save(
        self,
        usecase: UseCase,
        estimator: Any,
        *,
        trained_as_of: datetime,
        metrics: dict[str, float],
        role: Role = "batch",
        compiled: bytes | None = None,
    ) -> ArtifactInfo:
        """Write a new version of the use case's `role` model and record its sha256 in that role's manifest; with
        `compiled` (its forest file, `migrate.scoring.forest_file`), that file beside it and its sha256 too."""
        import skops.io as sio  # noqa: PLC0415 - start-up cost: skops loads only when a model is read or written

        data = sio.dumps(estimator)
        digest = sha256_of(data)
        existing = self.list(usecase.name, role)
        number = (existing[-1].number + 1) if existing else 1
        version = f"v{number}-{digest[:12]}" if role == "batch" else f"online-v{number}-{digest[:12]}"
        file = f"{version}.skops"
        forest_file = None if compiled is None else f"{version}.forest.npz"
        if compiled is not None and forest_file is not None:
            _write_atomic(self.root / usecase.name / forest_file, compiled)
        _write_atomic(self.root / usecase.name / file, data)
        info = ArtifactInfo(
            usecase=usecase.name,
            version=version,
            number=number,
            file=file,
            sha256=digest,
            trained_at=datetime.now(UTC),
            trained_as_of=trained_as_of,
            feature_names=tuple(usecase.feature_names if role == "batch" else usecase.online_feature_names),
            label_kind=usecase.label.kind,
            metrics=metrics,
            role=role,
            forest_file=forest_file,
            forest_sha256=None if compiled is None else sha256_of(compiled),
        )
        entries = [e.model_dump(mode="json") for e in [*existing, info]]
        _write_atomic(self._manifest_path(usecase.name, role), orjson.dumps(entries, option=orjson.OPT_INDENT_2))
        return info

    def resolve(self, usecase: UseCase, role: Role = "batch") -> tuple[Path, str, ArtifactInfo | None]:
        """The artifact to serve: the YAML's pinned one, else the latest trained; with its expected sha256.

        The online role has no pin: its latest trained version, else (none trained yet) the batch model's.
        """
        if role == "online":
            online = self.list(usecase.name, "online")
            if online:
                return self.root / usecase.name / online[-1].file, online[-1].sha256, online[-1]
        if usecase.model.artifact is not None:
            assert usecase.model.sha256 is not None  # the schema requires it with a pinned artifact
            path = Path(usecase.model.artifact)
            if not path.is_absolute():
                path = self.project_dir / path
            pinned = next((e for e in self.list(usecase.name) if e.sha256 == usecase.model.sha256), None)
            return path, usecase.model.sha256, pinned
        entries = self.list(usecase.name)
        if not entries:
            raise ArtifactError(
                f"use case {usecase.name!r} has no trained model in {self.root / usecase.name}",
                fix=f"run `migrate train {usecase.name}`",
            )
        latest = entries[-1]
        return self.root / usecase.name / latest.file, latest.sha256, latest

    def load_bytes(self, path: Path, expected_sha256: str, usecase: str) -> bytes:
        """Read an artifact and refuse it unless its sha256 is the recorded one."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(
                f"model artifact {path} of use case {usecase!r} does not exist",
                fix=f"run `migrate train {usecase}` or fix model.artifact in its YAML",
            ) from None
        actual = sha256_of(data)
        if actual != expected_sha256:
            raise ArtifactError(
                f"model artifact {path} of use case {usecase!r} has sha256 {actual}, expected {expected_sha256}; "
                "refusing to load it",
                fix=f"retrain with `migrate train {usecase}`, or pin the right file and hash in the YAML",
            )
        return data


def deserialize(data: bytes, source: Path) -> Any:
    """Rebuild an estimator from verified skops bytes, refusing types outside scikit-learn and NumPy."""
    import skops.io as sio  # noqa: PLC0415 - start-up cost: skops loads only when a model is read or written

    untrusted = sio.get_untrusted_types(data=data)
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise ArtifactError(
            f"model artifact {source} contains types outside scikit-learn/NumPy: {foreign}",
            fix="train the model with scikit-learn estimators only",
        )
    return sio.loads(data, trusted=untrusted)
