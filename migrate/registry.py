"""The use-case registry: every ``usecases/<name>.yaml``, loaded and validated."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from migrate.errors import UnknownUseCaseError, UseCaseError
from migrate.usecase import UseCase

_FIXES = {
    "extra_forbidden": "remove it or correct its spelling; allowed here: {allowed}",
    "missing": "add this field; see usecases/item_availability.yaml for an example",
    "string_pattern_mismatch": "use lower-case letters, digits and '_' and start with a letter",
    "literal_error": "use one of the allowed values",
}

_FIELD_FIXES = {
    "schedule": "use a five-field cron expression (minute hour day month weekday), e.g. '0 2 * * *'",
    "sha256": "use the 64 lower-case hex digits that `sha256sum <artifact>` prints",
    "window": "use a duration such as '30m', '2h' or '1d'",
    "available_after": "use a duration such as '30m', '2h' or '1d'",
    "trainer": "use 'package.module:function', e.g. migrate.examples.item_availability.training:train",
}


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc).replace(".[", "[") or "(top)"


def _allowed_fields(loc: tuple[int | str, ...]) -> str:
    model: Any = UseCase
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return "see the schema in migrate/usecase.py"
        annotation = field.annotation
        args = getattr(annotation, "__args__", None) or (annotation,)
        model = next((a for a in args if hasattr(a, "model_fields")), None)
        if model is None:
            return "see the schema in migrate/usecase.py"
    return ", ".join(model.model_fields)


def _as_usecase_error(file: Path, error: ValidationError) -> UseCaseError:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    kind = first["type"]
    message = first["msg"].removeprefix("Value error, ")
    fix = _FIELD_FIXES.get(str(loc[-1]) if loc else "", _FIXES.get(kind, "correct the value as the message says"))
    fix = fix.format(allowed=_allowed_fields(loc))
    if kind == "extra_forbidden":
        message = "unknown field"
    more = len(error.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''} in this file)"
    return UseCaseError(str(file), _field_path(loc), message, fix=fix)


def load_usecase(file: Path) -> UseCase:
    """Read and validate one use-case file; raise `UseCaseError` naming the file, field and fix."""
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UseCaseError(
            str(file), "(file)", "does not exist", fix="check the path or run `migrate usecases list`"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise UseCaseError(str(file), where, f"not valid YAML: {problem}", fix="fix the YAML syntax there") from None
    if not isinstance(raw, dict):
        raise UseCaseError(
            str(file), "(top)", "is not a mapping of fields", fix="start from usecases/item_availability.yaml"
        )
    try:
        usecase = UseCase.model_validate(raw)
    except ValidationError as exc:
        raise _as_usecase_error(file, exc) from None
    if usecase.name != file.stem:
        raise UseCaseError(
            str(file),
            "name",
            f"is {usecase.name!r} but the file is {file.name!r}",
            fix=f"rename the file to {usecase.name}.yaml or set name: {file.stem}",
        )
    return usecase


class Registry:
    """All use cases of one ``usecases/`` directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def files(self) -> list[Path]:
        """Every use-case file, sorted by name."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.yaml"))

    def load_all(self) -> list[UseCase]:
        """Load every use case; the first invalid file raises."""
        return [load_usecase(f) for f in self.files()]

    def validate_all(self) -> dict[Path, UseCase | UseCaseError]:
        """Validate every file: the use case, or the error that names what to fix."""
        results: dict[Path, UseCase | UseCaseError] = {}
        for file in self.files():
            try:
                results[file] = load_usecase(file)
            except UseCaseError as exc:
                results[file] = exc
        return results

    def valid(self) -> list[UseCase]:
        """The valid use cases; each invalid file is logged as an error (for DAG files: one team's bad YAML must
        not hide every other use case's DAGs; `migrate usecases validate` fails on it)."""

        usecases = []
        for file, outcome in self.validate_all().items():
            if isinstance(outcome, UseCase):
                usecases.append(outcome)
            else:
                logging.getLogger(__name__).error("use case %s skipped: %s", file, outcome)
        return usecases

    def get(self, name: str) -> UseCase:
        """The use case called `name`."""
        file = self.directory / f"{name}.yaml"
        if not file.exists():
            known = ", ".join(f.stem for f in self.files()) or "none"
            raise UnknownUseCaseError(
                f"no use case {name!r} in {self.directory}", fix=f"use one of: {known}; or add {file}"
            )
        return load_usecase(file)
