"""Product usage and NPS: the built-in queries of the `sql` source, and their math.

Definitions (a window ends at the poll's `now`; an event or an answer is in
the window when its time is after now - window and at most now):

- active users (24h DAU, 7d WAU, 30d MAU) = distinct users with an event in the window
- stickiness  = active over 24 hours / active over 30 days
- change (7d) = (active in the last 7 days - active in the 7 days before) / active in
  the 7 days before
- NPS (90d)   = 100 x (answers of 9 or 10 - answers of 0 to 6) / answers
- average (90d) = the mean answer; responses (90d) = the number of answers

A ratio without a denominator has no value (None), never 0. One query each,
one pass over the window: the events query reads 30 days of events, so the
table wants an index on its time column (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from exporter.sources.base import UpstreamDataError
from exporter.sources.sql.config import NpsQuery, ProductQuery

DAY = 86400
ACTIVE_WINDOWS = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
NPS_WINDOW = ("90d", 90 * DAY)


@dataclass(frozen=True)
class Activity:
    active: dict[str, int]  # window -> distinct active users
    previous_week: int  # distinct users active in the 7 days before the last 7


def stickiness(activity: Activity) -> float | None:
    monthly = activity.active["30d"]
    return activity.active["24h"] / monthly if monthly else None


def weekly_change(activity: Activity) -> float | None:
    before = activity.previous_week
    return (activity.active["7d"] - before) / before if before else None


@dataclass(frozen=True)
class Answers:
    responses: int
    promoters: int  # 9 or 10
    detractors: int  # 0 to 6
    total: Decimal  # the sum of the scores

    @property
    def nps(self) -> float | None:
        if not self.responses:
            return None
        return 100 * (self.promoters - self.detractors) / self.responses

    @property
    def average(self) -> float | None:
        return float(self.total / self.responses) if self.responses else None


def _table(name: str, *columns: str) -> sa.TableClause:
    schema, _, table = name.rpartition(".")
    return sa.table(table, *(sa.column(c) for c in columns), schema=schema or None)


def _moment(name: str) -> sa.BindParameter:
    return sa.bindparam(name, type_=sa.DateTime(timezone=True))


def activity_statement(query: ProductQuery) -> sa.Select:
    """One pass over the last 30 days: distinct users per window and in the week before."""
    events = _table(query.events_table, query.user_column, query.time_column)
    user, at = events.c[query.user_column], events.c[query.time_column]

    def distinct_since(start: Any, end: Any = None) -> sa.Label:
        condition = at > start if end is None else sa.and_(at > start, at <= end)
        return sa.func.count(sa.distinct(sa.case((condition, user))))

    return sa.select(
        distinct_since(_moment("start_24h")).label("active_24h"),
        distinct_since(_moment("start_7d")).label("active_7d"),
        sa.func.count(sa.distinct(user)).label("active_30d"),
        distinct_since(_moment("start_14d"), _moment("start_7d")).label("previous_week"),
    ).where(at > _moment("start_30d"), at <= _moment("now"))


def activity_parameters(moment) -> dict[str, Any]:
    """`moment(seconds ago)`: the database's own form of now minus that many seconds."""
    return {"now": moment(0), "start_24h": moment(DAY), "start_7d": moment(7 * DAY),
            "start_14d": moment(14 * DAY), "start_30d": moment(30 * DAY)}


def activity(row: dict[str, Any]) -> Activity:
    return Activity({"24h": _count(row, "active_24h"), "7d": _count(row, "active_7d"),
                     "30d": _count(row, "active_30d")}, _count(row, "previous_week"))


def answers_statement(query: NpsQuery) -> sa.Select:
    answers = _table(query.table, query.score_column, query.time_column)
    score, at = answers.c[query.score_column], answers.c[query.time_column]

    def how_many(condition: Any) -> sa.Label:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    return sa.select(
        sa.func.count(score).label("responses"),
        how_many(score >= 9).label("promoters"),
        how_many(score <= 6).label("detractors"),
        sa.func.coalesce(sa.func.sum(score), 0).label("total"),
        how_many(sa.or_(score < 0, score > 10)).label("out_of_range"),
        how_many(score.is_(None)).label("missing"),
    ).where(at > _moment("start"), at <= _moment("now"))


def answers(row: dict[str, Any], table: str) -> Answers:
    bad, missing = _count(row, "out_of_range"), _count(row, "missing")
    if bad or missing:  # a survey on another scale, or empty answers: not an NPS
        raise UpstreamDataError(f"sql: {table}: {bad} scores outside 0-10 and {missing} "
                                "without a score in the window")
    total = row["total"]
    if isinstance(total, bool) or not isinstance(total, (int, float, Decimal)):
        raise UpstreamDataError(f"sql: {table}: the scores are not numbers")
    return Answers(_count(row, "responses"), _count(row, "promoters"),
                   _count(row, "detractors"), Decimal(str(total)))


def _count(row: dict[str, Any], name: str) -> int:
    value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or value < 0:
        raise UpstreamDataError(f"sql: {name} is {value!r}, not a count")
    return int(value)
