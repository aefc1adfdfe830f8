"""The admin API over a real flag store (SQLite): who may grow the audit log, and whose address it records.

Before: 2,000 PUTs without a token to 2,000 invented use cases wrote 2,000 append-only rows, a GET was audited as
a refused change, a GET of an unknown use case answered 200 ``batch``, and X-Forwarded-For from loopback named
the actor.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from migrate.cutover.flag_store import FlagStore
from migrate.registry import load_usecase
from online.serving.app import ServingDeps, create_app
from online.serving.metrics import ServingMetrics

pytestmark = pytest.mark.unit

USECASE = load_usecase(Path(__file__).resolve().parents[3] / "usecases" / "item_availability.yaml")
NAME = USECASE.name
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHANGE = {"stage": "shadow", "reason": "admin test"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlagStore]:
    flags = FlagStore(f"sqlite:///{tmp_path / 'flags.db'}")
    flags.ensure_schema()
    yield flags
    flags.close()


def app_client(store: FlagStore, *, token: str | None = TOKEN, proxies: list[str] | None = None) -> TestClient:
    deps = ServingDeps(
        servers={},
        usecases={NAME: USECASE},
        metrics=ServingMetrics(CollectorRegistry()),
        flag_store=store,
        admin_token=token,
        readiness=dict,
        trusted_proxies=proxies or [],
    )
    # The peer is a loopback address, as a local proxy or a caller on the serving machine would be.
    return TestClient(create_app(deps), client=("127.0.0.1", 50000))


def refused(client: TestClient, reason: str) -> float:
    line = f'migrate_admin_refused_total{{reason="{reason}"}} '
    found = [row for row in client.get("/metrics").text.splitlines() if row.startswith(line)]
    return float(found[0].removeprefix(line)) if found else 0.0


def test_refused_callers_write_no_audit_rows_and_are_counted(store: FlagStore) -> None:
    client = app_client(store)
    for i in range(300):
        assert client.put(f"/v1/admin/flags/invented_{i}", json=CHANGE).status_code == 401
    for i in range(200):
        response = client.put(f"/v1/admin/flags/{NAME}", json=CHANGE, headers={"Authorization": f"Bearer no{i}"})
        assert response.status_code == 403
    assert app_client(store, token=None).put(f"/v1/admin/flags/{NAME}", json=CHANGE).status_code == 403
    assert store.history(limit=1_000) == []
    assert (refused(client, "missing_token"), refused(client, "wrong_token")) == (300, 200)
    assert store.get(NAME).revision == 0


def test_unknown_use_cases_are_404_for_get_and_put_and_write_no_rows(store: FlagStore) -> None:
    client = app_client(store)
    for i in range(50):
        assert client.put(f"/v1/admin/flags/invented_{i}", json=CHANGE, headers=AUTH).status_code == 404
        assert client.get(f"/v1/admin/flags/invented_{i}", headers=AUTH).status_code == 404
    assert store.history(limit=1_000) == []
    assert refused(client, "unknown_usecase") == 100


def test_reading_a_flag_is_not_audited(store: FlagStore) -> None:
    client = app_client(store)
    assert client.get(f"/v1/admin/flags/{NAME}").status_code == 401
    answer = client.get(f"/v1/admin/flags/{NAME}", headers=AUTH)
    assert answer.status_code == 200 and answer.json()["stage"] == "batch"
    assert store.history(limit=10) == []


def test_an_authenticated_change_is_audited_with_the_peer_address(store: FlagStore) -> None:
    client = app_client(store)
    forged = {**AUTH, "X-Forwarded-For": "203.0.113.9"}
    response = client.put(f"/v1/admin/flags/{NAME}", json=CHANGE, headers=forged)
    assert response.status_code == 200 and response.json()["stage"] == "shadow"
    refused_skip = client.put(f"/v1/admin/flags/{NAME}", json={"stage": "online_only", "reason": "x"}, headers=AUTH)
    assert refused_skip.status_code == 409  # a refused transition of a real use case by an admin stays audited
    entries = store.history(NAME, 10)
    assert [(e.outcome, e.actor) for e in entries] == [
        ("refused", "admin-api@127.0.0.1"),
        ("applied", "admin-api@127.0.0.1"),  # not the forwarded address: no proxy is trusted by default
    ]


def test_forwarded_for_names_the_client_only_behind_a_configured_proxy(store: FlagStore) -> None:
    client = app_client(store, proxies=["127.0.0.1"])
    headers = {**AUTH, "X-Forwarded-For": "203.0.113.9"}
    assert client.put(f"/v1/admin/flags/{NAME}", json=CHANGE, headers=headers).status_code == 200
    assert store.history(NAME, 1)[0].actor == "admin-api@203.0.113.9"
    other = app_client(store, proxies=["10.0.0.1"])  # a proxy list that does not hold this peer
    assert other.put(f"/v1/admin/flags/{NAME}", json=CHANGE, headers=headers).status_code == 200
    assert store.history(NAME, 1)[0].actor == "admin-api@127.0.0.1"
