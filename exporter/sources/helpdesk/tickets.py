"""Support KPIs from tickets and ratings: pure functions, no I/O.

Both helpdesk sources (Zendesk, Intercom) turn their objects into the records
below, so the same tickets give the same numbers whichever helpdesk holds them
(an Intercom conversation is a ticket here). Times are Unix seconds; a window is
the trailing 24 hours, 7 or 30 days ending now. Definitions:

- backlog            = unsolved tickets, by status and priority
- created / solved   = tickets created / solved in the window
- first reply time   = creation to the first agent reply, for tickets first
  replied to in the window (calendar time, or business hours when configured)
- resolution time    = creation to the last solve, for tickets solved in the window
- median, 90th percentile = linear interpolation between the closest ranks (the
  median of an even count is the mean of the middle two); an empty window has none
- within SLA         = share of the tickets solved in the window whose resolution
  time is at most their priority's target
- SLA breaches       = unsolved tickets older than their priority's target
- CSAT               = satisfied / all ratings given in the window (Zendesk "good"
  is satisfied; Intercom's 1-5 scale: 4 and 5 are satisfied)
- volume vs normal   = tickets created in the last 24 hours / the daily average
  of the 28 days before them
- volume change      = tickets created in the last 7 days / the 7 days before - 1
- backlog growth     = (tickets created - tickets solved) / tickets created over
  the last 7 days: the share of the week's tickets that piled up in the backlog

A share, ratio or percentile with nothing to divide or rank has no value (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOUR = 3600
DAY = 86400
PRIORITIES = ("urgent", "high", "normal", "low")
# The documented resolution targets ("critical tickets within 4 hours, normal within
# 24"); the catalog's support_resolution KPI holds the configurable copy.
SLA_TARGETS = {"urgent": 4 * HOUR, "high": 4 * HOUR, "normal": 24 * HOUR, "low": 24 * HOUR}
NORMAL_DAYS = 28  # "normal" ticket volume: the daily average over this many days
CHANGE_WINDOW = 7 * DAY  # week over week


@dataclass(frozen=True)
class Ticket:
    id: str
    status: str  # the upstream's own status, lowercase (new, open, pending, snoozed, ...)
    priority: str  # one of PRIORITIES
    created: int
    solved: int | None = None  # when it was last solved; None while unsolved
    first_reply: int | None = None  # when the first agent reply came; None before it
    # Time to the first reply and to the (last) solve, in calendar seconds or in
    # business-hours seconds, as the source is configured; None until they happen.
    first_reply_seconds: float | None = None
    resolution_seconds: float | None = None


@dataclass(frozen=True)
class Rating:
    id: str
    created: int  # when it was given
    satisfied: bool


def satisfied_by_score(score: int) -> bool:
    """A 1-5 rating (Intercom's conversation rating): 4 and 5 are satisfied."""
    if not 1 <= score <= 5:
        raise ValueError(f"a rating is 1 to 5, not {score}")
    return score >= 4


def quantile(values: list[float], q: float) -> float | None:
    """The q-quantile (0-1) by linear interpolation between closest ranks; None if empty.

    [10, 20, 30, 40]: median 25, 90th percentile 37 (rank 0.9 x 3 = 2.7: 30 + 0.7 x 10).
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def in_window(at: int | None, now: int, seconds: int) -> bool:
    """Whether a moment lies in the trailing window (now - seconds, now]."""
    return at is not None and now - seconds < at <= now


def backlog(tickets: list[Ticket]) -> dict[tuple[str, str], int]:
    """Unsolved tickets by (status, priority)."""
    counts: dict[tuple[str, str], int] = {}
    for ticket in tickets:
        if ticket.solved is None:
            key = (ticket.status, ticket.priority)
            counts[key] = counts.get(key, 0) + 1
    return counts


def created(tickets: list[Ticket], now: int, seconds: int) -> int:
    return sum(1 for t in tickets if in_window(t.created, now, seconds))


def solved(tickets: list[Ticket], now: int, seconds: int) -> int:
    return sum(1 for t in tickets if in_window(t.solved, now, seconds))


def first_reply_times(tickets: list[Ticket], now: int, seconds: int) -> dict[str, list[float]]:
    """{priority: first reply times} of the tickets first replied to in the window."""
    return _times(tickets, now, seconds, lambda t: (t.first_reply, t.first_reply_seconds))


def resolution_times(tickets: list[Ticket], now: int, seconds: int) -> dict[str, list[float]]:
    """{priority: resolution times} of the tickets solved in the window."""
    return _times(tickets, now, seconds, lambda t: (t.solved, t.resolution_seconds))


def _times(tickets: list[Ticket], now: int, seconds: int, moment) -> dict[str, list[float]]:
    """{priority: durations} of the tickets whose moment (when, how long) is in the window."""
    result: dict[str, list[float]] = {}
    for t in tickets:
        when, duration = moment(t)
        if duration is not None and in_window(when, now, seconds):
            result.setdefault(t.priority, []).append(duration)
    return result


def within_sla(times: dict[str, list[float]], targets: dict[str, float]) -> dict[str, float]:
    """{priority: share of the resolution times at most that priority's target}."""
    return {priority: sum(1 for s in values if s <= targets[priority]) / len(values)
            for priority, values in times.items() if values and priority in targets}


def sla_breaches(tickets: list[Ticket], now: int, targets: dict[str, float]) -> dict[str, int]:
    """{priority: unsolved tickets older than the priority's target}, every priority listed."""
    result = {priority: 0 for priority in targets}
    for t in tickets:
        if t.solved is None and t.priority in targets and now - t.created > targets[t.priority]:
            result[t.priority] += 1
    return result


@dataclass(frozen=True)
class Csat:
    satisfied: int
    rated: int

    @property
    def share(self) -> float | None:
        return self.satisfied / self.rated if self.rated else None


def csat(ratings: list[Rating], now: int, seconds: int) -> Csat:
    given = [r for r in ratings if in_window(r.created, now, seconds)]
    return Csat(sum(1 for r in given if r.satisfied), len(given))


def volume_vs_normal(tickets: list[Ticket], now: int) -> float | None:
    """Tickets created in the last day / the daily average of the NORMAL_DAYS before it."""
    today = created(tickets, now, DAY)
    before = created(tickets, now - DAY, NORMAL_DAYS * DAY)
    return today / (before / NORMAL_DAYS) if before else None


def volume_change(tickets: list[Ticket], now: int) -> float | None:
    """Tickets created in the last week / the week before, minus 1."""
    this_week = created(tickets, now, CHANGE_WINDOW)
    last_week = created(tickets, now - CHANGE_WINDOW, CHANGE_WINDOW)
    return this_week / last_week - 1 if last_week else None


def backlog_growth(tickets: list[Ticket], now: int) -> float | None:
    """(Tickets created - tickets solved) / tickets created, over the last week: the share
    of the week's tickets that piled up in the backlog (negative: it shrank)."""
    new = created(tickets, now, CHANGE_WINDOW)
    return (new - solved(tickets, now, CHANGE_WINDOW)) / new if new else None
