"""The numpy core of the delivery simulator: orders arrive in lunch and dinner peaks, kitchens queue and slow down.

An order's delivery time is its preparation (the kitchen's own pace, times its current load, times a slowdown
when one is on) plus the ride (distance at the city's current traffic) plus a wait for a courier. Load and
slowdowns last from half an hour to two hours: yesterday's averages cannot see them, the last hour's orders can.
One time step advances every restaurant at once; all randomness comes from one generator in a fixed call order,
so the same seed gives the same world and the same orders.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from migrate.examples.delivery_eta.config import SimulationConfig
from migrate.examples.skeleton.simulation import Bools, Floats, Ints, Times, day_starts, pick_new, start64, weekend

__all__ = ["CUISINES", "ZONES", "DayOrders", "Kitchens", "build_kitchens", "daily_curve", "simulate"]

CUISINES = ("pizza", "burger", "sushi", "thai", "indian", "salad", "mexican", "bakery")
_CUISINE_PREP = np.array([14.0, 10.0, 16.0, 13.0, 17.0, 8.0, 11.0, 7.0])  # typical minutes to prepare
ZONES = ("centre", "north", "south", "east", "west")
_ZONE_DISTANCE = np.array([1.8, 3.2, 3.6, 2.9, 4.1])  # typical km to the customer

_OPEN_HOURS = (10.0, 22.5)  # orders are taken from 10:00 to 22:30 UTC
_LOAD_WINDOW_MIN = 30  # the kitchen's queue: orders of the last half hour
_MINUTES_PER_KM = 2.4
_HANDOVER_MIN = 3.0  # parking, stairs, the door
_COURIER_WAIT_MIN = 2.5  # mean wait for a courier (exponential)


@dataclass(frozen=True)
class Kitchens:
    """Every restaurant's fixed traits (naive-UTC times)."""

    cuisine: Ints  # index into CUISINES
    zone: Ints  # index into ZONES
    created_at: Times
    is_new: Bools
    base_prep: Floats  # minutes, at no load
    distance_km: Floats  # typical distance of its customers
    orders_per_day: Floats
    capacity: Floats  # orders per half hour before the kitchen queues


@dataclass(frozen=True)
class DayOrders:
    """One simulated day of delivered orders, in delivery-time order."""

    delivered_at: Times
    restaurant: Ints  # index into the Kitchens arrays
    prep_minutes: Floats
    distance_km: Floats
    delivery_minutes: Floats


def build_kitchens(scale: SimulationConfig, start: datetime, cutoff: datetime, rng: np.random.Generator) -> Kitchens:
    """Draw restaurants; new ones open between 30 minutes and 12 hours after `cutoff` (the last batch run)."""
    n = scale.restaurants
    cuisine = rng.integers(0, len(CUISINES), n)
    zone = rng.integers(0, len(ZONES), n)
    is_new = pick_new(rng, n, scale.new_restaurant_share)
    age = (rng.uniform(30.0, 1500.0, n) * 86_400e6).astype("timedelta64[us]")
    opening = (rng.uniform(0.5, 12.0, n) * 3_600e6).astype("timedelta64[us]")
    created = np.where(is_new, start64(cutoff) + opening, start64(start) - age)
    volume = rng.lognormal(0.0, 0.5, n)
    return Kitchens(
        cuisine=cuisine.astype(np.int64),
        zone=zone.astype(np.int64),
        created_at=created,
        is_new=is_new,
        base_prep=np.round(_CUISINE_PREP[cuisine] * rng.lognormal(0.0, 0.2, n), 3),
        distance_km=np.round(_ZONE_DISTANCE[zone] * rng.lognormal(0.0, 0.2, n), 3),
        orders_per_day=scale.daily_orders * volume / volume.mean(),
        capacity=np.maximum(2.0, scale.daily_orders * volume / volume.mean() / 12.0 * rng.uniform(0.8, 1.4, n)),
    )


