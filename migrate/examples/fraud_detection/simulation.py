"""The numpy core of the card-fraud simulator: honest spending, stolen cards that burst, breached merchants.

Three sources of authorizations make one stream:

- **Honest spending.** Each card pays a few times a day, mostly in the daytime, at merchants chosen by
  popularity, amounts around the merchant's usual ticket.
- **Card compromises.** At a random moment a card's number is stolen; within minutes the thief makes a burst of
  authorizations, often at a few cash-out merchants (electronics, gift cards) and for larger amounts, and may come
  back for another burst hours later. Exposure grows with how much a card is used and is higher for young cards.
- **Merchant compromises.** A merchant's checkout is breached for a few hours: many cards' fraud goes through it.

Every fraudulent authorization is disputed (a chargeback) hours to days later; an honest one only rarely (friendly
fraud). A burst that started five minutes ago is invisible to last night's batch features; the card's and the
merchant's last minutes, and the request's amount, show it. All randomness comes from one generator in a fixed
call order, so the same seed gives the same world.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from migrate.examples.skeleton.simulation import Bools, Floats, Ints

__all__ = [
    "CHARGEBACK_DELAY_H",
    "Authorizations",
    "Chargebacks",
    "Population",
    "Rates",
    "World",
    "simulate_world",
]

Micros = Ints  # instants as microseconds since the epoch, naive UTC: plain integers for the arithmetic

CHARGEBACK_DELAY_H = (2.0, 70.0)  # a dispute arrives 2 to 70 hours after the authorization: within 3 days
_US_PER_H = 3_600_000_000
_US_PER_DAY = 24 * _US_PER_H
_BURST_GAP_S = 70.0  # mean seconds between a thief's authorizations
_REVISIT_H = (2.0, 48.0)  # a thief comes back for another burst this many hours later
_CASH_OUT_SHARE = 0.04  # merchants where stolen cards are turned into goods
_YOUNG_CARD_DAYS = 60.0  # cards younger than this are twice as exposed


@dataclass(frozen=True)
class Rates:
    """How busy the world is; the generator's configuration provides the values."""

    cards: int
    merchants: int
    days: int
    start_us: int  # midnight UTC of the first day
    auths_per_card_day: float
    compromises_per_card_day: float
    breaches_per_merchant_day: float
    friendly_chargeback_rate: float
    new_card_share: float


@dataclass(frozen=True)
class Population:
    """Cards and merchants with their fixed traits."""

    issued_us: Micros  # when each card was issued
    activity: Floats  # each card's mean authorizations per day
    exposure: Floats  # relative chance of being stolen
    popularity: Floats  # each merchant's share of honest traffic (sums to 1)
    ticket: Floats  # each merchant's usual amount
    cash_out: Ints  # indices of the cash-out merchants


@dataclass(frozen=True)
class Authorizations:
    """Every authorization in time order, with the simulation's truth."""

    at_us: Micros
    card: Ints
    merchant: Ints
    amount: Floats
    fraud: Bools
    breach: Bools  # fraud that went through a breached merchant (else honest or a stolen card's burst)


@dataclass(frozen=True)
class Chargebacks:
    """Every dispute that arrived before the end of the simulation, in time order."""

    at_us: Micros
    auth: Ints  # index into Authorizations


@dataclass(frozen=True)
class World:
    """Everything one seed draws; the generator writes the events and leaves the truth (``fraud``, ``breach``) out."""

    population: Population
    auths: Authorizations
    chargebacks: Chargebacks


def _population(rates: Rates, rng: np.random.Generator) -> Population:
    n, m = rates.cards, rates.merchants
    age_days = rng.uniform(1.0, 1400.0, n)
    issued = rates.start_us - (age_days * _US_PER_DAY).astype(np.int64)
    new = rng.random(n) < rates.new_card_share  # issued during the simulated days
    issued[new] = rates.start_us + (rng.uniform(0.0, rates.days - 1.0, int(new.sum())) * _US_PER_DAY).astype(np.int64)
    activity = rates.auths_per_card_day * rng.gamma(2.0, 0.5, n)
    young = np.where(age_days < _YOUNG_CARD_DAYS, 2.0, 1.0)
    young[new] = 2.0
    exposure = np.sqrt(activity / rates.auths_per_card_day) * young
    weight = rng.lognormal(0.0, 1.0, m)
    return Population(
        issued_us=issued,
        activity=activity,
        exposure=exposure / exposure.mean(),
        popularity=weight / weight.sum(),
        ticket=rng.lognormal(np.log(35.0), 0.5, m),
        cash_out=np.sort(rng.choice(m, size=max(1, round(_CASH_OUT_SHARE * m)), replace=False)).astype(np.int64),
    )


def _daytime(rng: np.random.Generator, size: int) -> Micros:
    """Offsets into a day for honest spending: few at night, most from 08:00 to 21:00."""
    hours = np.arange(24)
    shape = 0.08 + np.exp(-(((hours - 13.0) / 4.5) ** 2))
    hour = rng.choice(24, size=size, p=shape / shape.sum())
    return (hour * _US_PER_H + rng.integers(0, _US_PER_H, size)).astype(np.int64)


def _honest(rates: Rates, pop: Population, rng: np.random.Generator) -> Authorizations:
    """Each card's everyday spending: Poisson per day around its own activity, at popular merchants, usual tickets."""
    per_day = rng.poisson(np.repeat(pop.activity[None, :], rates.days, axis=0))  # (days, cards)
    day, card = np.nonzero(per_day)
    count = per_day[day, card]
    day, card = np.repeat(day, count), np.repeat(card, count)
    at = rates.start_us + day.astype(np.int64) * _US_PER_DAY + _daytime(rng, card.size)
    merchant = rng.choice(pop.popularity.size, size=card.size, p=pop.popularity)
    amount = pop.ticket[merchant] * rng.lognormal(0.0, 0.6, card.size)
    none = np.zeros(card.size, dtype=bool)
    return Authorizations(at, card.astype(np.int64), merchant.astype(np.int64), amount, none, none)


