"""The samples both helpdesk sources export: one function from tickets and ratings to metrics.

Zendesk and Intercom each turn their objects into `tickets.Ticket` and
`tickets.Rating` records; from there on everything is shared, so one dashboard
and one set of alerts serve either (the `source` label tells them apart).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from exporter import catalog
from exporter.sources.base import Sample
from exporter.sources.helpdesk import tickets
from exporter.sources.helpdesk.tickets import DAY, Rating, Ticket

WINDOWS = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
# How far back a source must keep solved tickets and ratings: the longest window
# (the volume baseline, 24 hours + 28 days, fits inside it).
LOOKBACK = max(WINDOWS.values())


@dataclass(frozen=True)
class HelpdeskOptions:
    # priority -> resolution target in seconds (the catalog's support_resolution targets)
    sla_targets: dict[str, float] = field(default_factory=lambda: dict(tickets.SLA_TARGETS))


@dataclass(frozen=True)
class HelpdeskData:
    """One poll's records: the tickets a source keeps and the ratings in the lookback."""

    tickets: list[Ticket]
    ratings: list[Rating]


def helpdesk_options(config: Any) -> HelpdeskOptions:
    """The SLA targets from the (overridden) catalog."""
    resolution = catalog.by_key(config.kpis)["support_resolution"]
    return HelpdeskOptions(sla_targets=dict(resolution.targets))


def keep(ticket: Ticket, now: int) -> bool:
    """Whether a source still needs the ticket: unsolved, or created or solved in the lookback."""
    since = now - LOOKBACK
    return ticket.solved is None or ticket.solved > since or ticket.created > since


def samples(source: str, data: HelpdeskData, now: int,
            options: HelpdeskOptions = HelpdeskOptions()) -> list[Sample]:
    def sample(kpi: str, value: float, **labels: str) -> Sample:
        return Sample(kpi, {"source": source, **labels}, float(value))

    found = data.tickets
    result = [sample("support_open_tickets", count, status=status, priority=priority)
              for (status, priority), count in sorted(tickets.backlog(found).items())]
    result += [sample("support_sla_breaches", count, priority=priority)
               for priority, count in tickets.sla_breaches(found, now, options.sla_targets).items()]

    for window, seconds in WINDOWS.items():
        result += [sample("support_tickets_created", tickets.created(found, now, seconds),
                          window=window),
                   sample("support_tickets_solved", tickets.solved(found, now, seconds),
                          window=window)]
        resolutions = tickets.resolution_times(found, now, seconds)
        for kpi, times in (("support_first_reply",
                               tickets.first_reply_times(found, now, seconds)),
                              ("support_resolution", resolutions)):
            result += _percentiles(sample, kpi, window, times)
        result += [sample("support_resolution_within_sla", share, priority=priority,
                          window=window)
                   for priority, share in _by_priority(
                       tickets.within_sla(resolutions, options.sla_targets))]
        given = tickets.csat(data.ratings, now, seconds)
        result.append(sample("support_ratings", given.rated, window=window))
        if given.share is not None:
            result.append(sample("support_csat", given.share, window=window))

    for kpi, window, value in (
            ("support_ticket_volume_vs_normal", "24h", tickets.volume_vs_normal(found, now)),
            ("support_ticket_volume_change", "7d", tickets.volume_change(found, now)),
            ("support_backlog_growth", "7d", tickets.backlog_growth(found, now))):
        if value is not None:
            result.append(sample(kpi, value, window=window))
    return result


# What a past moment's records cannot say: a ticket's status then (backfill).
NOT_BACKFILLED = frozenset({"support_open_tickets"})


def as_of(ticket: Ticket, at: int) -> Ticket | None:
    """The ticket as it stood at `at` (None before it was created): what happened
    later is taken away. Its status then is not known, so it stays as it is now."""
    if ticket.created > at:
        return None
    replied = ticket.first_reply is not None and ticket.first_reply <= at
    solved = ticket.solved is not None and ticket.solved <= at
    return dataclasses.replace(
        ticket, first_reply=ticket.first_reply if replied else None,
        first_reply_seconds=ticket.first_reply_seconds if replied else None,
        solved=ticket.solved if solved else None,
        resolution_seconds=ticket.resolution_seconds if solved else None)


def samples_at(source: str, data: HelpdeskData, at: int,
               options: HelpdeskOptions = HelpdeskOptions()) -> list[Sample]:
    """The samples of a past moment from today's records (see backfill.py): every KPI
    but the backlog by status. A ticket deleted since, or a rating changed since, is
    seen as it is now."""
    then = HelpdeskData([t for t in (as_of(t, at) for t in data.tickets) if t is not None],
                        [r for r in data.ratings if r.created <= at])
    return [s for s in samples(source, then, at, options) if s.kpi not in NOT_BACKFILLED]


# The `percentile` label's values, and the quantile each is. Not `quantile`: the
# exposition format keeps that label for summaries, and these are gauges.
PERCENTILES = (("50", 0.5), ("90", 0.9))


def _percentiles(sample, kpi: str, window: str, times: dict[str, list[float]]) -> list[Sample]:
    """Median and 90th percentile per priority; a priority without times has no series."""
    return [sample(kpi, tickets.quantile(values, q), priority=priority, window=window,
                   percentile=label)
            for priority, values in _by_priority(times) for label, q in PERCENTILES]


def _by_priority(values: dict) -> list[tuple[str, Any]]:
    """In PRIORITIES order, the ones present."""
    return [(priority, values[priority]) for priority in tickets.PRIORITIES if priority in values]
