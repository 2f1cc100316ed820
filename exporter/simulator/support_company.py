"""A simulated support desk, in no helpdesk's shape: the fake Zendesk and the fake
Intercom both serve it, each in its own API's shape.

    desk = generate_support(seed=9, now=now)
    desk.at(now)          # every ticket as it stands at `now`, deleted ones left out

Each ticket's life is planned when it is generated: when it arrives, when an
agent first replies, when it is solved and whether (and how) its requester rates
it. Some of those moments lie in the future, so the desk moves on by itself as
the clock runs: a fake asked at a later time sees new tickets, replies, solves
and ratings, and the exporter's incremental reads have changes to find.

The default (`calm`) desk sits inside every documented support threshold: about
6 tickets a day, every ticket solved within its priority's target (urgent and
high 4 hours, normal and low 24), ~95 % of ratings satisfied. A `SupportProfile`
with a spike or unhappy customers makes the support scenarios.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

HOUR = 3600
DAY = 86400

# Priority: share of tickets, median hours to first reply and to solve, and the
# documented resolution target that the calm desk always meets.
PRIORITY_PLAN = {
    "urgent": (0.05, 0.3, 1.5, 4 * HOUR),
    "high": (0.15, 0.5, 2.0, 4 * HOUR),
    "normal": (0.6, 1.5, 7.0, 24 * HOUR),
    "low": (0.2, 3.0, 10.0, 24 * HOUR),
}
# A replied, unsolved ticket waits in one of these (Zendesk's statuses).
WAITING_STATUSES = (("open", 0.6), ("pending", 0.3), ("hold", 0.1))
# Solved tickets close this long after their solve (Zendesk's default automation).
CLOSE_AFTER = 4 * DAY
# The fakes report business-hours metrics as this share of calendar time (8 of 24 hours).
BUSINESS_SHARE = 1 / 3


@dataclass(frozen=True)
class SupportProfile:
    """How the desk runs; the defaults are the calm demo desk."""

    tickets_per_day: float = 6.0
    rated_share: float = 0.5  # of solved tickets
    satisfied_share: float = 0.95  # ratings of 4 or 5
    deleted_share: float = 0.01  # spam, deleted a little after it arrived
    history_days: int = 45
    # A flood of tickets: this many times the usual rate over the last `spike_days`.
    spike_factor: float = 1.0
    spike_days: float = 0.0
    # Unhappy customers: the satisfied share of ratings given in the last `unhappy_days`.
    unhappy_share: float | None = None
    unhappy_days: float = 0.0


@dataclass(frozen=True)
class SupportTicket:
    id: int
    subject: str
    requester: str  # an email address
    priority: str  # urgent, high, normal, low
    created: int
    # Planned moments; any of them may lie after the time a fake is asked about.
    first_reply: int | None
    solved: int | None
    waiting_status: str  # its status once replied and before solved
    rating: int | None = None  # 1-5
    rated: int | None = None
    deleted: int | None = None


@dataclass(frozen=True)
class TicketView:
    """A ticket as it stands at one moment."""

    ticket: SupportTicket
    status: str  # new, open, pending, hold, solved, closed
    updated: int  # its last change up to that moment
    first_reply: int | None
    solved: int | None
    rating: int | None
    rated: int | None

    @property
    def id(self) -> int:
        return self.ticket.id


@dataclass
class SupportDesk:
    now: int  # when it was generated
    tickets: list[SupportTicket] = field(default_factory=list)

    def at(self, now: int) -> list[TicketView]:
        """Every ticket created by `now` and not deleted by then, as it stands then."""
        return [view for view in (view_at(t, now) for t in self.tickets if t.created <= now)
                if view is not None]

    def deleted_at(self, now: int) -> list[SupportTicket]:
        return [t for t in self.tickets if t.deleted is not None and t.deleted <= now]


def view_at(ticket: SupportTicket, now: int) -> TicketView | None:
    """The ticket at `now`; None before it arrives or once it is deleted."""
    if ticket.created > now or (ticket.deleted is not None and ticket.deleted <= now):
        return None
    reply = ticket.first_reply if ticket.first_reply is not None and ticket.first_reply <= now \
        else None
    solved = ticket.solved if ticket.solved is not None and ticket.solved <= now else None
    rated = ticket.rated if ticket.rated is not None and ticket.rated <= now else None
    if solved is not None:
        closed = solved + CLOSE_AFTER
        status = "closed" if closed <= now else "solved"
    elif reply is not None:
        status = ticket.waiting_status
    else:
        status = "new"
    moments = [ticket.created, reply, solved, rated]
    if status == "closed":
        moments.append(solved + CLOSE_AFTER)
    return TicketView(ticket, status, max(m for m in moments if m is not None), reply, solved,
                      ticket.rating if rated is not None else None, rated)


def generate_support(seed: int, now: int, profile: SupportProfile = SupportProfile()) -> SupportDesk:
    """A desk whose tickets arrive over the last `history_days` and the next 2 days."""
    rng = random.Random(seed)
    desk = SupportDesk(now=now)
    start = now - profile.history_days * DAY
    priorities = list(PRIORITY_PLAN)
    weights = [plan[0] for plan in PRIORITY_PLAN.values()]
    spike_from = now - profile.spike_days * DAY
    t = float(start)
    number = 0
    while t < now + 2 * DAY:
        # Steady arrivals, one in each slot of 1/rate days at a random point of it: a
        # calm day never looks like a spike by chance, as it could at random gaps.
        rate = profile.tickets_per_day * (profile.spike_factor if spike_from <= t < now else 1)
        slot = DAY / rate
        created = int(t + rng.uniform(0, slot))
        t += slot
        number += 1
        priority = rng.choices(priorities, weights)[0]
        _share, reply_hours, solve_hours, target = PRIORITY_PLAN[priority]
        reply = created + int(_bounded(rng, reply_hours * HOUR, target / 4))
        solved = reply + int(_bounded(rng, solve_hours * HOUR - (reply - created),
                                      target * 0.95 - (reply - created)))
        rating = rated = None
        if rng.random() < profile.rated_share:
            rated = solved + int(rng.uniform(0.2, 12) * HOUR)
            unhappy = profile.unhappy_share is not None and rated >= now - profile.unhappy_days * DAY
            satisfied = rng.random() < (profile.unhappy_share if unhappy else profile.satisfied_share)
            rating = rng.choice((4, 5, 5)) if satisfied else rng.choice((1, 2, 3))
        deleted = created + int(rng.uniform(0.1, 2) * HOUR) \
            if rng.random() < profile.deleted_share else None
        desk.tickets.append(SupportTicket(
            id=number, subject=f"Question {number}", requester=f"customer{number % 400}@example.com",
            priority=priority, created=created, first_reply=reply, solved=solved,
            waiting_status=rng.choices(*zip(*WAITING_STATUSES))[0],
            rating=rating, rated=rated, deleted=deleted))
    return desk


def _bounded(rng: random.Random, median: float, most: float) -> float:
    """A lognormal wait around `median`, at least a minute and at most `most`."""
    return min(max(median, 60.0) * math.exp(rng.gauss(0, 0.6)), max(most, 60.0))
