"""The seeded card-fraud world written into the offline store of the fraud-detection example.

Tables written (timestamps are naive ``TIMESTAMP`` holding UTC, see `migrate.batch.offline_store`):

- ``cards(card_id, issued_at)``: the entity source table
- ``card_events(event_id, event_time, card_id, merchant_id, kind, amount, auth_id)``: one stream of
  authorizations (``kind = 'auth'``, ``auth_id`` its own id) and chargebacks (``kind = 'chargeback'``, ``auth_id``
  the authorization disputed, its card, merchant and amount), as the event topic carries them
- ``card_features_daily``: the nightly batch features, one row per card per day end

Only these three tables are replaced, in one transaction (`migrate.examples.skeleton.generator.write_tables`), so
the file can hold the other examples too; the same configuration always writes the same rows. The truth (which
authorization was fraud) is not written: the chargebacks are how the toolkit learns it, as in production.
`simulate` hands it to tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import Field

from migrate.examples.fraud_detection.features import FEATURES_TABLE, build_card_features
from migrate.examples.fraud_detection.simulation import Rates, World, simulate_world
from migrate.examples.skeleton.generator import SimulatedDays, SummaryBase, insert_rows, write_tables
from migrate.examples.skeleton.simulation import start64

__all__ = ["CARD_ID_BASE", "EVENTS_TABLE", "TABLES", "FraudConfig", "FraudSummary", "generate", "simulate"]

CARD_ID_BASE = 4_000_001  # a range of its own, apart from the other examples' ids
EVENTS_TABLE = "card_events"
TABLES = ("cards", EVENTS_TABLE, FEATURES_TABLE)

_SCHEMA = """
CREATE OR REPLACE TABLE cards (card_id BIGINT, issued_at TIMESTAMP);
CREATE OR REPLACE TABLE card_events (
    event_id VARCHAR, event_time TIMESTAMP, card_id BIGINT, merchant_id VARCHAR,
    kind VARCHAR, amount DOUBLE, auth_id VARCHAR
);
"""


class FraudConfig(SimulatedDays):
    """The size of the world and how often cards and merchants are compromised.

    Instants are drawn continuously, not on a grid: the inherited ``step_minutes`` is not used.
    """

    seed: int = 11
    days: int = Field(default=10, ge=2, description="At least two, so a nightly row precedes the final day.")
    cards: int = Field(default=3_000, ge=10)
    merchants: int = Field(default=300, ge=25, description="At least 25, so there is a cash-out merchant.")
    auths_per_card_day: float = Field(default=2.0, gt=0)
    compromises_per_card_day: float = Field(default=0.003, ge=0, description="Card thefts per card and day.")
    breaches_per_merchant_day: float = Field(default=0.005, ge=0, description="Checkouts breached, per merchant-day.")
    friendly_chargeback_rate: float = Field(default=0.002, ge=0, le=1, description="Honest auths disputed anyway.")
    new_card_share: float = Field(default=0.03, ge=0, le=0.5, description="Cards issued during the simulated days.")

    def rates(self) -> Rates:
        """The simulation's parameters: the world's size and pace, the first day as microseconds."""
        pace = self.model_dump(exclude={"seed", "start", "step_minutes"})
        return Rates(start_us=int(start64(self.start).astype(np.int64)), **pace)


class FraudSummary(SummaryBase):
    """What one run wrote, and the truth behind it in counts."""

    auths: int
    fraud_auths: int
    chargebacks: int
    friendly_chargebacks: int = Field(description="Chargebacks of honest authorizations (label noise).")
    new_cards: int = Field(description="Cards issued during the simulated days (no nightly row before).")
    last_batch_cutoff: datetime = Field(description="02:00 UTC of the final day: the last nightly run.")

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


def _writer(config: FraudConfig, world: World) -> Callable[[duckdb.DuckDBPyConnection], int]:
    """What `write_tables` runs in its transaction: the two source tables, then the nightly features from them."""

    def write(con: duckdb.DuckDBPyConnection) -> int:
        issued = world.population.issued_us
        con.execute(_SCHEMA)
        insert_rows(
            con, "cards", pa.table({"card_id": np.arange(issued.size) + CARD_ID_BASE, "issued_at": _timestamps(issued)})
        )
        insert_rows(con, EVENTS_TABLE, _event_table(world))
        build_card_features(con, config.start + timedelta(days=1), config.end)
        return int((issued >= config.rates().start_us).sum())

    return write


def generate(path: Path, config: FraudConfig) -> FraudSummary:
    """Simulate `config` and (re)write the example's three tables in the DuckDB file at `path`."""
    world = simulate(config)
    written = write_tables(path, _writer(config, world), TABLES, EVENTS_TABLE)
    disputed = world.chargebacks.auth
    return FraudSummary(
        **written.summary_fields(path, config),
        auths=int(world.auths.at_us.size),
        fraud_auths=int(world.auths.fraud.sum()),
        chargebacks=int(disputed.size),
        friendly_chargebacks=int((~world.auths.fraud[disputed]).sum()),
        new_cards=written.new_entities,
        last_batch_cutoff=config.last_batch_cutoff,
    )
