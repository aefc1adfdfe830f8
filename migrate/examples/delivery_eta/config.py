"""What the delivery simulator simulates: how many restaurants, for how long, how often kitchens and roads slow down."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from migrate.examples.skeleton.generator import SimulatedDays

__all__ = ["SimulationConfig"]


class SimulationConfig(SimulatedDays):
    """How many restaurants to simulate, for how long, and how often kitchens and roads slow down."""

    STEP_DIVIDES: ClassVar[tuple[int, str]] = (30, "30 (the kitchen's load window)")

    restaurants: int = Field(default=40, ge=1)
    step_minutes: int = Field(default=5, ge=1, le=30)
    daily_orders: float = Field(default=60.0, gt=0, description="Mean orders per restaurant and day.")
    slowdowns_per_day: float = Field(default=0.6, ge=0, description="Kitchen slowdowns (1-2 h) per restaurant-day.")
    rain_per_day: float = Field(default=0.5, ge=0, description="City-wide rain spells (1-3 h, slower rides) per day.")
    new_restaurant_share: float = Field(default=0.05, ge=0, le=0.5, description="Opened after the last batch run.")
