"""The use-case schema: what one ``usecases/<name>.yaml`` declares, validated strictly."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import Field, field_validator, model_validator

# The real-time declarations live in their own module; they are part of this schema and named from here too.
from migrate.realtime_schema import (
    IDENTIFIER,
    MAIN_STREAM,
    Duration,
    EventFieldType,
    EventStream,
    FeatureGroup,
    Identifier,
    RealtimeFeature,
    RealtimeFeatures,
    SideStream,
    parse_duration,
)
from migrate.realtime_schema import Strict as _Strict

__all__ = [
    "IDENTIFIER",
    "SHA256",
    "BatchFeatures",
    "BatchJoin",
    "BatchSpec",
    "ContextFeature",
    "CutoverPolicy",
    "Duration",
    "Entity",
    "EntityKey",
    "EntitySource",
    "EventFieldType",
    "EventStream",
    "Feature",
    "FeatureGroup",
    "Identifier",
    "Label",
    "LabelFromEvent",
    "LookupTableSpec",
    "ModelSpec",
    "RealtimeFeature",
    "RealtimeFeatures",
    "SideStream",
    "Spine",
    "TrainingSpec",
    "UseCase",
    "Validation",
    "parse_duration",
]

SHA256 = r"^[0-9a-f]{64}$"


class EntityKey(_Strict):
    """One column of the entity key."""

    name: Identifier
    type: Literal["int", "str"]


class EntitySource(_Strict):
    """The offline-store table listing every entity that exists, and since when."""

    table: Identifier
    created_at_column: Identifier = Field(description="When the entity appeared; later ones are not scored.")


class Entity(_Strict):
    """Who gets a prediction."""

    keys: list[EntityKey] = Field(min_length=1)
    source: EntitySource

    @property
    def key_names(self) -> list[str]:
        return [key.name for key in self.keys]


class Feature(_Strict):
    """One numeric model input."""

    name: Identifier
    type: Literal["float", "int", "bool"] = "float"


class BatchJoin(_Strict):
    """Batch features of another grain (per store, per product), joined on some of the entity's keys."""

    table: Identifier
    keys: list[Identifier] = Field(min_length=1, description="The entity keys this table is keyed by.")
    timestamp_column: Identifier = Field(description="Snapshot time of each feature row (point in time).")
    features: list[Feature] = Field(min_length=1)


class BatchFeatures(_Strict):
    """Where the batch features live in the offline store (DuckDB): one table at the entity's grain, and tables at
    coarser grains joined on a subset of its keys."""

    table: Identifier
    timestamp_column: Identifier = Field(description="Snapshot time of each feature row (point in time).")
    features: list[Feature] = Field(min_length=1)
    joins: list[BatchJoin] = Field(default_factory=list, description="Tables at other grains, joined by key.")

    @property
    def names(self) -> list[str]:
        """Every batch feature: the entity table's, then each join's, in declared order."""
        return [f.name for f in self.features] + [f.name for j in self.joins for f in j.features]


