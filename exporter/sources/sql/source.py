"""The `sql` source: product usage, NPS and the config's own KPIs from the company's databases.

Each poll runs every query once: the built-in product query (active users),
the NPS query, and each custom KPI's SQL with `:now` bound to the poll's time
(so the same query can be evaluated at a past moment). A query that fails
keeps its last values and is counted in `kpi_sql_query_failures_total{query}`;
the others go on and report fresh values, and the source is marked down until
every query succeeds again.

A custom query answers one row per series: a `value` column (a number) and
one column per label the KPI names. Too many rows, no `value`, a missing
label column or a value that is not a number fail that query, naming it.
"""

from __future__ import annotations

import logging
import math
import re
import time
from decimal import Decimal
from typing import Any, Callable, Iterator

import sqlalchemy as sa

from exporter.sources.base import PartialPollError, Sample, UpstreamDataError
from exporter.sources.sql import product
from exporter.sources.sql.config import NAME, CustomQuery, SqlConfig
from exporter.sources.sql.database import Database, QueryError

log = logging.getLogger(__name__)
_NOW = re.compile(r"(?<![:\w]):now\b")


def _sample(kpi: str, value: float, **labels: str) -> Sample:
    return Sample(kpi, {"source": NAME, **labels}, float(value))


class SqlSource:
    name = NAME

    def __init__(self, source_config: SqlConfig, *, clock: Callable[[], float] = time.time):
        self.config = source_config
        self.poll_interval = source_config.poll_interval
        self.clock = clock
        self.databases = {name: Database(name, database.url.reveal(),
                                         timeout=source_config.timeout,
                                         max_rows=source_config.max_rows)
                          for name, database in source_config.databases.items()}
        # (query name, how it runs): the name is its label in the failure counter.
        self.queries: list[tuple[str, Callable[[float], list[Sample]]]] = []
        if source_config.product:
            self.queries.append(("product", self._product))
        if source_config.nps:
            self.queries.append(("nps", self._nps))
        for custom in source_config.custom:
            self.queries.append((custom.key, lambda now, c=custom: self._custom(c, now)))
        self._last: dict[str, list[Sample]] = {}
        self.failures = {name: 0 for name, _ in self.queries}

    def poll(self) -> list[Sample]:
        now = self.clock()
        failed = []
        for name, run in self.queries:
            try:
                self._last[name] = run(now)
            except (QueryError, UpstreamDataError) as exc:
                self.failures[name] += 1
                failed.append(f"{name}: {exc}")
                log.error("sql: query %s failed: %s; its last values stay", name, exc)
        samples = [s for name, _ in self.queries for s in self._last.get(name, [])]
        samples += [_sample("sql_query_failures_total", count, query=name)
                    for name, count in self.failures.items()]
        if failed:
            raise PartialPollError(samples, "; ".join(failed))
        return samples

    def backfill(self, steps: list[int]) -> Iterator[tuple[int, list[Sample]]]:
        """Every query at each step, `:now` bound to it (see backfill.py); a query
        that fails stops the backfill, naming it."""
        for at in steps:
            samples = []
            for name, run in self.queries:
                try:
                    samples += run(at)
                except (QueryError, UpstreamDataError) as exc:
                    raise UpstreamDataError(f"sql: query {name} at {at}: {exc}") from None
            yield at, samples

    def check(self) -> list[tuple[str, str | None]]:
        """Run every query once: (name, None if it worked, else what failed)."""
        now = self.clock()
        results = []
        for name, run in self.queries:
            try:
                run(now)
                results.append((name, None))
            except (QueryError, UpstreamDataError) as exc:
                results.append((name, str(exc)))
        return results

    def request_stats(self) -> None:
        return None  # no HTTP client: its failures are counted per query instead

    def close(self) -> None:
        for database in self.databases.values():
            database.close()

    # -- the queries ----------------------------------------------------------

    def _moments(self, database: Database, now: float) -> Callable[[float], Any]:
        return lambda ago: database.now_parameter(now - ago)

    def _product(self, now: float) -> list[Sample]:
        query = self.config.product
        database = self.databases[query.database]
        [row] = database.rows(product.activity_statement(query),
                              product.activity_parameters(self._moments(database, now)),
                              f"product ({query.events_table})")
        activity = product.activity(row)
        result = [_sample("product_active_users", count, window=window)
                  for window, count in activity.active.items()]
        for kpi, value, labels in (
                ("product_stickiness", product.stickiness(activity), {}),
                ("product_active_users_change", product.weekly_change(activity), {"window": "7d"})):
            if value is not None:
                result.append(_sample(kpi, value, **labels))
        return result

    def _nps(self, now: float) -> list[Sample]:
        query = self.config.nps
        database = self.databases[query.database]
        window, seconds = product.NPS_WINDOW
        moment = self._moments(database, now)
        [row] = database.rows(product.answers_statement(query),
                              {"now": moment(0), "start": moment(seconds)},
                              f"nps ({query.table})")
        found = product.answers(row, query.table)
        result = [_sample("nps_responses", found.responses, window=window)]
        if found.nps is not None:
            result += [_sample("nps", found.nps, window=window),
                       _sample("nps_score_average", found.average, window=window)]
        return result

    def _custom(self, query: CustomQuery, now: float) -> list[Sample]:
        database = self.databases[query.database]
        statement = sa.text(query.sql)
        params: dict[str, Any] = {}
        if _NOW.search(query.sql):
            statement = statement.bindparams(sa.bindparam("now", type_=sa.DateTime(timezone=True)))
            params["now"] = database.now_parameter(now)
        rows = database.rows(statement, params, query.key)
        return [_sample(query.key, value, **labels) for labels, value in _series(query, rows)]


def _series(query: CustomQuery, rows: list[dict[str, Any]]) -> list[tuple[dict[str, str], float]]:
    """Each row's labels and value, checked: the KPI's labels are its columns."""
    result = []
    seen = set()
    for row in rows:
        if "value" not in row:
            raise UpstreamDataError(f"{query.key}: the query has no `value` column (it has "
                                    f"{', '.join(row) or 'none'})")
        missing = [label for label in query.labels if label not in row]
        if missing:
            raise UpstreamDataError(f"{query.key}: the query has no column {missing[0]!r} for "
                                    "the label of that name")
        value = row["value"]
        if value is None:
            continue  # SUM over nothing: no series, like a ratio without a denominator
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) \
                or not math.isfinite(float(value)):
            raise UpstreamDataError(f"{query.key}: a value is {value!r}, not a number")
        labels = {label: "none" if row[label] is None else str(row[label])
                  for label in query.labels}
        key = tuple(sorted(labels.items()))
        if key in seen:
            raise UpstreamDataError(f"{query.key}: two rows have the labels {dict(key)}: "
                                    "group by every label column")
        seen.add(key)
        result.append((labels, float(value)))
    return result

