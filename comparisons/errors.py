"""The comparator's errors, re-exported from ``migrate.errors`` (the one hierarchy), where they now live."""

from __future__ import annotations

from migrate.errors import ComparisonError, InvalidWindowError, NoShadowDataError, PolicyMismatchError

__all__ = ["ComparisonError", "InvalidWindowError", "NoShadowDataError", "PolicyMismatchError"]