def daily_curve(step_minutes: int) -> Floats:
    """Share of a day's orders per step: closed outside 10:00-22:30, a lunch and a larger dinner peak."""
    hours = (np.arange(1440 // step_minutes) + 0.5) * step_minutes / 60.0
    shape = 0.15 + np.exp(-(((hours - 12.5) / 1.0) ** 2)) + 1.3 * np.exp(-(((hours - 19.5) / 1.3) ** 2))
    curve = np.where((hours >= _OPEN_HOURS[0]) & (hours < _OPEN_HOURS[1]), shape, 0.0)
    return np.asarray(curve / curve.sum(), dtype=np.float64)


def _episodes(
    rng: np.random.Generator, steps: int, step_minutes: int, units: int, *, rate: float, length_h: tuple[float, float]
) -> Floats:
    """A (steps, units) factor ≥ 1: random episodes (start in opening hours, length in hours, strength 1.5-2.5)."""
    factor = np.ones((steps, units), dtype=np.float64)
    counts = rng.poisson(rate, units)
    owner = np.repeat(np.arange(units), counts)
    start_h = rng.uniform(_OPEN_HOURS[0], _OPEN_HOURS[1] - 0.5, owner.size)
    length = rng.uniform(*length_h, owner.size)
    strength = rng.uniform(1.5, 2.5, owner.size)
    per_hour = 60 // step_minutes
    for who, begin, hours, how in zip(owner, start_h, length, strength, strict=True):
        lo, hi = int(begin * per_hour), min(steps, int((begin + hours) * per_hour))
        factor[lo:hi, who] = np.maximum(factor[lo:hi, who], how)
    return factor


def simulate(
    scale: SimulationConfig, start: datetime, kitchens: Kitchens, rng: np.random.Generator
) -> Iterator[DayOrders]:
    """Run the kitchens day by day and yield each day's delivered orders (by delivery time; the last day's late
    deliveries spill past midnight)."""
    n = kitchens.base_prep.size
    curve = daily_curve(scale.step_minutes)
    steps = curve.size
    step_us = scale.step_minutes * 60_000_000
    load_steps = max(1, _LOAD_WINDOW_MIN // scale.step_minutes)
    rush = 1.0 + 0.25 * curve / curve.max()  # the roads are busier when everyone orders
    created_us = kitchens.created_at.astype(np.int64)
    for day_start in day_starts(start, scale.days):
        day_factor = (1.2 if weekend(day_start) else 1.0) * rng.lognormal(0.0, 0.2, n)
        slow = _episodes(rng, steps, scale.step_minutes, n, rate=scale.slowdowns_per_day, length_h=(1.0, 2.0))
        rain = _episodes(rng, steps, scale.step_minutes, 1, rate=scale.rain_per_day, length_h=(1.0, 3.0))[:, 0]
        traffic = rush * (1.0 + (rain - 1.0) * 0.4)
        recent = np.zeros((load_steps, n), dtype=np.float64)
        parts: list[tuple[Times, Ints, Floats, Floats, Floats]] = []
        for k in range(steps):
            if curve[k] == 0.0:
                continue
            now = day_start + k * np.timedelta64(step_us, "us")
            active = created_us <= now.astype(np.int64)
            placed = rng.poisson(kitchens.orders_per_day * day_factor * curve[k] * active)
            recent[k % load_steps] = placed
            load = recent.sum(axis=0) / kitchens.capacity
            who = np.repeat(np.arange(n), placed)
            ordered = now + rng.integers(0, step_us, who.size).astype("timedelta64[us]")
            prep = kitchens.base_prep[who] * slow[k, who] * (1.0 + 0.6 * load[who]) * rng.lognormal(0.0, 0.15, who.size)
            distance = np.clip(kitchens.distance_km[who] * rng.lognormal(0.0, 0.4, who.size), 0.3, 20.0)
            ride = _HANDOVER_MIN + distance * _MINUTES_PER_KM * traffic[k] * rng.lognormal(0.0, 0.12, who.size)
            total = prep + ride + rng.exponential(_COURIER_WAIT_MIN, who.size)
            delivered = ordered + (total * 60e6).astype("timedelta64[us]")
            parts.append((delivered, who, np.round(prep, 2), np.round(distance, 2), np.round(total, 2)))
        if not parts:
            continue
        delivered_at, who, prep, distance, total = (np.concatenate(column) for column in zip(*parts, strict=True))
        order = np.lexsort((who, delivered_at))
        yield DayOrders(
            delivered_at=delivered_at[order],
            restaurant=who[order].astype(np.int64),
            prep_minutes=prep[order],
            distance_km=distance[order],
            delivery_minutes=total[order],
        )
