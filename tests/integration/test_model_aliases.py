"""Model aliases on SQLite and PostgreSQL: promote, rollback, candidate, audit; verified moves; `migrate models`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import typer
from sklearn.ensemble import HistGradientBoostingClassifier
from typer.testing import CliRunner

from migrate.artifact import ArtifactInfo, ArtifactStore
from migrate.cli.models import models_app
from migrate.errors import AliasStoreError, InvalidAliasChangeError, ModelRefusedError
from migrate.models import lifecycle
from migrate.models.alias_store import AliasStore
from migrate.models.aliases import Aliases, AliasWatcher, ModelAlias
from migrate.registry import load_usecase
from migrate.settings import get_settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UC = "item_availability"
AS_OF = datetime(2026, 11, 14, 2, tzinfo=UTC)
WHO = {"actor": "test", "reason": "test", "source": "cli"}


@pytest.fixture
def store(sql_url: str) -> Iterator[AliasStore]:
    aliases = AliasStore(sql_url, timeout_s=5.0)
    aliases.ensure_schema()
    try:
        yield aliases
    finally:
        aliases.close()


def _t(n: int) -> tuple[str, str]:
    return (f"v{n}-{n:012d}", f"{n:064d}")


def test_promote_keeps_the_replaced_version_as_previous_and_rollback_swaps_them(store: AliasStore) -> None:
    assert store.get(UC) == {} and store.revision() == 0
    store.promote(UC, _t(2), serving=_t(1), **WHO)  # no live alias yet: what served by default becomes previous
    aliases = store.get(UC)
    assert (aliases["live"].version, aliases["previous"].version) == (_t(2)[0], _t(1)[0])
    first = store.revision()
    store.promote(UC, _t(3), **WHO)
    assert (store.get(UC)["live"].version, store.get(UC)["previous"].version) == (_t(3)[0], _t(2)[0])
    store.rollback(UC, **WHO)
    assert (store.get(UC)["live"].version, store.get(UC)["previous"].version) == (_t(2)[0], _t(3)[0])
    store.rollback(UC, **WHO)  # a second rollback undoes the first
    assert store.get(UC)["live"].version == _t(3)[0]
    assert store.revision() == first + 3
    history = store.history(UC)
    assert [(e.action, e.live_before, e.live_after) for e in history] == [
        ("rollback", _t(2)[0], _t(3)[0]),
        ("rollback", _t(3)[0], _t(2)[0]),
        ("promote", _t(2)[0], _t(3)[0]),
        ("promote", _t(1)[0], _t(2)[0]),
    ]
    assert {e.outcome for e in history} == {"applied"}


def test_promoting_the_live_version_changes_nothing_but_is_audited(store: AliasStore) -> None:
    store.promote(UC, _t(1), **WHO)
    revision = store.revision()
    store.promote(UC, _t(1), **WHO)
    assert store.revision() == revision and "previous" not in store.get(UC)
    assert store.history(UC, 1)[0].detail == "no change"


def test_rollback_without_a_previous_version_is_refused_and_audited(store: AliasStore) -> None:
    with pytest.raises(InvalidAliasChangeError) as caught:
        store.rollback(UC, **WHO)
    assert "no previous model" in caught.value.what and "promote" in (caught.value.fix or "")
    entry = store.history(UC, 1)[0]
    assert (entry.action, entry.outcome) == ("rollback", "refused")
    assert store.get(UC) == {}


def test_candidate_is_cleared_by_its_promotion_and_by_a_rejection(store: AliasStore) -> None:
    store.promote(UC, _t(1), **WHO)
    store.set_candidate(UC, _t(2), **WHO)
    store.promote(UC, _t(2), **WHO)
    assert set(store.get(UC)) == {"live", "previous"}
    store.set_candidate(UC, _t(3), **WHO)
    before = store.revision()
    assert store.reject_candidate(UC, **WHO) is not None
    assert "candidate" not in store.get(UC)
    assert store.revision() > before  # a watcher sees the rejection although no alias row carries it
    assert store.reject_candidate(UC, **WHO) is None


def test_the_audit_is_append_only_in_the_database(store: AliasStore, sql_url: str) -> None:
    store.promote(UC, _t(1), **WHO)
    engine = sa.create_engine(sql_url)
    try:
        for sql in ("UPDATE model_alias_audit SET reason = 'x'", "DELETE FROM model_alias_audit"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
                conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def test_malformed_changes_name_what_to_fix(store: AliasStore) -> None:
    with pytest.raises(InvalidAliasChangeError, match="needs a reason"):
        store.promote(UC, _t(1), actor="a", reason=" ", source="cli")
    with pytest.raises(InvalidAliasChangeError, match="is not a model version"):
        store.promote(UC, ("v1 bad", "0" * 64), **WHO)
    assert store.history(UC) == []


def test_an_unreachable_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(AliasStoreError) as caught:
        AliasStore(f"sqlite:///{tmp_path / 'dir.db'}", timeout_s=1).ensure_schema()
    assert "MIGRATE_SQL_URL" in (caught.value.fix or "")


class _Flaky:
    """The store, or its failure while ``down`` is set."""

    def __init__(self, store: AliasStore) -> None:
        self.store, self.down = store, False

    def revision(self) -> int:
        if self.down:
            raise AliasStoreError("the store is down", fix="none")
        return self.store.revision()

    def get_all(self) -> dict[tuple[str, str], ModelAlias]:
        return self.store.get_all()


def test_the_watcher_sees_each_change_and_keeps_the_last_aliases_when_the_store_fails(store: AliasStore) -> None:
    seen: list[str | None] = []

    def on_change(aliases: Aliases) -> None:
        seen.append(aliases[(UC, "live")].version if (UC, "live") in aliases else None)

    source = _Flaky(store)
    watcher = AliasWatcher(source, interval_s=3600, on_change=on_change).start()  # polled by hand below
    try:
        store.promote(UC, _t(1), **WHO)
        assert watcher.poll() and watcher.aliases[(UC, "live")].version == _t(1)[0]
        assert not watcher.poll()  # nothing moved
        source.down = True
        assert not watcher.poll() and watcher.errors == 1
        assert watcher.aliases[(UC, "live")].version == _t(1)[0]
    finally:
        watcher.stop()
    assert seen == [None, _t(1)[0]]


# -- verified moves over real artifacts ----------------------------------------------------------------------------


@pytest.fixture
def usecase() -> UseCase:
    return load_usecase(ROOT / "usecases" / f"{UC}.yaml")


def _fit(usecase: UseCase, seed: int, width: int | None = None) -> HistGradientBoostingClassifier:
    rng = np.random.default_rng(seed)
    x = rng.random((300, width or len(usecase.feature_names)))
    y = (x[:, 0] + 0.2 * rng.random(300) > 0.5).astype(int)
    return HistGradientBoostingClassifier(max_iter=10, random_state=seed).fit(x, y)


@pytest.fixture
def artifacts(tmp_path: Path, usecase: UseCase) -> tuple[ArtifactStore, list[ArtifactInfo]]:
    store = ArtifactStore(tmp_path / "artifacts", tmp_path)
    infos = [store.save(usecase, _fit(usecase, seed), trained_as_of=AS_OF, metrics={}) for seed in (1, 2)]
    return store, infos


def test_a_tampered_version_is_refused_audited_and_no_alias_moves(
    store: AliasStore, usecase: UseCase, artifacts: tuple[ArtifactStore, list[ArtifactInfo]]
) -> None:
    files, (v1, v2) = artifacts
    lifecycle.promote(store, files, usecase, v1.version, **WHO)
    path = files.root / UC / v2.file
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelRefusedError) as caught:
        lifecycle.promote(store, files, usecase, v2.version, **WHO)
    assert "sha256" in caught.value.what and v2.version in caught.value.what
    assert store.get(UC)["live"].version == v1.version
    entry = store.history(UC, 1)[0]
    assert (entry.action, entry.outcome, entry.version) == ("promote", "refused", v2.version)
    assert "sha256" in (entry.detail or "")


def test_a_feature_incompatible_version_is_refused(
    store: AliasStore, usecase: UseCase, artifacts: tuple[ArtifactStore, list[ArtifactInfo]]
) -> None:
    files, (v1, _) = artifacts
    lifecycle.promote(store, files, usecase, v1.version, **WHO)
    # A model one feature narrower than the use case declares, recorded under the declared names.
    narrow = files.save(usecase, _fit(usecase, 3, len(usecase.feature_names) - 1), trained_as_of=AS_OF, metrics={})
    with pytest.raises(ModelRefusedError, match=f"takes {len(usecase.feature_names) - 1} features"):
        lifecycle.promote(store, files, usecase, narrow.version, **WHO)
    # A model whose manifest declares other features than the use case does now.
    other = files.save(usecase, _fit(usecase, 4), trained_as_of=AS_OF, metrics={})
    manifest = files.root / UC / "manifest.json"
    entries = json.loads(manifest.read_text())
    entries[-1]["feature_names"][0] = "renamed_feature"
    manifest.write_text(json.dumps(entries))
    with pytest.raises(ModelRefusedError, match="renamed_feature"):
        lifecycle.set_candidate(store, files, usecase, other.version, **WHO)
    assert store.get(UC)["live"].version == v1.version and "candidate" not in store.get(UC)
    assert [e.outcome for e in store.history(UC, 2)] == ["refused", "refused"]


def test_a_verified_model_scores_as_its_estimator_bit_for_bit(
    usecase: UseCase, artifacts: tuple[ArtifactStore, list[ArtifactInfo]]
) -> None:
    files, (_, v2) = artifacts
    model = lifecycle.load_version(usecase, files, v2.version)
    assert model.forest is not None  # the fast path, proved against the estimator at load
    x = np.random.default_rng(9).random((40, len(usecase.feature_names)))
    x[::7, 2] = np.nan
    expected = _fit(usecase, 2).predict_proba(x)[:, 1]  # an independent fit of the same seed
    assert np.array_equal(model.score(x).view(np.uint64), expected.view(np.uint64))


def test_an_unknown_version_names_the_known_ones(
    usecase: UseCase, artifacts: tuple[ArtifactStore, list[ArtifactInfo]]
) -> None:
    files, (v1, v2) = artifacts
    with pytest.raises(InvalidAliasChangeError) as caught:
        lifecycle.load_version(usecase, files, "v9-000000000000")
    assert v1.version in (caught.value.fix or "") and v2.version in (caught.value.fix or "")


# -- the command line --------------------------------------------------------------------------------------------


def test_models_commands_list_promote_rollback_and_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, usecase: UseCase
) -> None:
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("MIGRATE_SQL_URL", raising=False)
    monkeypatch.setenv("USER", "carol")
    settings = get_settings()
    files = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    v1, v2 = (files.save(usecase, _fit(usecase, s), trained_as_of=AS_OF, metrics={"auc": 0.5}) for s in (1, 2))
    app = typer.Typer()
    app.add_typer(models_app, name="models")

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["models", *args])
        return result.exit_code, result.output

    code, out = run("list", UC)
    assert code == 0 and "live (default)" in out and v1.version in out
    code, out = run("promote", UC, "--reason", "no candidate yet")
    assert code == 1 and "no candidate model to promote" in out and "--version" in out
    assert run("candidate", UC, v1.version, "--reason", "retrained")[0] == 0
    code, out = run("promote", UC, "--reason", "better")  # the candidate by default
    assert code == 0 and f"live {v1.version}" in out and f"previous {v2.version}" in out
    code, out = run("rollback", UC, "--reason", "worse live")
    assert code == 0 and f"live {v2.version}" in out
    code, out = run("history", UC)
    assert code == 0 and "carol" in out and "rollback" in out and "promote" in out and "candidate" in out
    code, out = run("promote", UC, "--version", "v9-000000000000", "--reason", "typo")
    assert code == 1 and "no trained model version" in out and "fix:" in out


@pytest.mark.parametrize(
    ("decision", "live", "candidate"), [("promote", "v2", None), ("rollback", "v1", None), ("hold", "v1", "v2")]
)
def test_acting_on_the_verdict_promotes_rejects_or_keeps_the_candidate(
    store: AliasStore,
    usecase: UseCase,
    artifacts: tuple[ArtifactStore, list[ArtifactInfo]],
    decision: str,
    live: str,
    candidate: str | None,
) -> None:
    files, (v1, v2) = artifacts
    names = {"v1": v1.version, "v2": v2.version, None: None}
    assert lifecycle.act_on_verdict(store, files, usecase, "promote", "x", actor="a", source="verdict") is None
    lifecycle.promote(store, files, usecase, v1.version, **WHO)
    lifecycle.set_candidate(store, files, usecase, v2.version, **WHO)
    lifecycle.act_on_verdict(store, files, usecase, decision, "seeded", actor="shadow_report", source="verdict")
    aliases = store.get(UC)
    assert aliases["live"].version == names[live]
    assert (aliases["candidate"].version if "candidate" in aliases else None) == names[candidate]
    if decision != "hold":
        entry = store.history(UC, 1)[0]
        assert (entry.source, entry.outcome) == ("verdict", "applied") and "seeded" in entry.reason


def test_a_candidate_canary_share_is_stored_audited_and_bounded(store: AliasStore) -> None:
    store.set_candidate(UC, _t(2), percent=10, **WHO)
    assert store.get(UC)["candidate"].percent == 10
    assert store.history(UC, 1)[0].detail == "canary 10%"
    for bad in (0, 100, True):
        with pytest.raises(InvalidAliasChangeError, match="canary percent"):
            store.set_candidate(UC, _t(2), percent=bad, **WHO)  # type: ignore[arg-type]
    store.set_candidate(UC, _t(3), **WHO)  # a new candidate starts in the shadow only
    assert store.get(UC)["candidate"].percent is None
