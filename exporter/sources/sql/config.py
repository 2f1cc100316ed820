"""The `sql` source's config and the config's `custom_kpis:` and `constants:`.

    sources:
      sql:
        databases:
          app: {url: "${APP_DATABASE_URL}"}    # a SQLAlchemy URL; or url_file
        poll_interval: 5m
        timeout: 30s                           # per query, enforced by the database
        max_rows: 1000                         # a query answering more fails
        product: {database: app, events_table: events, user_column: user_id,
                  time_column: occurred_at}
        nps: {database: app, table: nps_responses, score_column: score,
              time_column: responded_at}
    custom_kpis:
      signups:
        database: app
        help: Accounts created in the trailing 24 hours.
        unit: count                            # count | ratio | seconds | money
        sql: "SELECT plan, count(*) AS value FROM accounts WHERE ... :now ..."
        labels: [plan]
        target: 50
        direction: above                       # which side of the target is good
        thresholds: {warning: {below: 20}, critical: {drop: 0.5, over: 7d, for: 1h}}
        team: growth
    constants:
      cac: 1200

A custom KPI is a catalog entry like the built-in ones (a metric `kpi_<key>`,
alerts from its thresholds, routing by its team, a dashboard panel, a line in
the docs); its query is kept here, beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from exporter import catalog
from exporter.config import ConfigError, PollLimits, Section, parse_duration
from exporter.kit.settings import team_error
from exporter.secrets import Secret

NAME = "sql"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
KEY = re.compile(r"[a-z][a-z0-9_]{0,59}")
LABEL = re.compile(r"[a-z_][a-z0-9_]{0,59}")
RESERVED_LABELS = {"source", "job", "instance", "window", "le", "quantile", "value"}
UNITS = {"count": "count", "ratio": "ratio", "seconds": "seconds", "money": "currency"}
DIRECTIONS = {"above": "higher", "below": "lower"}
SEVERITIES = ("critical", "warning", "info")
KINDS = ("above", "below", "drop")


@dataclass(frozen=True)
class Database:
    name: str
    url: Secret  # a SQLAlchemy URL; its password is registered as a secret


@dataclass(frozen=True)
class ProductQuery:
    database: str
    events_table: str
    user_column: str = "user_id"
    time_column: str = "occurred_at"


@dataclass(frozen=True)
class NpsQuery:
    database: str
    table: str
    score_column: str = "score"
    time_column: str = "responded_at"


@dataclass(frozen=True)
class CustomQuery:
    key: str  # the catalog key: kpi_<key>
    database: str
    sql: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class SqlConfig:
    databases: dict[str, Database]
    poll_interval: float = 300.0
    timeout: float = 30.0  # per query
    limits: PollLimits = PollLimits(1_000, 1800.0)
    max_rows: int = 1000  # rows a query may answer (labels: series)
    product: ProductQuery | None = None
    nps: NpsQuery | None = None
    custom: tuple[CustomQuery, ...] = ()  # from `custom_kpis:`, filled in by the core


def parse_config(section: Section) -> SqlConfig:
    databases_section = section.section("databases")
    databases = {}
    for name in list(databases_section.data):
        if not KEY.fullmatch(str(name)):
            raise databases_section.error(str(name), "a database name is lower-case letters, "
                                          "digits and _")
        entry = databases_section.section(name)
        url = entry.secret("url")
        if "://" not in url.reveal():
            raise entry.error("url", "is not a SQLAlchemy URL (dialect+driver://user:password"
                              "@host/database, or sqlite:///path)")
        entry.finish()
        databases[name] = Database(name, url)
    databases_section.finish()
    if not databases:
        raise section.error("databases", "name at least one database")

    def database(entry: Section) -> str:
        name = entry.string("database", required=True)
        if name not in databases:
            raise entry.error("database", f"{name!r} is not under sources.sql.databases "
                              f"({', '.join(databases)})")
        return name

    def identifier(entry: Section, name: str, default: str | None = None) -> str:
        value = entry.string(name, default, required=default is None)
        if not IDENTIFIER.fullmatch(value):
            raise entry.error(name, f"{value!r} is not a table or column name (letters, digits "
                              "and _, a schema. in front for a table)")
        return value

    product = nps = None
    if section.has("product"):
        entry = section.section("product")
        product = ProductQuery(database(entry), identifier(entry, "events_table"),
                               identifier(entry, "user_column", ProductQuery.user_column),
                               identifier(entry, "time_column", ProductQuery.time_column))
        entry.finish()
    if section.has("nps"):
        entry = section.section("nps")
        nps = NpsQuery(database(entry), identifier(entry, "table"),
                       identifier(entry, "score_column", NpsQuery.score_column),
                       identifier(entry, "time_column", NpsQuery.time_column))
        entry.finish()
    return SqlConfig(databases=databases, product=product, nps=nps,
                     max_rows=section.count("max_rows", SqlConfig.max_rows),
                     **section.common(SqlConfig))


@dataclass
class Custom:
    """What `custom_kpis:` and `constants:` add to the catalog."""

    kpis: list[catalog.Kpi] = field(default_factory=list)
    queries: list[CustomQuery] = field(default_factory=list)
    constants: dict[str, float] = field(default_factory=dict)


def parse_custom(top: Section, sql: SqlConfig | None, built_in: tuple[catalog.Kpi, ...]) -> Custom:
    found = Custom()
    taken = {kpi.key for kpi in built_in} | {kpi.metric for kpi in built_in}
    section = top.section("custom_kpis")
    for key in list(section.data):
        if not KEY.fullmatch(str(key)):
            raise section.error(str(key), "a KPI key is lower-case letters, digits and _, "
                                "starting with a letter")
        if key in taken or f"kpi_{key}" in taken:
            raise section.error(str(key), "is a built-in KPI: choose another key (override "
                                "the built-in one under kpis:)")
        entry = section.section(key)
        kpi, query = _custom_kpi(entry, key, sql)
        entry.finish()
        found.kpis.append(kpi)
        found.queries.append(query)
    section.finish()
    constants = top.section("constants")
    known = {kpi.key: kpi for kpi in catalog.CONSTANTS}
    for name in list(constants.data):
        if name not in known:
            raise constants.error(str(name), f"unknown constant (known: {', '.join(known)})")
        if name in section.data:
            raise constants.error(str(name), f"custom_kpis.{name} already gives it (from SQL)")
        found.constants[name] = constants.number(name, None)
        found.kpis.append(known[name])
    constants.finish()
    return found


def _custom_kpi(entry: Section, key: str, sql: SqlConfig | None) -> tuple[catalog.Kpi, CustomQuery]:
    if sql is None:
        raise entry.error("database", "custom KPIs run on a database of sources.sql.databases: "
                          "configure sources.sql")
    database = entry.string("database", required=True)
    if database not in sql.databases:
        raise entry.error("database", f"{database!r} is not under sources.sql.databases "
                          f"({', '.join(sql.databases)})")
    text = entry.string("sql", required=True).strip()
    if not text:
        raise entry.error("sql", "is empty")
    labels = entry.convert("labels", (), _labels)
    unit = entry.string("unit", "count")
    if unit not in UNITS:
        raise entry.error("unit", f"{unit!r} is not one of {', '.join(UNITS)}")
    number = entry.duration if unit == "seconds" else entry.number
    target = number("target", None)
    direction = entry.string("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise entry.error("direction", f"{direction!r} is not above or below (which side of the "
                          "target is good)")
    team = entry.string("team", "engineering")
    if team_error(team):
        raise entry.error("team", team_error(team))
    help_text = entry.string("help", required=True).strip()
    if not help_text:
        raise entry.error("help", "is empty")
    thresholds = _thresholds(entry.section("thresholds"), unit)
    kpi = catalog.Kpi(
        key=key, metric=f"kpi_{key}", help=help_text if help_text.endswith(".") else help_text + ".",
        unit=UNITS[unit], labels=("source", *labels),
        description=entry.string("description", help_text), team=team, area="custom",
        target=target, direction=DIRECTIONS.get(direction or ""), thresholds=thresholds)
    return kpi, CustomQuery(key, database, text, labels)


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError("must be a fraction above 0 and below 1 (0.2 for 20 %)")
    return float(value)


def _prometheus_duration(value: Any) -> str:
    """A duration as written (it goes into PromQL and `for:`), checked."""
    parse_duration(value)
    text = str(value).strip()
    if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", text):
        raise ValueError(f"{text!r} is not a Prometheus duration (30m, 7d, 1w)")
    return text


def _labels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of column names")
    for label in value:
        if not LABEL.fullmatch(label) or label in RESERVED_LABELS:
            raise ValueError(f"{label!r} cannot be a label (lower-case letters, digits and _; "
                             f"not {', '.join(sorted(RESERVED_LABELS))})")
    if len(set(value)) != len(value):
        raise ValueError("names a label twice")
    return tuple(value)


def _thresholds(section: Section, unit: str) -> tuple[catalog.Threshold, ...]:
    """`{warning: {below: 20}}`, `{critical: {drop: 0.3, window: 7d}}`: a custom threshold
    names its severity and its kind, because no catalog entry says them."""
    result = []
    for severity in list(section.data):
        if severity not in SEVERITIES:
            raise section.error(str(severity), f"unknown severity (one of {', '.join(SEVERITIES)})")
        entry = section.section(severity)
        kinds = [kind for kind in KINDS if kind in entry.data]
        if len(kinds) != 1:
            raise entry.error_at(entry.path, "give one of above, below or drop, with its value")
        kind = kinds[0]
        if kind == "drop":
            value = entry.convert("drop", None, _fraction)
            over = entry.convert("over", None, _prometheus_duration)
            if over is None:
                raise entry.error("over", "is required: the drop is against the value this "
                                  "long ago (7d, 1w, 30d)")
        else:
            value = (entry.duration if unit == "seconds" else entry.number)(kind, None)
            over = None
        hold = entry.convert("for", None, _prometheus_duration)
        entry.finish()
        result.append(catalog.Threshold(str(severity), str(severity), kind, value,
                                        over=over, hold=hold))
    section.finish()
    return tuple(result)


__all__ = ["ConfigError", "CustomQuery", "Database", "NAME", "NpsQuery", "ProductQuery",
           "SqlConfig", "parse_config", "parse_custom"]
