"""A backtest's past requests must carry every required context value: serving refuses a request without one (a
422, no prediction from either path), so a requests table that lacks the column is refused by name, not replayed
with that model input missing on every row."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from migrate.batch.offline_store import open_offline, prediction_requests
from migrate.errors import OfflineStoreError
from migrate.registry import Registry
from migrate.settings import Settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.integration

START = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def fraud(tmp_path: Path) -> UseCase:
    return Registry(Settings(state_dir=tmp_path / "state").usecases_dir).get("fraud_detection")


def _store(path: Path, context: Mapping[str, tuple[str, object]]) -> Path:
    """Three past requests (card key, request time) with the `context` columns: name → (SQL type, value)."""
    columns = "".join(f", {name} {kind}" for name, (kind, _) in context.items())
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE requests (card_id BIGINT, request_time TIMESTAMP{columns})")
        marks = ", ?" * len(context)
        for i in range(3):
            moment = (START + timedelta(hours=i)).replace(tzinfo=None)
            con.execute(f"INSERT INTO requests VALUES (?, ?{marks})", [i, moment, *(v for _, v in context.values())])
    return path


WITHOUT_AMOUNT = {"merchant_id": ("VARCHAR", "m1"), "auth_id": ("VARCHAR", "a1")}


def test_a_requests_table_without_a_required_context_column_is_refused_naming_it(
    fraud: UseCase, tmp_path: Path
) -> None:
    store = _store(tmp_path / "offline.duckdb", WITHOUT_AMOUNT)
    with open_offline(store) as con, pytest.raises(OfflineStoreError) as raised:
        prediction_requests(con, fraud, START, START + timedelta(days=1), table="requests")
    assert "'amount'" in raised.value.what and "requests" in raised.value.what
    assert "required: false" in (raised.value.fix or "")


def test_a_context_value_declared_not_required_may_be_absent_and_every_request_is_replayed(
    fraud: UseCase, tmp_path: Path
) -> None:
    optional = [c.model_copy(update={"required": False}) if c.name == "amount" else c for c in fraud.context]
    usecase = fraud.model_copy(update={"context": optional})
    store = _store(tmp_path / "offline.duckdb", WITHOUT_AMOUNT)
    with open_offline(store) as con:
        requests = prediction_requests(con, usecase, START, START + timedelta(days=1), table="requests")
    assert requests.num_rows == 3 and "amount" not in requests.column_names
    assert requests.column("merchant_id").to_pylist() == ["m1"] * 3


def test_a_requests_table_with_every_context_column_is_replayed_with_its_values(fraud: UseCase, tmp_path: Path) -> None:
    store = _store(tmp_path / "offline.duckdb", {"amount": ("DOUBLE", 12.5), **WITHOUT_AMOUNT})
    with open_offline(store) as con:
        requests = prediction_requests(con, fraud, START, START + timedelta(days=1), table="requests")
    assert requests.column("amount").to_pylist() == [12.5] * 3
    assert requests.column("card_id").to_pylist() == [0, 1, 2]
