"""The nightly batch features of the fraud example, computed in DuckDB from card events strictly before ``as_of``.

One row per card per day end for every card issued before it: the last week's authorizations (count, mean
amount), the chargebacks that arrived in the last 90 days and the card's age. All a nightly job can know; none of
it sees a burst that started after midnight. A card without authorizations in the week has a zero count and a
NULL mean (the trees route it as missing); means are rounded so DuckDB's summation order cannot change a value.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from migrate.examples.skeleton.features import build_daily_table

__all__ = ["FEATURES_TABLE", "build_card_features"]

FEATURES_TABLE = "card_features_daily"

# After the day ends (``days``): each card issued before a day end, its week of authorizations and its disputes.
_CARDS = """snapshot AS (
    SELECT c.card_id, c.issued_at, d.as_of FROM cards c JOIN days d ON c.issued_at < d.as_of
), week AS (
    SELECT s.card_id, s.as_of, count(e.event_id) AS auths, avg(e.amount) AS mean_amount
    FROM snapshot s LEFT JOIN card_events e
      ON e.card_id = s.card_id AND e.kind = 'auth'
     AND e.event_time >= s.as_of - INTERVAL 7 DAY AND e.event_time < s.as_of
    GROUP BY ALL
), disputes AS (
    SELECT s.card_id, s.as_of, count(e.event_id) AS chargebacks
    FROM snapshot s LEFT JOIN card_events e
      ON e.card_id = s.card_id AND e.kind = 'chargeback'
     AND e.event_time >= s.as_of - INTERVAL 90 DAY AND e.event_time < s.as_of
    GROUP BY ALL
)
SELECT s.card_id, s.as_of,
       CAST(w.auths AS DOUBLE) AS card_auths_7d,
       round(w.mean_amount, 4) AS card_amount_mean_7d,
       CAST(x.chargebacks AS DOUBLE) AS card_chargebacks_90d,
       round(epoch(s.as_of - s.issued_at) / 86400.0, 4) AS card_age_days
FROM snapshot s JOIN week w USING (card_id, as_of) JOIN disputes x USING (card_id, as_of)
ORDER BY s.as_of, s.card_id
"""


def build_card_features(con: duckdb.DuckDBPyConnection, first_as_of: datetime, last_as_of: datetime) -> None:
    """(Re)build ``card_features_daily`` at every day end from `first_as_of` to `last_as_of` inclusive.

    Rebuilt whole rather than appended, so a rerun after new events never leaves yesterday's rows half-updated.
    """
    build_daily_table(con, FEATURES_TABLE, _CARDS, first_as_of, last_as_of)
