"""A prediction whose own outcome has arrived when it is made: the check `training_frame` runs on every row of a use
case labelled by ``label.from_event``.

Such a label is a later event naming the prediction's id (a flight's `departed` event naming its `scheduled` one). When
an event naming it is already there at the prediction time (the flight left early), it is often the outcome itself,
and it is in the windows the prediction reads; the windows cannot leave one event out online. Training refuses those
rows (`OwnOutcomeKnownError`), unless ``label.from_event.allow_own_outcome_known``; then they are flagged, and counted
in the model's metrics.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from migrate.batch.sql_names import quote as _quote
from migrate.errors import OwnOutcomeKnownError
from migrate.usecase import UseCase

__all__ = [
    "OWN_OUTCOME_COLUMN",
    "OWN_OUTCOME_ID",
    "OWN_OUTCOME_METRIC",
    "checks_own_outcome",
    "flag_own_outcome",
    "own_outcome_metrics",
    "own_outcome_sql",
]

OWN_OUTCOME_COLUMN = "own_outcome_known"  # the training frame's flag of each checked row
OWN_OUTCOME_METRIC = "own_outcome_known_rows"  # their count, in the metrics of a model that allows them
OWN_OUTCOME_ID = "_own_outcome_id"  # the query's column: the prediction's id when flagged, else NULL


def checks_own_outcome(usecase: UseCase) -> bool:
    """Whether `training_frame` checks each row for an event naming it before it is made: labels by
    ``label.from_event`` and rows with an id (the spine's events, or a table of past requests with ``id_column``)."""
    spine = usecase.training.spine
    with_ids = spine is None or spine.table is None or spine.id_column is not None
    return usecase.label.from_event is not None and with_ids


def own_outcome_metrics(frame: pa.Table) -> dict[str, float]:
    """A trained model's count of rows whose outcome may have been known when predicted (``own_outcome_known_rows``),
    from a `training_frame` that checked them; empty when it did not (no ``label.from_event``)."""
    if OWN_OUTCOME_COLUMN not in frame.column_names:
        return {}
    return {OWN_OUTCOME_METRIC: float(sum(1 for known in frame[OWN_OUTCOME_COLUMN].to_pylist() if known))}


def own_outcome_sql(usecase: UseCase, named_id: str, at: str) -> str:
    """The prediction's id (as text) when an event of ``label.from_event``'s stream other than its own names `named_id`
    in ``ref_field`` at or before `at` (its prediction time, SQL), else NULL."""
    events, by_reference = usecase.realtime_features, usecase.label.from_event
    assert events is not None and by_reference is not None
    table, time_column, stream = events.source(by_reference.stream)
    assert stream is not None
    when = f"CAST(o.{_quote(time_column)} AS TIMESTAMP)"
    # Every event naming it counts, not only those of `from_event.where`: a flight's early `departed` event with
    # `late: false` labels nothing, yet tells the windows that it left. The prediction's own event may name itself
    # (a request carries its own id): that one is not news.
    return f"""CASE WHEN EXISTS (
            SELECT 1 FROM {_quote(table)} o
            WHERE o.{_quote(by_reference.ref_field)} = {named_id} AND {when} <= {at}
              AND CAST(o.{_quote(stream.id_field)} AS VARCHAR) IS DISTINCT FROM CAST({named_id} AS VARCHAR)
        ) THEN CAST({named_id} AS VARCHAR) END"""


def _earlier(usecase: UseCase) -> str:
    """How to ask before the outcome: a table of past requests holds its own times; else `predict_before`, which may
    already be set (then some outcome arrived longer before its event than that: a flight that left 47 min early)."""
    spine = usecase.training.spine
    if spine is not None and spine.table is not None:
        return f"leave such requests out of {spine.table!r}"
    lead = usecase.training.predict_before
    ask = (
        "ask before the outcome can happen (training.predict_before, e.g. 30m)"
        if usecase.training.lead.total_seconds() == 0
        else f"ask earlier still (training.predict_before is {lead}: some outcomes arrived longer before their event)"
    )
    return f"{ask}, or leave such predictions out with training.spine.where"


def flag_own_outcome(usecase: UseCase, table: pa.Table, start: datetime, end: datetime) -> pa.Table:
    """`table` (the training frame of [start, end), with the query's ``_own_outcome_id``) with that column replaced
    by ``own_outcome_known``.

    Raises:
        OwnOutcomeKnownError: a row is flagged and ``label.from_event.allow_own_outcome_known`` is not set; names the
            count, the share, the window and the earliest such prediction's id.
    """
    named = table[OWN_OUTCOME_ID].to_pylist()
    known = [ident for ident in named if ident is not None]
    by_reference = usecase.label.from_event
    assert by_reference is not None
    if known and not by_reference.allow_own_outcome_known:
        share = len(known) / len(named)
        raise OwnOutcomeKnownError(
            f"{usecase.name!r}: {len(known)} of {len(named)} training rows ({share:.1%}) in "
            f"{start.isoformat()} - {end.isoformat()} are predicted when another event naming them in "
            f"{by_reference.ref_field!r} (stream {by_reference.stream!r}) has already arrived, e.g. the prediction "
            f"{known[0]!r}: its outcome may be in the features it is predicted from",
            fix=f"{_earlier(usecase)}; only when the model may know it, set "
            f"label.from_event.allow_own_outcome_known: true (the model's metrics then count {OWN_OUTCOME_METRIC})",
            count=len(known),
            rows=len(named),
            example=known[0],
        )
    flags = pa.array([ident is not None for ident in named], pa.bool_())
    return table.set_column(table.column_names.index(OWN_OUTCOME_ID), OWN_OUTCOME_COLUMN, flags)
