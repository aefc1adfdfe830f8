"""The OpenAPI of one use case's predict endpoint: its key columns, context values and limits, and every status
the endpoint answers; FastAPI's generic schema (a dict of ints or strings) said none of that."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from migrate.usecase import ContextFeature, UseCase
from online.serving.guard import MAX_BODY_BYTES
from online.serving.schemas import MAX_ENTITIES
from online.serving.validation import INT64_MAX, INT64_MIN

__all__ = ["FieldError", "Problem", "ValidationProblem", "predict_operation", "predict_responses", "problems"]


class Problem(BaseModel):
    """Why a request was refused (404, 413) or failed (500), in words."""

    detail: str


class FieldError(BaseModel):
    """One field of a refused request: where (``["body", "entities", 0, "store_id"]``), what and why."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None


class ValidationProblem(BaseModel):
    """A request refused with 422: every field at fault."""

    detail: list[FieldError]


_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
# Exact integers: these schemas are added to the document after FastAPI's OpenAPI model, which stores bounds as
# floats (2**63 - 1 would read 2**63).
_INT64 = {"minimum": INT64_MIN, "maximum": INT64_MAX}
CONTEXT_VALUE = "ContextValue"
_CONTEXT_VALUE = {
    "description": "Any JSON value whose numbers are finite and within the signed 64-bit range (they are logged).",
    "anyOf": [
        {"type": ["null", "boolean", "string"]},
        {"type": "number", **_INT64},
        {"type": "array", "items": {"$ref": f"#/components/schemas/{CONTEXT_VALUE}"}},
        {"type": "object", "additionalProperties": {"$ref": f"#/components/schemas/{CONTEXT_VALUE}"}},
    ],
}


def _key_schema(kind: str) -> dict[str, Any]:
    return {"type": "integer", "format": "int64", **_INT64} if kind == "int" else {"type": "string"}


def _context_schema(item: ContextFeature) -> dict[str, Any]:
    # An optional value may be null (taken as missing); a required one may not.
    schema: dict[str, Any] = {"type": _JSON_TYPES[item.type] if item.required else [_JSON_TYPES[item.type], "null"]}
    if item.type in ("int", "float"):
        low, high = item.min, item.max
        schema["minimum"] = INT64_MIN if low is None or low < INT64_MIN else low
        schema["maximum"] = INT64_MAX if high is None or high > INT64_MAX else high
    return schema


def body_component(usecase: UseCase) -> str:
    """The name of the use case's request body among the document's schemas."""
    return f"PredictRequest_{usecase.name}"


def predict_body(usecase: UseCase) -> dict[str, Any]:
    """The JSON Schema of `usecase`'s request body, as `validation.py` checks it."""
    keys = usecase.entity.keys
    entity = {
        "type": "object",
        "properties": {key.name: _key_schema(key.type) for key in keys},
        "required": [key.name for key in keys],
        "additionalProperties": False,
    }
    context: dict[str, Any] = {
        "type": "object",
        "properties": {item.name: _context_schema(item) for item in usecase.context},
        "required": [item.name for item in usecase.context if item.required],
        "additionalProperties": {"$ref": f"#/components/schemas/{CONTEXT_VALUE}"},
        "description": "The use case's declared values; any other key is kept for the shadow log.",
    }
    return {
        "title": f"PredictRequest ({usecase.name})",
        "type": "object",
        "properties": {
            "entities": {"type": "array", "items": entity, "minItems": 1, "maxItems": MAX_ENTITIES},
            "context": context,
        },
        "required": ["entities", *(["context"] if any(item.required for item in usecase.context) else [])],
        "additionalProperties": False,
    }


def predict_operation(usecase: UseCase) -> dict[str, Any]:
    """The ``openapi_extra`` of the route: the body, read by the endpoint itself rather than by FastAPI."""
    schema = {"$ref": f"#/components/schemas/{body_component(usecase)}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def document_bodies(app: FastAPI, usecases: Iterable[UseCase]) -> None:
    """Add each use case's request body (and `ContextValue`) to `app`'s OpenAPI document, past FastAPI's model."""
    generate = app.openapi
    bodies = {body_component(usecase): predict_body(usecase) for usecase in usecases}

    def openapi() -> dict[str, Any]:
        document: dict[str, Any] = generate()  # built once and kept by FastAPI: added to, idempotently
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault(CONTEXT_VALUE, _CONTEXT_VALUE)
        for name, body in bodies.items():
            schemas.setdefault(name, body)
        return document

    # FastAPI's documented way to extend the document: replace the app's openapi method.
    app.openapi = openapi  # type: ignore[method-assign]


def problems(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route's refusals, each a `Problem` with what the status means there."""
    return {status: {"model": Problem, "description": description} for status, description in described.items()}


def predict_responses() -> dict[int | str, dict[str, Any]]:
    """Every status the predict endpoint answers besides 200."""
    return {
        413: {"model": Problem, "description": f"The body is over {MAX_BODY_BYTES} bytes."},
        422: {"model": ValidationProblem, "description": "The body is not what the use case takes."},
        500: {"model": Problem, "description": "A defect: see the service log (counted, never expected)."},
    }
