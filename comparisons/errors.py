"""The comparator's errors, leaves of the one ``MigrateError`` hierarchy: each says what, on which use case, the fix.

They live here until ``migrate/errors.py`` takes them in (its owner's call); they derive from ``MigrateError`` so
``friendly`` and every ``except MigrateError`` treat them like the rest.
"""

from __future__ import annotations

from migrate.errors import MigrateError

__all__ = ["ComparisonError", "InvalidWindowError", "NoShadowDataError", "PolicyMismatchError"]


class ComparisonError(MigrateError):
    """The comparison of a use case's batch and live paths could not be made."""


class NoShadowDataError(ComparisonError):
    """The shadow log holds no rows for the use case (in the window asked for)."""


class InvalidWindowError(ComparisonError):
    """The time window asked for is malformed (ends before it starts, or has no time zone)."""


class PolicyMismatchError(ComparisonError):
    """The cutover policy names a metric the use case's label kind has no meaning for."""