def _running_sum(values: Floats, sizes: Ints) -> Floats:
    """Cumulative sums of `values` restarting at each group (groups of `sizes` consecutive values)."""
    total = np.cumsum(values)
    first = np.cumsum(sizes) - sizes
    return np.asarray(total - np.repeat(total[first] - values[first], sizes), dtype=np.float64)


def _stolen_cards(rates: Rates, pop: Population, rng: np.random.Generator) -> Authorizations:
    """Bursts of a few authorizations within minutes, once or more per theft."""
    span_us = rates.days * _US_PER_DAY
    thefts = rng.poisson(rates.compromises_per_card_day * rates.days * pop.exposure)
    card = np.repeat(np.arange(thefts.size), thefts)
    first = np.maximum(pop.issued_us[card], rates.start_us) + rng.integers(0, span_us, card.size)
    visits = 1 + rng.poisson(1.0, card.size)
    theft = np.repeat(np.arange(card.size), visits)
    gaps = rng.uniform(*_REVISIT_H, theft.size) * _US_PER_H
    gaps[np.cumsum(visits) - visits] = 0.0  # the first visit is the theft itself
    burst_start = first[theft] + _running_sum(gaps, visits).astype(np.int64)
    sizes = 3 + rng.poisson(3.0, theft.size)
    burst = np.repeat(np.arange(theft.size), sizes)
    within = _running_sum(rng.exponential(_BURST_GAP_S * 1e6, burst.size), sizes).astype(np.int64)
    at = burst_start[burst] + within
    # A theft cashes out at two favourite cash-out merchants most of the time, elsewhere otherwise.
    favourites = rng.choice(pop.cash_out, size=(card.size, 2))
    pick = favourites[theft[burst], rng.integers(0, 2, burst.size)]
    anywhere = rng.choice(pop.popularity.size, size=burst.size, p=pop.popularity)
    merchant = np.where(rng.random(burst.size) < 0.7, pick, anywhere)
    amount = np.minimum(rng.lognormal(np.log(180.0), 0.8, burst.size), 5_000.0)
    yes = np.ones(burst.size, dtype=bool)
    return Authorizations(at, card[theft[burst]], merchant.astype(np.int64), amount, yes, ~yes)


def _breached_merchants(rates: Rates, pop: Population, rng: np.random.Generator) -> Authorizations:
    """A breached checkout: for 2 to 6 hours, 5 to 12 fraudulent authorizations an hour from many cards."""
    breaches = rng.poisson(rates.breaches_per_merchant_day * rates.merchants * rates.days)
    where = rng.choice(pop.popularity.size, size=breaches, p=pop.popularity)
    begin = rates.start_us + rng.integers(0, rates.days * _US_PER_DAY, breaches)
    hours = rng.uniform(2.0, 6.0, breaches)
    count = rng.poisson(rng.uniform(5.0, 12.0, breaches) * hours)
    breach = np.repeat(np.arange(breaches), count)
    at = begin[breach] + (rng.random(breach.size) * hours[breach] * _US_PER_H).astype(np.int64)
    card = rng.integers(0, pop.issued_us.size, breach.size)
    amount = rng.lognormal(np.log(90.0), 0.7, breach.size)
    yes = np.ones(breach.size, dtype=bool)
    return Authorizations(at, card.astype(np.int64), where[breach].astype(np.int64), amount, yes, yes)


_AUTH_COLUMNS = [f.name for f in fields(Authorizations)]


def _combine(rates: Rates, pop: Population, parts: list[Authorizations]) -> Authorizations:
    """One stream in time order (then card), inside the simulated days and after each card was issued."""
    joined = [np.concatenate([getattr(p, name) for p in parts]) for name in _AUTH_COLUMNS]
    at, card = joined[0], joined[1]
    end_us = rates.start_us + rates.days * _US_PER_DAY
    keep = (at >= rates.start_us) & (at < end_us) & (at > pop.issued_us[card])
    order = np.lexsort((card[keep], at[keep]))
    at_us, card_, merchant, amount, fraud, breach = (column[keep][order] for column in joined)
    return Authorizations(at_us, card_, merchant, np.round(amount, 2), fraud, breach)


def _chargebacks(rates: Rates, auths: Authorizations, rng: np.random.Generator) -> Chargebacks:
    disputed = auths.fraud | (rng.random(auths.fraud.size) < rates.friendly_chargeback_rate)
    index = np.flatnonzero(disputed).astype(np.int64)
    delay = (rng.uniform(*CHARGEBACK_DELAY_H, index.size) * _US_PER_H).astype(np.int64)
    at = auths.at_us[index] + delay
    arrived = at < rates.start_us + rates.days * _US_PER_DAY  # later ones arrive after the data ends
    order = np.lexsort((index[arrived], at[arrived]))
    return Chargebacks(at[arrived][order], index[arrived][order])


def simulate_world(rates: Rates, seed: int) -> World:
    """The whole seeded world: cards, merchants, every authorization and every chargeback that has arrived."""
    rng = np.random.default_rng(seed)
    pop = _population(rates, rng)
    parts = [_honest(rates, pop, rng), _stolen_cards(rates, pop, rng), _breached_merchants(rates, pop, rng)]
    auths = _combine(rates, pop, parts)
    return World(pop, auths, _chargebacks(rates, auths, rng))
