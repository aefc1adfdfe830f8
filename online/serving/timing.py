"""Where a request's time went, for the client: the ``Server-Timing`` header (W3C Server Timing).

The predict route puts a `ServerTiming` in `REQUEST_TIMING` before it calls the use case's server; the server fills
in the parts that ran (the online path's feature read and model, the lookup read), and the route answers with
``Server-Timing: features;dur=…, model;dur=…, lookup;dur=…, total;dur=…`` (milliseconds), so a slow answer can be
attributed from the client. Entities coalesced with other requests' share one call: its times are that call's.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["REQUEST_TIMING", "ServerTiming"]


@dataclass(slots=True)
class ServerTiming:
    """The parts of one predict request that ran, in milliseconds (None: that part did not run)."""

    features_ms: float | None = None
    model_ms: float | None = None
    lookup_ms: float | None = None

    def header(self, total_ms: float) -> str:
        """The ``Server-Timing`` value: each part that ran, then the total inside the route."""
        parts = (("features", self.features_ms), ("model", self.model_ms), ("lookup", self.lookup_ms))
        ran = [f"{name};dur={ms:.3f}" for name, ms in parts if ms is not None]
        return ", ".join([*ran, f"total;dur={total_ms:.3f}"])


REQUEST_TIMING: ContextVar[ServerTiming | None] = ContextVar("migrate_request_timing", default=None)
