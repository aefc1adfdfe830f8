"""The seeded card-fraud world written into the offline store of the fraud-detection example.

Tables written (timestamps are naive ``TIMESTAMP`` holding UTC, see `migrate.batch.offline_store`):

- ``cards(card_id, issued_at)``: the entity source table
- ``card_events(event_id, event_time, card_id, merchant_id, kind, amount, auth_id)``: one stream of
  authorizations (``kind = 'auth'``, ``auth_id`` its own id) and chargebacks (``kind = 'chargeback'``, ``auth_id``
  the authorization disputed, its card, merchant and amount), as the event topic carries them
- ``card_features_daily``: the nightly batch features, one row per card per day end

Only these three tables are replaced, in one transaction, so the file can hold the other examples too; the same
configuration always writes the same rows. The truth (which authorization was fraud) is not written: the
chargebacks are how the toolkit learns it, as in production. `simulate` hands it to tests.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from migrate.batch.offline_store import open_offline
from migrate.examples.fraud_detection.features import FEATURES_TABLE, build_card_features
from migrate.examples.fraud_detection.simulation import Rates, World, micros, simulate_world

__all__ = ["CARD_ID_BASE", "EVENTS_TABLE", "TABLES", "FraudConfig", "FraudSummary", "generate", "simulate"]

CARD_ID_BASE = 4_000_001  # a range of its own, apart from the other examples' ids
EVENTS_TABLE = "card_events"
TABLES = ("cards", EVENTS_TABLE, FEATURES_TABLE)


class FraudConfig(BaseModel):
    """The size of the world and how often cards and merchants are compromised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 11
    cards: int = Field(default=3_000, ge=10)
    merchants: int = Field(default=300, ge=25, description="At least 25, so there is a cash-out merchant.")
    days: int = Field(default=10, ge=2, description="At least two, so a nightly row precedes the final day.")
    first_day: date = Field(default=date(2026, 11, 1), description="The first simulated day (UTC).")
    auths_per_card_day: float = Field(default=2.0, gt=0)
    compromises_per_card_day: float = Field(default=0.003, ge=0, description="Card thefts per card and day.")
    breaches_per_merchant_day: float = Field(default=0.002, ge=0, description="Checkouts breached, per merchant-day.")
    friendly_chargeback_rate: float = Field(default=0.002, ge=0, le=1, description="Honest auths disputed anyway.")
    new_card_share: float = Field(default=0.03, ge=0, le=0.5, description="Cards issued during the simulated days.")

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time(0), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def rates(self) -> Rates:
        """The simulation's parameters: every field but the seed, the first day as an instant."""
        return Rates(start_us=micros(self.start), **self.model_dump(exclude={"seed", "first_day"}))


class FraudSummary(BaseModel):
    """What one run wrote, and the truth behind it in counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auths: int
    fraud_auths: int
    chargebacks: int
    friendly_chargebacks: int = Field(description="Chargebacks of honest authorizations (label noise).")
    rows: dict[str, int] = Field(description="Rows per table written.")
    path: Path
    start: datetime
    end: datetime

    @property
    def fraud_rate(self) -> float:
        return self.fraud_auths / self.auths if self.auths else 0.0


def simulate(config: FraudConfig) -> World:
    """The world `generate` writes, with its truth (for tests and notebooks)."""
    return simulate_world(config.rates(), config.seed)


def _timestamps(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype("datetime64[us]"), pa.timestamp("us"))


def _event_table(world: World) -> pa.Table:
    """Authorizations and chargebacks as one table in event-time order (then id)."""
    auths, disputes = world.auths, world.chargebacks
    auth_ids = np.char.add("auth-", np.char.zfill(np.arange(auths.at_us.size).astype(str), 8))
    dispute_ids = np.char.add("cb-", np.char.zfill(np.arange(disputes.at_us.size).astype(str), 8))
    parts = {
        "event_id": np.concatenate([auth_ids, dispute_ids]).astype(object),
        "event_time": np.concatenate([auths.at_us, disputes.at_us]),
        "card_id": np.concatenate([auths.card, auths.card[disputes.auth]]) + CARD_ID_BASE,
        "merchant_id": np.concatenate([auths.merchant, auths.merchant[disputes.auth]]),
        "kind": np.repeat(np.array(["auth", "chargeback"], dtype=object), [auths.at_us.size, disputes.at_us.size]),
        "amount": np.concatenate([auths.amount, auths.amount[disputes.auth]]),
        "auth_id": np.concatenate([auth_ids, auth_ids[disputes.auth]]).astype(object),
    }
    order = np.lexsort((parts["event_id"].astype(str), parts["event_time"]))
    merchants = np.char.add("m-", np.char.zfill(parts["merchant_id"][order].astype(str), 4)).astype(object)
    return pa.table(
        {
            "event_id": parts["event_id"][order],
            "event_time": _timestamps(parts["event_time"][order]),
            "card_id": parts["card_id"][order],
            "merchant_id": merchants,
            "kind": parts["kind"][order],
            "amount": parts["amount"][order],
            "auth_id": parts["auth_id"][order],
        }
    )


def _replace(con: duckdb.DuckDBPyConnection, config: FraudConfig, world: World) -> None:
    cards = pa.table(
        {
            "card_id": np.arange(world.population.issued_us.size, dtype=np.int64) + CARD_ID_BASE,
            "issued_at": _timestamps(world.population.issued_us),
        }
    )
    events = _event_table(world)
    for name, rows in (("cards", cards), (EVENTS_TABLE, events)):
        con.register("_fraud_rows", rows)
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _fraud_rows")
        con.unregister("_fraud_rows")
    build_card_features(con, config.start + timedelta(days=1), config.end)


def generate(path: Path, config: FraudConfig) -> FraudSummary:
    """Simulate `config` and (re)write the example's three tables in the DuckDB file at `path`.

    One transaction: a failure leaves the previous tables as they were, never half a world.
    """
    world = simulate(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_offline(path, read_only=False) as con:
        con.begin()
        try:
            _replace(con, config, world)
        except BaseException:
            con.rollback()
            raise
        con.commit()
        rows = {name: int(con.table(name).count("*").fetchall()[0][0]) for name in TABLES}
        con.execute("CHECKPOINT")
    disputed = world.chargebacks.auth
    return FraudSummary(
        path=path,
        rows=rows,
        start=config.start,
        end=config.end,
        auths=int(world.auths.at_us.size),
        fraud_auths=int(world.auths.fraud.sum()),
        chargebacks=int(disputed.size),
        friendly_chargebacks=int((~world.auths.fraud[disputed]).sum()),
    )
