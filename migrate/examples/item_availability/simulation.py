"""The numpy core of the grocery simulator: shelves sell down, get restocked, and shoppers scan them.

One time step advances every store x product at once, so the cost is (steps x entities) vector work and
no Python loop runs per entity. All randomness comes from one generator in a fixed call order: the same
seed gives the same world and the same events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from migrate.examples.item_availability.config import SimulationConfig
from migrate.examples.skeleton.simulation import (
    Bools,
    Floats,
    Ints,
    Strings,
    Times,
    day_starts,
    last_batch_cutoff,
    pick_new,
    start64,
    weekend,
)

__all__ = [
    "CATEGORIES",
    "REGIONS",
    "DayEvents",
    "World",
    "build_world",
    "daily_curve",
    "found_probability",
    "simulate",
]

CATEGORIES = (
    "produce",
    "dairy",
    "bakery",
    "meat",
    "frozen",
    "pantry",
    "beverages",
    "snacks",
    "household",
    "personal_care",
)
# Shelf space relative to a day's demand: fresh goods get small shelves, so they sell out before evening.
_CATEGORY_SHELF = np.array([0.7, 0.9, 0.6, 0.8, 1.2, 1.6, 1.3, 1.1, 1.8, 1.7])
REGIONS = ("north", "south", "east", "west", "central")

_HOUR = np.timedelta64(1, "h").astype("timedelta64[us]")
_DELIVERY_HOUR = 5  # the overnight truck is unloaded before opening
_MIDDAY_RESTOCK_HOURS = (11, 19)
_MISSED_DELIVERY = 0.03  # supply failures: the shelf stays as the evening left it
_RESTOCK_COVERAGE = 0.8  # a mid-day restock round misses some half-empty shelves
_PHANTOM_NOTICED = 0.4  # daily chance that staff find and fix a phantom shelf
_BEST_FOUND = 0.95  # even a full shelf is sometimes not found (wrong aisle, scanner misses)


@dataclass(frozen=True)
class World:
    """Stores, products and which store lists which product, since when (naive UTC)."""

    store_region: Strings
    store_size: Floats
    product_category: Ints  # index into CATEGORIES
    product_popularity: Floats
    product_listed_at: Times
    product_is_new: Bools
    entity_store: Ints  # index into the store arrays
    entity_product: Ints  # index into the product arrays
    entity_listed_at: Times


@dataclass(frozen=True)
class DayEvents:
    """One simulated day of scan events, in event-time order."""

    time: Times
    entity: Ints
    found: Bools


def build_world(scale: SimulationConfig, start: datetime, rng: np.random.Generator) -> World:
    """Draw stores, products, assortments and listing times; new products are listed after the last batch run."""
    n_stores, n_products = scale.stores, scale.products
    t0 = start64(start)
    store_region = np.array(REGIONS)[rng.integers(0, len(REGIONS), n_stores)]
    store_size = np.round(rng.uniform(0.5, 2.0, n_stores), 3)
    category = rng.integers(0, len(CATEGORIES), n_products)
    popularity = rng.lognormal(0.0, 0.9, n_products)
    popularity = np.round(popularity / popularity.mean(), 4)
    is_new = pick_new(rng, n_products, scale.new_product_share)
    age_days = rng.uniform(7.0, 1000.0, n_products)
    listed = t0 - (age_days * 86_400e6).astype("timedelta64[us]")
    # New products go live between 30 minutes and 14 hours after the last batch cutoff: no lookup row covers them.
    cutoff = start64(last_batch_cutoff(start, scale.days))
    launch = rng.uniform(0.5, 14.0, n_products) * 3_600e6
    listed = np.where(is_new, cutoff + launch.astype("timedelta64[us]"), listed)
    # Bigger stores carry more of the range; every product is carried somewhere.
    carry = 0.6 + 0.4 * (store_size - 0.5) / 1.5
    listing = rng.random((n_stores, n_products)) < carry[:, None]
    uncarried = ~listing.any(axis=0)
    listing[int(np.argmax(store_size)), uncarried] = True
    entity_store, entity_product = (a.astype(np.int64) for a in np.nonzero(listing))
    delay_old = rng.uniform(0.0, 3.0, entity_store.size) * 86_400e6
    delay_new = rng.uniform(0.0, 1.0, entity_store.size) * 3_600e6
    delay = np.where(is_new[entity_product], delay_new, delay_old).astype("timedelta64[us]")
    return World(
        store_region=store_region,
        store_size=store_size,
        product_category=category.astype(np.int64),
        product_popularity=popularity,
        product_listed_at=listed,
        product_is_new=is_new,
        entity_store=entity_store,
        entity_product=entity_product,
        entity_listed_at=listed[entity_product] + delay,
    )


def daily_curve(step_minutes: int) -> Floats:
    """Share of a day's shoppers per step: closed 22:00-07:00, a morning and a larger evening peak."""
    hours = (np.arange(1440 // step_minutes) + 0.5) * step_minutes / 60.0
    shape = 0.25 + np.exp(-(((hours - 9.5) / 1.5) ** 2)) + 1.4 * np.exp(-(((hours - 18.0) / 1.6) ** 2))
    curve = np.where((hours >= 7.0) & (hours < 22.0), shape, 0.0)
    return np.asarray(curve / curve.sum(), dtype=np.float64)


def found_probability(stock: Ints, phantom: Bools, floor: float) -> Floats:
    """Chance a shopper finds the item: low on an empty (or phantom) shelf, rising quickly with stock."""
    stocked = floor + (_BEST_FOUND - floor) * (1.0 - np.exp(-stock / 2.0))
    return np.where(phantom | (stock <= 0), floor, stocked)


def simulate(scale: SimulationConfig, start: datetime, world: World, rng: np.random.Generator) -> Iterator[DayEvents]:
    """Run the shelves day by day and yield each day's scan events (time order)."""
    n = world.entity_store.size
    size = world.store_size[world.entity_store]
    popularity = world.product_popularity[world.entity_product]
    shelf = _CATEGORY_SHELF[world.product_category][world.entity_product]
    # Local taste: the same product sells differently in different stores.
    demand_day = scale.daily_demand * popularity * size * rng.lognormal(0.0, 0.3, n)
    capacity = np.maximum(2, np.round(demand_day * shelf * rng.lognormal(0.0, 0.4, n))).astype(np.int64)
    scan_day = scale.scan_share * demand_day
    stock = capacity.copy()
    phantom = np.zeros(n, dtype=bool)
    curve = daily_curve(scale.step_minutes)
    steps = curve.size
    step_us = scale.step_minutes * 60_000_000
    step = np.timedelta64(step_us, "us")
    delivery_step = _DELIVERY_HOUR * 60 // scale.step_minutes
    restock_lo, restock_hi = (h * 60 // scale.step_minutes for h in _MIDDAY_RESTOCK_HOURS)
    listed_us = world.entity_listed_at.astype(np.int64)
    for day_start in day_starts(start, scale.days):
        day_factor = (1.25 if weekend(day_start) else 1.0) * rng.lognormal(0.0, 0.25, n)
        rounds = rng.poisson(scale.restocks_per_day, scale.stores)
        restock_at = np.zeros((steps, scale.stores), dtype=bool)
        round_steps = rng.integers(restock_lo, restock_hi, rounds.sum())
        restock_at[round_steps, np.repeat(np.arange(scale.stores), rounds)] = True
        times: list[Times] = []
        entities: list[Ints] = []
        founds: list[Bools] = []
        for k in range(steps):
            now = day_start + k * step
            if k == delivery_step:
                delivered = rng.random(n) >= _MISSED_DELIVERY
                stock = np.where(delivered, capacity, stock)
                # The system counts stock on a phantom shelf, so no delivery fixes it; staff notice it at random.
                phantom = (phantom & (rng.random(n) >= _PHANTOM_NOTICED)) | (rng.random(n) < scale.phantom_share)
            if curve[k] == 0.0:
                continue
            if restock_at[k].any():
                covered = rng.random(n) < _RESTOCK_COVERAGE
                refill = restock_at[k][world.entity_store] & (stock < capacity / 2) & covered
                stock = np.where(refill, capacity, stock)
                phantom &= ~refill
            active = listed_us <= now.astype(np.int64)
            p_found = found_probability(stock, phantom, scale.sellout_found_probability)
            scans = rng.poisson(scan_day * day_factor * curve[k] * active)
            demand = rng.poisson(demand_day * day_factor * curve[k] * active)
            # A phantom shelf is empty in the aisle although the system counts stock: nothing sells from it.
            stock = stock - np.where(phantom, 0, np.minimum(stock, demand))
            who = np.repeat(np.arange(n), scans)
            founds.append(rng.random(who.size) < p_found[who])
            times.append(now + rng.integers(0, step_us, who.size).astype("timedelta64[us]"))
            entities.append(who)
        day_times = np.concatenate(times) if times else np.array([], dtype="datetime64[us]")
        day_entities = np.concatenate(entities) if entities else np.array([], dtype=np.int64)
        day_found = np.concatenate(founds) if founds else np.array([], dtype=bool)
        order = np.lexsort((day_entities, day_times))
        yield DayEvents(time=day_times[order], entity=day_entities[order], found=day_found[order])
