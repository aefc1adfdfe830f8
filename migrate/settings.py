"""Settings: one typed model read from the environment (``MIGRATE_*``), then ``migrate.yaml``, then defaults.

Every piece of runtime state lives under ``state_dir`` (default ``.migrate/``): the SQLite lookup store,
the DuckDB offline store, model artifacts, batch snapshots and the embedded Airflow home.

``profile`` says whether stand-ins are allowed. ``dev`` (the default): without ``MIGRATE_SQL_URL`` the lookup store
is SQLite under the state dir, without ``MIGRATE_REDIS_URL`` or ``MIGRATE_KAFKA_BOOTSTRAP`` an embedded Redis or
broker is started, each with one warning line. ``production``: the settings refuse to load without all three, so
no process ever runs on a stand-in by accident.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from migrate.errors import ConfigError

CONFIG_FILE = "migrate.yaml"
# The setting each stand-in replaces: (field, environment variable, the stand-in).
STAND_INS = (
    ("sql_url", "MIGRATE_SQL_URL", "a SQLite file under the state dir"),
    ("redis_url", "MIGRATE_REDIS_URL", "an embedded Redis"),
    ("kafka_bootstrap", "MIGRATE_KAFKA_BOOTSTRAP", "an embedded in-memory Kafka-protocol broker"),
)

log = logging.getLogger(__name__)
_warned: set[str] = set()  # stand-ins already announced by this process


def _project_dir() -> Path:
    return Path(os.environ.get("MIGRATE_PROJECT_DIR", os.getcwd())).resolve()


class Settings(BaseSettings):
    """Where the toolkit keeps its state and which servers it talks to."""

    model_config = SettingsConfigDict(env_prefix="MIGRATE_", extra="forbid", frozen=True)

    profile: Literal["dev", "production"] = Field(
        default="dev",
        description="production: a missing SQL, Redis or Kafka URL is an error, never an embedded stand-in.",
    )
    project_dir: Path = Field(default_factory=_project_dir)
    state_dir: Path = Path(".migrate")
    usecases_dir: Path = Path("usecases")
    dags_folder: Path | None = Field(
        default=None, description="Folder of the DAG files; default: the source tree's dags/, else the installed copy."
    )
    sql_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL of the lookup store; default: SQLite under state_dir."
    )
    offline_store: Path | None = Field(default=None, description="DuckDB file; default: state_dir/offline.duckdb")
    snapshot_memory: str = Field(
        default="2GB",
        pattern=r"^[0-9]+(\.[0-9]+)?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="DuckDB's memory while it writes a batch or materialization snapshot (e.g. 512MB, 2GB); beyond "
        "it the sort spills to disk beside the snapshot. Lower it on a small worker.",
    )
    keep_versions: int = Field(default=3, ge=1, description="Previous lookup versions kept for rollback.")
    chunk_size: int = Field(default=100_000, ge=1_000, description="Entities scored per chunk (one mapped task).")
    sql_timeout_s: float = Field(default=10.0, gt=0, description="Connect and lock timeout of the SQL store.")
    lookup_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="How long a served request waits for its lookup-table read before answering the timeout as the "
        "batch path's error (the read itself goes on in its thread, up to the SQL store's statement timeout).",
    )
    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port] of the team's Kafka; default: an embedded Tansu broker."
    )
    kafka_bootstrap_file: Path | None = Field(
        default=None,
        description="The embedded broker's broker.json, which names its current port; set by `migrate serve` for "
        "its workers so that the shadow log follows a broker restarted on another port.",
    )
    kafka_timeout_s: float = Field(default=5.0, gt=0, description="Connect, request and admin timeout for Kafka.")
    shadow_topic_prefix: str = Field(default="migrate.shadow.", pattern=r"^[A-Za-z0-9._-]*$")
    labels_topic_prefix: str = Field(default="migrate.labels.", pattern=r"^[A-Za-z0-9._-]*$")
    events_topic_prefix: str = Field(default="migrate.events.", pattern=r"^[A-Za-z0-9._-]*$")
    dead_letter_topic_prefix: str = Field(default="migrate.dlq.", pattern=r"^[A-Za-z0-9._-]*$")
    stream_checkpoint_events: int = Field(default=5_000, ge=1, description="Events per stream checkpoint (at most).")
    stream_checkpoint_interval_s: float = Field(
        default=0.1, gt=0, description="Longest wait between stream checkpoints (bounds feature freshness)."
    )
    stream_catch_up_checkpoint_events: int = Field(
        default=50_000,
        ge=1,
        description="While the processor is behind (more than stream_checkpoint_events waiting at the broker): a "
        "checkpoint once this many events are pending, and the most one poll takes. Fewer, larger checkpoints, each "
        "writing a state once however many of its events it holds.",
    )
    stream_catch_up_checkpoint_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Longest wait between stream checkpoints while the processor is behind; caught up, "
        "stream_checkpoint_interval_s bounds freshness again.",
    )
    shadow_queue_size: int = Field(default=10_000, ge=1, description="Shadow records buffered before dropping.")
    shadow_cpu: Literal["idle", "nice"] = Field(
        default="idle",
        description="CPU policy of each worker's shadow comparison process. `nice`: a lower priority "
        "(MIGRATE_SHADOW_NICENESS); `idle`: Linux's SCHED_IDLE, it runs only on CPU nothing else wants, so on a "
        "saturated machine comparisons are skipped (counted) rather than slowing answers. Where SCHED_IDLE does "
        "not exist, `idle` falls back to niceness 19.",
    )
    shadow_cpu_budget: float = Field(
        default=0.0,
        ge=0.0,
        le=64.0,
        description="The most CPU each worker's shadow comparison process may take, in cores (0.25: a quarter of "
        "one core, its threads together), whatever the machine leaves idle: it pauses between comparisons when it "
        "is over, and what queues meanwhile is compared together or skipped (counted). 0: no budget.",
    )
    shadow_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Nice value added to each worker's shadow comparison process: the CPU prefers serving over "
        "comparing (a comparison that falls behind is skipped and counted, never waited for). 0: same priority.",
    )
    sink_flush_records: int = Field(default=10_000, ge=1, description="Records per Parquet file (at most).")
    sink_flush_interval_s: float = Field(default=30.0, gt=0, description="Longest wait before a partial flush.")
    redis_url: SecretStr | None = Field(
        default=None, description="Redis URL of the online feature store; default: an embedded Redis under state_dir."
    )
    redis_timeout_s: float = Field(default=0.05, gt=0, description="Socket timeout of feature-store reads.")
    redis_connect_timeout_s: float = Field(default=1.0, gt=0, description="Connect timeout of the feature store.")
    redis_write_timeout_s: float = Field(default=30.0, gt=0, description="Socket timeout of feature-store writes.")
    redis_retries: int = Field(default=1, ge=0, le=5, description="Retries of a failed feature-store call.")
    clock_start: AwareDatetime | None = Field(
        default=None, description="Simulated time of the serving clock at clock_wall (demos); unset: wall clock."
    )
    clock_wall: float | None = Field(default=None, description="Unix time at which the clock reads clock_start.")
    clock_speed: float = Field(default=1.0, gt=0, description="Simulated seconds per wall second.")
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the service's admin API; unset: the admin API refuses all."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses (or networks) of the proxies whose X-Forwarded-For names the client; "
        "comma-separated in the environment. Empty: the peer's address is the client's.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = _project_dir() / CONFIG_FILE
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))

    @field_validator("state_dir", "usecases_dir", "offline_store", "dags_folder", "kafka_bootstrap_file", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None, info: Any) -> Path | None:
        if value is None or value.is_absolute():
            return value
        project = info.data.get("project_dir") or _project_dir()
        return (Path(project) / value).resolve()

    @model_validator(mode="after")
    def _no_stand_ins_in_production(self) -> Settings:
        if self.profile == "production":
            missing = [env for name, env, _ in STAND_INS if getattr(self, name) is None or getattr(self, name) == ""]
            if missing:
                raise ConfigError(
                    f"MIGRATE_PROFILE=production but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                    "set: production never runs on an embedded stand-in",
                    fix=f"set {', '.join(missing)} (environment or migrate.yaml), or unset MIGRATE_PROFILE on a laptop",
                )
        return self

    def stand_in(self, setting: str) -> None:
        """Allow the stand-in for `setting` (``sql_url``, ``redis_url``, ``kafka_bootstrap``) or refuse it.

        Raises:
            ConfigError: the production profile (settings copied without a URL after loading end up here).
        """
        env, what = next((env, what) for name, env, what in STAND_INS if name == setting)
        if self.profile == "production":
            raise ConfigError(
                f"{env} is not set and MIGRATE_PROFILE=production: {what} would stand in for it",
                fix=f"set {env}",
            )

    def warn_stand_in(self, setting: str, detail: str) -> None:
        """Log once per process and setting that a stand-in is in use (dev profile)."""
        if setting in _warned:
            return
        _warned.add(setting)
        env, what = next((env, what) for name, env, what in STAND_INS if name == setting)
        log.warning(
            "%s is not set: using %s (%s). Fine on a laptop; in production set %s and MIGRATE_PROFILE=production.",
            env,
            what,
            detail,
            env,
        )

    @property
    def sql_url_value(self) -> str:
        """The SQLAlchemy URL of the lookup store (the secret, unmasked); SQLite under the state dir in dev.

        Raises:
            ConfigError: no ``sql_url`` under the production profile.
        """
        if self.sql_url is not None:
            return self.sql_url.get_secret_value()
        self.stand_in("sql_url")
        path = self.state_dir / "lookup.db"
        self.warn_stand_in("sql_url", str(path))
        return f"sqlite:///{path}"

    @property
    def dags_path(self) -> Path:
        """The DAG files: ``dags_folder`` if set, else ``dags/`` of a source checkout, else the wheel's copy."""
        if self.dags_folder is not None:
            return self.dags_folder
        package = Path(__file__).resolve().parent
        source = package.parent / "dags"
        return source if (source / "batch_predictions.py").is_file() else package / "_dags"

    @property
    def offline_store_path(self) -> Path:
        return self.offline_store or self.state_dir / "offline.duckdb"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def snapshots_dir(self) -> Path:
        return self.state_dir / "snapshots"

    @property
    def shadow_dir(self) -> Path:
        return self.state_dir / "shadow"

    @property
    def labels_dir(self) -> Path:
        return self.state_dir / "labels"

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``, from the SQL URL."""
        return self.sql_url_value.split(":", 1)[0].split("+", 1)[0]

    def ensure_state_dir(self) -> Path:
        """Create the state directory (and nothing outside it)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.state_dir


def get_settings(**overrides: Any) -> Settings:
    """Read settings now (env and file may have changed since the last call).

    Raises:
        ConfigError: a setting is malformed or out of range, or migrate.yaml has a key that is no setting; names
            the variable, the file key and the fix.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from None


def _config_error(exc: ValidationError) -> ConfigError:
    problems: list[str] = []
    names: list[str] = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        if error["type"] == "extra_forbidden":
            problems.append(f"{CONFIG_FILE} key {field!r} is not a setting")
            continue
        variable = f"MIGRATE_{field.upper()}"
        names.append(variable)
        secret = Settings.model_fields.get(field) is not None and Settings.model_fields[field].annotation in (
            SecretStr,
            SecretStr | None,
        )
        given = "" if secret else f" (got {error.get('input')!r})"
        problems.append(f"{variable} (or {field} in {CONFIG_FILE}): {error['msg']}{given}")
    fix = f"correct or unset {', '.join(names)}" if names else f"remove the unknown keys from {CONFIG_FILE}"
    return ConfigError("invalid settings: " + "; ".join(problems), fix=f"{fix}; docs/operations.md#settings lists them")
