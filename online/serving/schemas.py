"""Request and response bodies of the prediction API (validated strictly, documented in OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

MAX_ENTITIES = 1_000
Source = Literal["batch", "online", "batch_fallback"]


class PredictRequest(BaseModel):
    """One or many entities to score, plus optional request-time context."""

    model_config = ConfigDict(extra="forbid")

    # Floats too: JSON Schema's integer includes 3.0 (validation.integral_keys makes it 3; 3.5 is refused there).
    entities: Annotated[
        list[dict[str, StrictInt | StrictStr | StrictFloat]],
        Field(min_length=1, max_length=MAX_ENTITIES, description="Entity keys, e.g. {'store_id': 1, 'product_id': 7}"),
    ]
    context: dict[str, Any] = Field(default_factory=dict, description="Request-time context, logged with the shadow.")


class Prediction(BaseModel):
    """The answer for one entity, and where it came from."""

    key: dict[str, int | str]
    prediction: float | None = Field(description="None when no path could answer (e.g. a lookup miss in batch).")
    source: Source
    model_version: str | None
    data_age_s: float | None = Field(description="Age of the data behind the prediction at request time.")
    miss: bool = Field(default=False, description="True when the lookup table has no row for this entity.")
    error: str | None = None
    missing_features: list[str] | None = Field(
        default=None,
        description="Online answers: the model inputs this entity had no value for, scored as missing (NaN) — "
        "an empty list means every input was present. An entity the feature store does not know lists every batch "
        "feature. Null for an answer from the lookup table, or with an error.",
    )
    group_ages_s: dict[str, float | None] | None = Field(
        default=None,
        description="Online answers: seconds between the newest data of each feature group and the request, "
        "'batch' for the materialized batch features (their oldest), 'entity' and each declared real-time group by "
        "name; null for a group that holds nothing for this entity (e.g. no event in its windows). Null for an "
        "answer from the lookup table (its age is data_age_s), or with an error.",
        examples=[{"batch": 52_310.0, "entity": 42.5, "store": None}],
    )


class PredictResponse(BaseModel):
    """Every entity's prediction, in request order."""

    request_id: str
    usecase: str
    stage: str
    predictions: list[Prediction]


class FlagChange(BaseModel):
    """Admin request: move a use case's cutover flag."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["batch", "shadow", "canary", "online", "online_only"]
    percent: int | None = Field(default=None, ge=0, le=100)
    reason: str = Field(min_length=1)
    actor: str = Field(default="admin-api", min_length=1)
    force: bool = Field(default=False, description="Allow skipping stages forward (audited as forced).")
