"""Sales pipeline KPIs from deals and leads: pure functions, no I/O.

Both CRM sources (HubSpot, Salesforce) turn their objects into the records
below, so the same deals give the same numbers whichever CRM they live in.
Money is in the reporting currency (converted by the source); times are Unix
seconds. Definitions (a window is the trailing 30 or 90 days):

- open pipeline    = sum of the amounts of open deals, by pipeline and stage;
  weighted: each amount x its stage's probability
- won / lost       = deals closed won / lost with a close date in the window
- win rate         = won / (won + lost)
- average deal     = won amount / won deals that have an amount
- sales cycle      = median days from creation to close of the deals won (a
  deal closed on the day it was created counts 0, even when its close date,
  a date at midnight UTC, lies before its creation time)
- leads, MQLs, SQLs, opportunities = leads that reached each stage in the window
- MQL-to-SQL       = SQLs / MQLs;  SQL-to-opportunity = opportunities / SQLs
- lead response    = hours from a lead's creation to its first sales touch,
  for leads created in the window: the median of the touched ones, and the
  share touched within the target of those that were touched or have waited
  longer than the target
- stalled          = open deals whose stage has not changed for 14 days
- stage changes    = deals (open or closed) that entered their current stage in
  the last 14 days; none at all is the documented "pipeline stagnation"

A ratio or median with nothing to divide or rank has no value (None).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from decimal import Decimal

from exporter.labels import OTHER, fold, top

DAY = 86400
HOUR = 3600
STALLED_AFTER = 14 * DAY
RESPONSE_TARGET = 2 * HOUR


@dataclass(frozen=True)
class Stage:
    pipeline: str  # the pipeline's label
    label: str
    probability: Decimal  # 0-1
    is_closed: bool = False
    is_won: bool = False


@dataclass(frozen=True)
class Deal:
    id: str
    stage: Stage
    amount: Decimal | None  # in the reporting currency; None when the deal has none
    created: int
    closed: int | None = None  # the close date, for closed deals
    stage_changed: int | None = None  # when it entered its current stage


@dataclass(frozen=True)
class Lead:
    id: str
    created: int
    mql: int | None = None  # when it became a marketing-qualified lead
    sql: int | None = None  # sales-qualified
    opportunity: int | None = None
    first_touch: int | None = None  # the first sales activity on it


def lead_moved_since(lead: Lead, since: int) -> bool:
    """Was the lead created, or did it reach a funnel stage, after `since`? (Leads that
    did not count in no funnel window from `since` on; sources drop them.)"""
    return any(at is not None and at > since
               for at in (lead.created, lead.mql, lead.sql, lead.opportunity))


@dataclass(frozen=True)
class Closed:
    won: int
    lost: int
    won_amount: Decimal
    win_rate: float | None
    average_deal: Decimal | None
    cycle_days: float | None  # median days from creation to won


@dataclass(frozen=True)
class Funnel:
    leads: int
    mqls: int
    sqls: int
    opportunities: int
    mql_to_sql: float | None
    sql_to_opportunity: float | None


@dataclass(frozen=True)
class Response:
    median_hours: float | None
    within_target: float | None  # share 0-1
    measured: int  # leads that count towards the share


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def open_pipeline(deals: list[Deal]) -> dict[tuple[str, str], tuple[Decimal, Decimal, int]]:
    """{(pipeline, stage): (amount, weighted amount, deals)} of the open deals."""
    result: dict[tuple[str, str], tuple[Decimal, Decimal, int]] = {}
    for deal in deals:
        if deal.stage.is_closed:
            continue
        key = (deal.stage.pipeline, deal.stage.label)
        amount, weighted, count = result.get(key, (Decimal(0), Decimal(0), 0))
        value = deal.amount or Decimal(0)
        result[key] = (amount + value, weighted + value * deal.stage.probability, count + 1)
    return result


def closed(deals: list[Deal], now: int, window: int) -> Closed:
    """Deals closed in the window (close date in (now - window, now])."""
    in_window = [d for d in deals if d.stage.is_closed and d.closed is not None
                 and now - window < d.closed <= now]
    won = [d for d in in_window if d.stage.is_won]
    lost = len(in_window) - len(won)
    with_amount = [d.amount for d in won if d.amount is not None]
    won_amount = sum(with_amount, Decimal(0))
    cycles = [cycle_days(d) for d in won]
    return Closed(
        won=len(won), lost=lost, won_amount=won_amount,
        win_rate=_ratio(len(won), len(won) + lost),
        average_deal=won_amount / len(with_amount) if with_amount else None,
        cycle_days=statistics.median(cycles) if cycles else None,
    )


def cycle_days(deal: Deal) -> float:
    """Days from creation to close, never below 0: a close date is a date (midnight
    UTC), so a deal created and won on the same day closes "before" it was created.
    Leaving such deals out would bias the median cycle upwards."""
    return max(deal.closed - deal.created, 0) / DAY


def funnel(leads: list[Lead], now: int, window: int) -> Funnel:
    def reached(at: int | None) -> bool:
        return at is not None and now - window < at <= now

    counts = [sum(reached(getattr(lead, stage)) for lead in leads)
              for stage in ("created", "mql", "sql", "opportunity")]
    new, mqls, sqls, opportunities = counts
    return Funnel(leads=new, mqls=mqls, sqls=sqls, opportunities=opportunities,
                  mql_to_sql=_ratio(sqls, mqls), sql_to_opportunity=_ratio(opportunities, sqls))


def response(leads: list[Lead], now: int, window: int, target: int = RESPONSE_TARGET) -> Response:
    recent = [lead for lead in leads if now - window < lead.created <= now]
    waits = [lead.first_touch - lead.created for lead in recent
             if lead.first_touch is not None and lead.first_touch >= lead.created]
    # Untouched leads count against the target once they have waited longer than it.
    overdue = sum(1 for lead in recent if lead.first_touch is None and now - lead.created > target)
    measured = len(waits) + overdue
    return Response(
        median_hours=statistics.median(waits) / HOUR if waits else None,
        within_target=_ratio(sum(1 for w in waits if w <= target), measured),
        measured=measured,
    )


def stalled(deals: list[Deal], now: int, after: int = STALLED_AFTER) -> tuple[int, Decimal]:
    """(count, amount) of open deals whose stage has not changed for `after` seconds."""
    stuck = [d for d in deals if not d.stage.is_closed
             and now - (d.stage_changed if d.stage_changed is not None else d.created) > after]
    return len(stuck), sum((d.amount or Decimal(0) for d in stuck), Decimal(0))


def stage_changes(deals: list[Deal], now: int, window: int = STALLED_AFTER) -> int:
    """Deals that entered their current stage (a closed one: closed) within the window."""
    return sum(1 for d in deals
               if now - window < (d.stage_changed if d.stage_changed is not None else d.created) <= now)


def capped_stages(pipeline: dict[tuple[str, str], tuple[Decimal, Decimal, int]],
                  limit: int) -> dict[tuple[str, str], tuple[Decimal, Decimal, int]]:
    """The `limit` (pipeline, stage) pairs with the most open amount; the rest summed
    under (OTHER, OTHER). Stage and pipeline names come from the CRM: their number is capped."""
    kept = top({key: amount for key, (amount, _, _) in pipeline.items()}, limit)
    zero = (Decimal(0), Decimal(0), 0)
    return fold(pipeline, kept, zero, lambda a, b: (a[0] + b[0], a[1] + b[1], a[2] + b[2]),
                (OTHER, OTHER))
