"""`migrate serve` on a port that is taken refuses before it starts anything, and names a free one.

Before: it started the embedded Redis and broker and loaded every model, then uvicorn exited 3 with "[Errno 98]".
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migrate.cli.main import app

pytestmark = pytest.mark.unit


def test_serve_on_a_taken_port_refuses_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(state))
    monkeypatch.delenv("MIGRATE_REDIS_URL", raising=False)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port)])
        assert result.exit_code == 1, result.output
        assert f"port {port} on 127.0.0.1 is already in use" in result.output
        free = int(re.search(r"migrate serve --port (\d+)", result.output).group(1))  # type: ignore[union-attr]
    assert free != port
    with socket.socket() as probe:  # the port it names could be bound when it said so
        probe.bind(("127.0.0.1", free))
    # Nothing was started: no embedded Redis or broker left a file in the state dir.
    assert not state.exists() or list(state.rglob("*")) == []


def test_serve_with_a_host_that_is_not_an_address_says_so() -> None:
    result = CliRunner().invoke(app, ["serve", "--host", "no-such-host.invalid", "--port", "8000"])
    assert result.exit_code == 1
    assert "is not an address of this machine" in result.output and "--host 127.0.0.1" in result.output
