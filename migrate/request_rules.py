"""What a prediction request's context must be, as 422 errors that name the field (FastAPI's format): the rule
serving applies on arrival (online/serving/validation.py) and training applies to its rows, so a model is not
trained on requests serving refuses (migrate/batch/event_history.py)."""

from __future__ import annotations

import math
from typing import Any

from migrate.usecase import ContextFeature, UseCase

__all__ = ["INT64_MAX", "INT64_MESSAGE", "INT64_MIN", "context_errors"]

# Keys are BIGINT columns and JSON numbers are answered by orjson: integers outside 64 bits fit neither.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT64_MESSAGE = "Input should be a signed 64-bit integer (from -2**63 to 2**63-1)"
_RANGE = "Input should be from -2**63 to 2**63-1 (the signed 64-bit range)"


def _unrepresentable(loc: tuple[Any, ...], value: Any) -> list[dict[str, Any]]:
    """Numbers in `value` (nested in lists and objects) outside what the context takes: NaN and ±infinity
    (``1e400`` parses as infinity), which JSON cannot carry back to the shadow log, and numbers outside the
    signed 64-bit range (an integer there cannot be logged; a float there is refused too, so that the rule is
    one bound that the OpenAPI document can state: -2**63 <= x <= 2**63-1)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [{"loc": loc, "type": "finite_number", "msg": "Input should be a finite number", "input": str(value)}]
    if isinstance(value, int | float) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return [{"loc": loc, "type": "int64", "msg": _RANGE, "input": str(value)}]
    if isinstance(value, dict):
        return [error for key, item in value.items() for error in _unrepresentable((*loc, key), item)]
    if isinstance(value, list):
        return [error for i, item in enumerate(value) for error in _unrepresentable((*loc, i), item)]
    return []


def _error(name: str, kind: str, msg: str, value: Any) -> dict[str, Any]:
    return {"loc": ("body", "context", name), "type": kind, "msg": msg, "input": value}


def _type_error(item: ContextFeature, value: Any) -> tuple[str, str] | None:
    """(error type, message) when `value` is not of the item's type."""
    if item.type == "str":
        return None if isinstance(value, str) else ("string_type", "Input should be a string")
    if item.type == "bool":
        return None if isinstance(value, bool) else ("bool_type", "Input should be a boolean")
    if item.type == "int":  # 3.0 too: JSON Schema's integer includes it
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
        return None if ok else ("int_type", "Input should be an integer")
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else ("float_type", "Input should be a number")


def _context_error(item: ContextFeature, value: Any) -> dict[str, Any] | None:
    wrong = _type_error(item, value)
    if wrong is not None:
        return _error(item.name, *wrong, value)
    if item.type in ("str", "bool"):
        return None
    if item.min is not None and value < item.min:
        return _error(item.name, "greater_than_equal", f"Input should be greater than or equal to {item.min:g}", value)
    if item.max is not None and value > item.max:
        return _error(item.name, "less_than_equal", f"Input should be less than or equal to {item.max:g}", value)
    return None


def context_errors(usecase: UseCase, context: dict[str, Any]) -> list[dict[str, Any]]:
    """Each declared context value is present (when required), of its type and within its bounds; other keys of
    the context are kept for the shadow log, checked only for numbers JSON cannot carry."""
    errors = _unrepresentable(("body", "context"), context)
    flagged = {error["loc"][2] for error in errors}
    for item in usecase.context:
        value = context.get(item.name)
        if item.name in flagged:
            continue
        if value is None:
            if item.required:
                errors.append(_error(item.name, "missing", "Field required", None))
            continue
        error = _context_error(item, value)
        if error is not None:
            errors.append(error)
    return errors
