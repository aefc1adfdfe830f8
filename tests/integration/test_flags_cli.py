"""``migrate flags`` through Typer's runner, against a SQLite store in a private state dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from migrate.cli.flags import flags_app
from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Stage
from migrate.settings import get_settings

pytestmark = pytest.mark.integration

UC = "item_availability"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("MIGRATE_SQL_URL", raising=False)
    monkeypatch.setenv("USER", "carol")
    app = typer.Typer()
    app.add_typer(flags_app, name="flags")  # as the main CLI registers it
    return app


def _run(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["flags", *args])
    return result.exit_code, result.output


_OPEN: list[FlagStore] = []


def _store() -> FlagStore:
    store = FlagStore.from_settings(get_settings())
    _OPEN.append(store)
    return store


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    """Stores opened by a test are closed after it (a pooled PostgreSQL connection must not reach the GC open)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def test_set_show_and_history(cli: typer.Typer) -> None:
    code, out = _run(cli, "show")
    assert code == 0, out
    assert UC in out and "batch" in out and "never set" in out

    code, out = _run(cli, "set", UC, "--stage", "shadow", "--reason", "shadow metrics wanted")
    assert code == 0, out
    assert "item_availability is at shadow (revision 1)" in out
    code, out = _run(cli, "set", UC, "--stage", "canary", "--percent", "5", "--reason", "shadow OK", "--actor", "dave")
    assert code == 0 and "canary 5%" in out, out

    flag = _store().get(UC)
    assert (flag.stage, flag.percent, flag.updated_by, flag.reason) == (Stage.CANARY, 5, "dave", "shadow OK")
    entries = _store().history(UC)
    assert [(e.source, e.actor) for e in entries] == [("cli", "dave"), ("cli", "carol")]  # $USER by default

    code, out = _run(cli, "show", UC)
    assert code == 0 and "canary" in out and "5%" in out and "dave" in out, out
    code, out = _run(cli, "history", UC, "--limit", "1")
    assert code == 0, out
    assert "shadow → canary 5%" in out and "applied" in out and "batch → shadow" not in out
    code, out = _run(cli, "history")
    assert code == 0 and "batch → shadow" in out, out


def test_skipping_needs_force_and_both_attempts_are_audited(cli: typer.Typer) -> None:
    code, out = _run(cli, "set", UC, "--stage", "online", "--reason", "confident")
    assert code == 1
    assert "batch → online skips shadow, canary" in out and "fix:" in out and "--force" in out
    assert "Traceback" not in out
    assert _store().get(UC).stage is Stage.BATCH

    code, out = _run(cli, "set", UC, "--stage", "online", "--reason", "confident", "--force")
    assert code == 0, out
    assert [e.outcome for e in _store().history(UC)] == ["applied", "refused"]
    code, out = _run(cli, "history", UC)
    assert "refused" in out and "forced: skips" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stage", "canary", "--reason", "r"], "needs a percentage"),
        (["--stage", "canary", "--percent", "0", "--reason", "r"], "out of range"),
        (["--stage", "shadow", "--percent", "10", "--reason", "r"], "only applies to the canary stage"),
        (["--stage", "shadow", "--reason", " "], "needs a reason"),
    ],
)
def test_malformed_changes_fail_with_a_fix(cli: typer.Typer, args: list[str], message: str) -> None:
    code, out = _run(cli, "set", UC, *args)
    assert code == 1
    assert message in out and "fix:" in out and "Traceback" not in out
    assert _store().history() == []


def test_unknown_use_case_and_unknown_stage(cli: typer.Typer) -> None:
    code, out = _run(cli, "set", "no_such_usecase", "--stage", "shadow", "--reason", "r")
    assert code == 1 and "no use case 'no_such_usecase'" in out and "fix:" in out
    code, out = _run(cli, "set", UC, "--stage", "live", "--reason", "r")
    assert code == 2 and "live" in out  # Typer's own usage error lists the stages
    code, out = _run(cli, "show", "no_such_usecase")
    assert code == 1 and "no use case" in out
