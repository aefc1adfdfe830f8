"""One error hierarchy: every error says what went wrong, on which object, and how to fix it."""

from __future__ import annotations


class MigrateError(Exception):
    """Base of every error the toolkit raises on purpose."""

    def __init__(self, what: str, *, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(what if fix is None else f"{what}\n  fix: {fix}")


class ConfigError(MigrateError):
    """A setting is missing or malformed."""


class MissingExtraError(ConfigError):
    """An optional dependency is not installed; names the extra that brings it."""


class PortInUseError(ConfigError):
    """A server was asked to listen on a port that something else already holds."""


class UseCaseError(MigrateError):
    """A use-case YAML file is invalid; names the file, the field and the fix."""

    def __init__(self, file: str, field: str, problem: str, *, fix: str) -> None:
        self.file = file
        self.field = field
        super().__init__(f"{file}: {field}: {problem}", fix=fix)


class UnknownUseCaseError(MigrateError):
    """No use case of that name is registered."""


class OfflineStoreError(MigrateError):
    """The offline store (DuckDB) lacks a table or column a use case declares."""


class OwnOutcomeKnownError(OfflineStoreError):
    """Training rows are predicted after an event naming them arrived: their outcome may be in their features."""

    def __init__(self, what: str, *, fix: str, count: int, rows: int, example: str) -> None:
        self.count = count
        self.rows = rows
        self.example = example
        super().__init__(what, fix=fix)


class ArtifactError(MigrateError):
    """A model artifact is missing, unreadable, or its hash does not match."""


class ModelOutputError(MigrateError):
    """A model answered something that is not a prediction (NaN or an infinity)."""


class LookupStoreError(MigrateError):
    """The lookup-table store failed or was asked for something it does not hold."""


class NoActiveVersionError(LookupStoreError):
    """A lookup table has no published version yet."""


class LookupStoreUnavailableError(LookupStoreError):
    """The lookup store's database cannot be reached or timed out."""


class InvalidChunkError(LookupStoreError):
    """A chunk of predictions cannot be written (missing column, null key, NaN prediction)."""


class DuplicateKeysError(LookupStoreError):
    """A lookup-table version holds the same key twice and cannot be published."""


class RollbackError(LookupStoreError):
    """There is no lookup-table version to roll back (or forward) to."""


class BatchValidationError(MigrateError):
    """A scored batch failed validation and was not published."""


class FeatureStoreError(MigrateError):
    """The online feature store failed or was asked for something it cannot hold."""


class FeatureStoreUnavailableError(FeatureStoreError):
    """The online feature store's server cannot be reached, refused the call or timed out."""


class CorrectionRejectedError(FeatureStoreError):
    """A write carried a different value for an event time already stored, and corrections were not allowed."""

    def __init__(self, what: str, *, fix: str, count: int, examples: list[str], report: object = None) -> None:
        self.count = count
        self.examples = examples
        self.report = report
        super().__init__(what, fix=fix)


class EmbeddedRedisError(FeatureStoreError):
    """The embedded Redis server could not be found, started or stopped."""


class CutoverError(MigrateError):
    """A cutover flag cannot be read, changed or stored."""


class InvalidFlagError(CutoverError):
    """A flag change is malformed: unknown stage, percent out of range or on the wrong stage, no reason."""


class TransitionRefusedError(CutoverError):
    """A flag change skips stages without ``force``; it was audited as refused and the flag is unchanged."""


class FlagStoreError(CutoverError):
    """The cutover flag store (tables ``cutover_flags`` / ``cutover_audit``) failed or timed out."""


class ModelAliasError(MigrateError):
    """A model alias (live, candidate, previous) cannot be read, changed or stored."""


class InvalidAliasChangeError(ModelAliasError):
    """An alias change is malformed or impossible: no reason, an unknown version, nothing to roll back to."""


class ModelRefusedError(ModelAliasError):
    """A model version failed its checks (sha256, declared features, probe); no alias moved to it."""


class AliasStoreError(ModelAliasError):
    """The model alias store (tables ``model_aliases`` / ``model_alias_audit``) failed or timed out."""


class BrokerError(MigrateError):
    """The Kafka broker (the team's or the embedded one) failed or cannot be reached."""


class BrokerStartError(BrokerError):
    """The embedded Tansu broker could not be started."""


class BrokerUnavailableError(BrokerError):
    """No Kafka broker answered at the bootstrap address within the timeout."""


class DeadLetterError(BrokerError):
    """A dead letter was not acknowledged; the stream processor stopped without committing past its event."""


class TopicError(BrokerError):
    """A Kafka topic could not be created or described."""


class TopicRecreatedError(TopicError):
    """Stream checkpoints count offsets of an earlier topic of the same name: resuming would skip or repeat events."""


class SinkError(MigrateError):
    """The shadow-log sink could not write a Parquet partition."""


class ComparisonError(MigrateError):
    """The comparison of a use case's batch and live paths could not be made."""


class NoShadowDataError(ComparisonError):
    """The shadow log holds no rows for the use case (in the window asked for)."""


class UnreadableLogError(ComparisonError):
    """A Parquet file of the shadow log or of its labels cannot be read (cut short, damaged, or not Parquet)."""


class InvalidWindowError(ComparisonError):
    """The time window asked for is malformed (ends before it starts, or has no time zone)."""


class PolicyMismatchError(ComparisonError):
    """The cutover policy names a metric the use case's label kind has no meaning for."""


class BacktestError(MigrateError):
    """A backtest could not be run as asked (a model that saw the period, no request in it, no history)."""
