"""What the grocery simulator simulates: how big a world, for how long, and how its shelves behave."""

from __future__ import annotations

from pydantic import Field

from migrate.examples.skeleton.generator import SimulatedDays

__all__ = ["SimulationConfig"]


class SimulationConfig(SimulatedDays):
    """How big a world to simulate, for how long, and how its shelves behave."""

    stores: int = Field(default=20, ge=1)
    products: int = Field(default=400, ge=1)
    new_product_share: float = Field(default=0.03, ge=0, le=0.5, description="Listed after the last batch run.")
    daily_demand: float = Field(default=12.0, gt=0, description="Units wanted per day at popularity 1, size 1.")
    scan_share: float = Field(default=0.35, gt=0, le=1, description="Shoppers who scan the item in the app.")
    restocks_per_day: float = Field(default=1.2, ge=0, description="Mid-day restock rounds per store and day.")
    sellout_found_probability: float = Field(default=0.07, ge=0, le=1, description="Found rate of an empty shelf.")
    phantom_share: float = Field(default=0.02, ge=0, le=1, description="Shelves empty although stock is counted.")
