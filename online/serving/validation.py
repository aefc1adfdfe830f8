"""Checks of a prediction request against its use case, as 422 errors that name the field (FastAPI's format)."""

from __future__ import annotations

import math
from typing import Any

from migrate.request_rules import INT64_MAX, INT64_MESSAGE, INT64_MIN, context_errors
from migrate.usecase import UseCase

__all__ = ["INT64_MAX", "INT64_MIN", "context_errors", "context_values", "integral_keys", "key_errors"]


def integral_keys(usecase: UseCase, entities: list[dict[str, int | str | float]]) -> None:
    """Integer key columns given as integral numbers (``3.0``, which JSON Schema's integer includes) become ints,
    in place; other floats stay for `key_errors` to refuse."""
    ints = [key.name for key in usecase.entity.keys if key.type == "int"]
    for entity in entities:
        for name in ints:
            value = entity.get(name)
            if isinstance(value, float) and value.is_integer():
                entity[name] = int(value)


def key_errors(usecase: UseCase, entities: list[dict[str, int | str | float]]) -> list[dict[str, Any]]:
    """Each entity has exactly the use case's key columns, each of its type."""
    errors: list[dict[str, Any]] = []
    expected = {key.name: key.type for key in usecase.entity.keys}
    for i, entity in enumerate(entities):
        for name in entity.keys() - expected.keys():
            errors.append(
                {
                    "loc": ("body", "entities", i, name),
                    "type": "extra_forbidden",
                    "msg": f"unknown key column; {usecase.name} is keyed by {list(expected)}",
                    "input": name,
                }
            )
        for name, kind in expected.items():
            value = entity.get(name)
            if value is None:
                errors.append(
                    {"loc": ("body", "entities", i, name), "type": "missing", "msg": "Field required", "input": None}
                )
            elif not (
                isinstance(value, str) if kind == "str" else isinstance(value, int) and not isinstance(value, bool)
            ):
                errors.append(
                    {
                        "loc": ("body", "entities", i, name),
                        "type": f"{kind}_type",
                        "msg": f"Input should be {'an integer' if kind == 'int' else 'a string'}",
                        "input": value,
                    }
                )
            elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                loc = ("body", "entities", i, name)
                errors.append({"loc": loc, "type": "int64", "msg": INT64_MESSAGE, "input": str(value)})
    return errors


def context_values(usecase: UseCase, context: dict[str, Any]) -> list[float]:
    """The numeric context inputs of the model, in declared order (missing optional ones as NaN)."""
    out: list[float] = []
    for item in usecase.context:
        if item.is_input:
            value = context.get(item.name)
            out.append(math.nan if value is None else float(value))
    return out