class ContextFeature(_Strict):
    """A value the request carries in its ``context``, validated on arrival: a model input when numeric (an amount,
    an hour), a key of a feature group when a string (a merchant, an origin)."""

    name: Identifier
    type: Literal["float", "int", "bool", "str"] = "float"
    min: float | None = Field(default=None, description="Smallest accepted value (inclusive).")
    max: float | None = Field(default=None, description="Largest accepted value (inclusive).")
    required: bool = Field(default=True, description="Refuse a request without it (else: missing → NaN).")
    known_ahead: bool = Field(
        default=False,
        description="Fixed before the event happens (a scheduled departure's hour, a quoted price): training reads "
        "it from the event even when it predicts `training.predict_before` ahead of it. Declare only what is known "
        "that early: a value measured at the event leaks the outcome into every training row.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ContextFeature:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"context feature {self.name!r}: min {self.min} is above max {self.max}")
        if self.type in ("str", "bool") and (self.min is not None or self.max is not None):
            raise ValueError(f"context feature {self.name!r} ({self.type}) takes no min or max")
        return self

    @property
    def is_input(self) -> bool:
        """Numeric context values feed the model; strings only key feature groups."""
        return self.type != "str"


class Spine(_Strict):
    """Which past predictions training rows are: events of the main stream (``where``), or the rows of a table of
    past requests (``table``: the entity keys, ``time_column``, the context values, optionally an id and the label
    each request already got, as ``migrate spine`` exports them from the shadow log)."""

    where: dict[str, bool | int | str] = Field(default_factory=dict, description="Event filter: field == value.")
    table: Identifier | None = Field(default=None, description="Offline-store table of past requests.")
    time_column: Identifier | None = Field(default=None, description="When each request was made (with table).")
    id_column: Identifier | None = Field(
        default=None, description="The request's id, as label.from_event's ref_field names it (with table)."
    )
    label_column: Identifier | None = Field(
        default=None,
        description="The table's own label of each request (with table), e.g. the shadow log's label join; "
        "default: each request is labelled from the event history.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Spine:
        if self.table is not None and self.where:
            raise ValueError("training.spine takes where (events) or table (past requests), not both")
        if (self.table is None) != (self.time_column is None):
            raise ValueError("training.spine.table and training.spine.time_column go together")
        if self.id_column is not None and self.table is None:
            raise ValueError("training.spine.id_column names a column of training.spine.table")
        if self.label_column is not None and self.table is None:
            raise ValueError("training.spine.label_column names a column of training.spine.table")
        return self


class TrainingSpec(_Strict):
    """How training rows are formed: one per prediction the model would have made, at its prediction time."""

    spine: Spine | None = Field(default=None, description="The events that are predictions; default: labelled ones.")
    predict_before: Duration = Field(
        default="0s",
        description="Prediction time = the labelled event's time minus this lead; features see only earlier data.",
    )

    @property
    def lead(self) -> timedelta:
        return parse_duration(self.predict_before)


class LabelFromEvent(_Strict):
    """The label arrives as a later event naming the prediction's event (a chargeback naming its authorization)."""

    where: dict[str, bool | int | str] = Field(min_length=1, description="Which events are labels: field == value.")
    ref_field: Identifier = Field(description="Field of the label event holding the id of the event it labels.")
    stream: Identifier = Field(
        default=MAIN_STREAM,
        description="The event stream carrying the label events (main, or realtime_features.streams).",
    )
    request_field: Identifier | None = Field(
        default=None,
        description="The request context value holding the id a label names: the shadow comparison then joins by id.",
    )
    value: float = Field(default=1.0, description="The label when such an event arrives within available_after.")
    otherwise: float | None = Field(
        default=0.0, description="The label when none arrives in time (None: such a prediction stays unlabeled)."
    )
    allow_own_outcome_known: bool = Field(
        default=False,
        description="Train on predictions made after another event naming them arrived (a flight that already left, "
        "its departure in the windows): counted in the model's metrics as own_outcome_known_rows. Default: training "
        "refuses them, naming how many; predict earlier (training.predict_before) or filter them out instead.",
    )


class Label(_Strict):
    """The outcome the model predicts and when it becomes known."""

    name: Identifier
    description: str
    kind: Literal["binary", "regression"]
    available_after: Duration = Field(description="How long after a prediction its label is known, e.g. '2h'.")
    event_field: Identifier | None = Field(
        default=None, description="Event field whose value is the label (the stream processor publishes it)."
    )
    from_event: LabelFromEvent | None = Field(
        default=None, description="The label is a later event that names the prediction's event (not event_field)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Label:
        if self.event_field is not None and self.from_event is not None:
            raise ValueError("label takes event_field or from_event, not both")
        return self


class ModelSpec(_Strict):
    """The scikit-learn model: how it is trained and, optionally, a pinned artifact."""

    flavor: Literal["sklearn"] = "sklearn"
    trainer: str = Field(pattern=r"^[\w.]+:\w+$", description="'package.module:function' that trains it.")
    artifact: str | None = Field(default=None, description="Pinned artifact path; default: latest trained.")
    sha256: str | None = Field(default=None, pattern=SHA256)

    @model_validator(mode="after")
    def _pinned(self) -> ModelSpec:
        if self.artifact is not None and self.sha256 is None:
            raise ValueError("a pinned artifact needs its sha256 (run: sha256sum <artifact>)")
        return self


class LookupTableSpec(_Strict):
    """The lookup table applications read (a view onto the active version)."""

    name: Identifier
    keep_versions: int | None = Field(default=None, ge=1, description="Default: settings.keep_versions.")


class Validation(_Strict):
    """Checks a scored batch must pass before it is published."""

    max_row_drop: float = Field(default=0.2, ge=0, le=1, description="Largest allowed drop vs previous version.")
    prediction_min: float | None = None
    prediction_max: float | None = None


class BatchSpec(_Strict):
    """How the nightly batch run is scheduled and checked."""

    schedule: str = Field(description="Cron expression, in UTC.")
    start_date: date = Field(
        default=date(2000, 1, 1),
        description="The first day the DAGs may run for (catchup stays off): early enough by default that "
        "`airflow dags test` or a backfill on a date of the history publishes a version.",
    )
    chunk_size: int | None = Field(default=None, ge=1_000)
    retries: int = Field(default=2, ge=0)
    validation: Validation = Field(default_factory=Validation)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value


class ShadowSpec(_Strict):
    """How much of the traffic the shadow comparison logs (at shadow, canary and online)."""

    sample_percent: float = Field(
        default=100.0,
        gt=0,
        le=100,
        description="Share of entities whose requests are compared and logged, chosen by a hash of the key (an "
        "entity is always in or always out, independent of its canary bucket); the rest cost the serving worker "
        "nothing. Shares and latencies hold as measured; the comparator scales what counts entities (waste).",
    )


class CutoverPolicy(_Strict):
    """Thresholds the comparator and the cutover guardrails use."""

    decision_threshold: float = 0.5
    min_labeled_samples: int = Field(default=1_000, ge=1)
    max_accuracy_loss: float = Field(default=0.0, ge=0)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    min_coverage: float = Field(default=0.0, ge=0, le=1)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p99_latency_ms: float = Field(default=50.0, gt=0)
    max_fallback_rate: float = Field(default=0.05, ge=0, le=1, description="Largest share served by the fallback.")
    primary_metric: Literal["auc", "log_loss", "brier", "mae", "rmse"] | None = Field(
        default=None, description="Metric the verdict judges accuracy on; default auc (binary) or mae (regression)."
    )
    disagreement_threshold: float = Field(
        default=0.05, gt=0, description="|live − batch| that counts as a disagreement when the noise floor is unknown."
    )
    auto_promote: bool = False
    max_offline_gap: float = Field(
        default=0.1,
        ge=0,
        description="How much better the online model's holdout may look than its shadow on the primary metric "
        "(absolute for AUC, a share of the shadow value for losses); beyond it: hold, suspected leakage or skew.",
    )
    max_feature_skew: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Largest share of sampled live answers whose value of any one feature differs from its offline "
        "point-in-time value, or is missing on one side only (the comparator's feature-skew check); beyond it: hold. "
        "A lagging or empty stream, materialized features behind, or a bug in the live path shows up here.",
    )
    feature_skew_grace: Duration = Field(
        default="1s",
        description="How far behind a request the stream may be before its features count as skewed: a real-time "
        "feature whose live value differs from its offline value at the request but equals a value its windows held "
        "within the grace before it (at the grace's start, just after any event of the row's keys in it, or at a "
        "window bucket boundary in it) is counted apart (the events of that last moment had not reached the stream "
        "yet), not as skew. A rehearsal multiplies it by its clock's speed (its stream lags in wall-clock time).",
    )
    max_calibration_error: float = Field(
        default=0.1, gt=0, le=1, description="Largest expected calibration error of the live path (binary labels)."
    )
    segment: Identifier | None = Field(
        default=None,
        description="An entity key or a context value the report breaks the comparison down by (store, merchant).",
    )

    @property
    def skew_grace(self) -> timedelta:
        """`feature_skew_grace` as a duration."""
        return parse_duration(self.feature_skew_grace)


class UseCase(_Strict):
    """One use case: a model, its features, its lookup table and its migration policy."""

    name: Identifier
    description: str
    owner: str = Field(min_length=1)
    entity: Entity
    model: ModelSpec
    batch_features: BatchFeatures
    realtime_features: RealtimeFeatures | None = None
    context: list[ContextFeature] = Field(default_factory=list, description="Request-time model inputs.")
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    label: Label
    lookup_table: LookupTableSpec
    batch: BatchSpec
    cutover_policy: CutoverPolicy = Field(default_factory=CutoverPolicy)
    shadow: ShadowSpec = Field(default_factory=ShadowSpec)
    offline_time_zone: str = Field(
        default="UTC",
        description="The zone of the offline store's timestamps that carry none (TIMESTAMP columns, not "
        "TIMESTAMPTZ): their wall-clock times are read in this IANA zone (e.g. 'Europe/Paris') and turned into UTC; "
        "default UTC. One zone for every table the use case reads.",
    )

    @field_validator("offline_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not a time zone this machine knows: use an IANA name such as 'UTC', "
                "'Europe/Paris' or 'America/Chicago'"
            ) from None
        return value

    @property
    def offline_tables(self) -> list[str]:
        """Every offline-store table the use case reads, once each, in declared order."""
        tables = [self.entity.source.table, self.batch_features.table, *(j.table for j in self.batch_features.joins)]
        if self.realtime_features is not None:
            tables += [self.realtime_features.event_table, *(s.event_table for s in self.realtime_features.streams)]
        if self.training.spine is not None and self.training.spine.table is not None:
            tables.append(self.training.spine.table)
        return list(dict.fromkeys(tables))

    @model_validator(mode="after")
    def _columns_distinct(self) -> UseCase:
        names = self.entity.key_names + self.batch_features.names
        if self.realtime_features is not None:
            names += self.realtime_features.names
        names += [c.name for c in self.context]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"columns {duplicates} appear twice among entity keys, batch and real-time features")
        for join in self.batch_features.joins:
            unknown = [k for k in join.keys if k not in self.entity.key_names]
            if unknown:
                raise ValueError(f"batch_features.joins {join.table!r} is keyed by {unknown}, not entity keys")
        rt = self.realtime_features
        if rt is not None and rt.events is not None:
            missing = [k for k in self.entity.key_names if k not in rt.events.fields]
            if missing:
                raise ValueError(f"realtime_features.events.fields lacks the entity key(s) {missing}")
            if self.label.event_field is not None and self.label.event_field not in rt.events.fields:
                raise ValueError(f"label.event_field {self.label.event_field!r} is not among the event fields")
            spine_fields = set(self.training.spine.where if self.training.spine else {})
            unknown = sorted(f for f in spine_fields if f not in rt.events.fields)
            if unknown:
                raise ValueError(f"training.spine reads {unknown}, not among the event fields")
            by_reference = self.label.from_event
            if by_reference is not None:
                source = rt.source(by_reference.stream)[2]
                fields = {} if source is None else source.fields
                # The comparator joins labels to requests by entity: a label event must carry the entity's keys.
                read = {*by_reference.where, by_reference.ref_field, *self.entity.key_names}
                unknown = sorted(f for f in read if f not in fields)
                if unknown:
                    raise ValueError(
                        f"label.from_event reads {unknown}, not among the fields of stream {by_reference.stream!r}"
                    )
        spine = self.training.spine
        if self.label.from_event is not None and spine is None:
            raise ValueError("label.from_event labels the events of training.spine: declare training.spine.where")
        request_field = self.label.from_event.request_field if self.label.from_event is not None else None
        if request_field is not None and not any(c.name == request_field and c.required for c in self.context):
            raise ValueError(
                f"label.from_event.request_field {request_field!r} must be a required context value: the shadow "
                "comparison joins each request's label by it"
            )
        if (
            self.label.from_event is not None
            and spine is not None
            and spine.table
            and spine.id_column is None
            and spine.label_column is None
        ):
            raise ValueError(
                "label.from_event names requests by id: declare training.spine.id_column (or label_column, the "
                "table's own labels)"
            )
        if spine is not None and spine.table is not None and self.training.lead.total_seconds() > 0:
            raise ValueError("a table of past requests holds their prediction times: training.predict_before is 0s")
        segment = self.cutover_policy.segment
        if segment is not None and segment not in self.entity.key_names + [c.name for c in self.context]:
            raise ValueError(f"cutover_policy.segment {segment!r} is neither an entity key nor a context value")
        if rt is not None:
            carried = set(self.entity.key_names) | {c.name for c in self.context}
            for group in rt.all_groups:
                unknown = [k for k in group.key if k not in carried]
                if unknown:
                    raise ValueError(
                        f"feature group {group.name!r} is keyed by {unknown}, which a request does not carry: "
                        "make each an entity key or a context feature"
                    )
        return self

    @property
    def realtime_feature_names(self) -> list[str]:
        """The real-time features, in declared order (empty when none are declared)."""
        return [] if self.realtime_features is None else self.realtime_features.names

    @property
    def context_names(self) -> list[str]:
        """The request-time model inputs (numeric context values), in declared order."""
        return [c.name for c in self.context if c.is_input]

    @property
    def online_feature_names(self) -> list[str]:
        """The online model's inputs: the batch features, the real-time ones (entity, then groups), the context."""
        return self.feature_names + self.realtime_feature_names + self.context_names

    @property
    def feature_names(self) -> list[str]:
        """The batch model's inputs, in model order: the entity table's features, then each join's."""
        return self.batch_features.names

    @property
    def prediction_range(self) -> tuple[float | None, float | None]:
        """The range a prediction must fall in (probabilities for binary labels)."""
        v = self.batch.validation
        if self.label.kind == "binary":
            return (
                0.0 if v.prediction_min is None else v.prediction_min,
                1.0 if v.prediction_max is None else v.prediction_max,
            )
        return (v.prediction_min, v.prediction_max)
