"""The sql source against a real PostgreSQL: product usage, NPS and custom KPIs on
hand-computed data, the safety rules (read-only, timeouts, row caps, no password
anywhere), partial failures, `kpi-exporter check`, and every bad input."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from exporter import catalog
from exporter.cli import main
from exporter.config import ConfigError, parse
from exporter.poller import Poller
from exporter.sources.sql.source import SqlSource
from postgres import PostgresServer

pytestmark = pytest.mark.slow  # a real PostgreSQL server, started here

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
PASSWORD = "pg-s3cret-pw"


@pytest.fixture(scope="module")
def server():
    running = PostgresServer()
    engine = sa.create_engine(running.url())
    with engine.begin() as c:
        c.exec_driver_sql(f"CREATE ROLE kpi LOGIN PASSWORD '{PASSWORD}'")
    engine.dispose()
    yield running
    running.stop()


_DATABASES = iter(range(10_000))


@pytest.fixture
def database(server):
    """A fresh database per test, owned by the role the exporter logs in as."""
    name = f"test_{next(_DATABASES)}"
    admin = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        c.exec_driver_sql(f'CREATE DATABASE "{name}" OWNER kpi')
    admin.dispose()
    url = f"postgresql+psycopg://kpi:{PASSWORD}@127.0.0.1:{server.port}/{name}"
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE events (user_id int NOT NULL, occurred_at timestamptz "
                          "NOT NULL)")
        c.exec_driver_sql("CREATE INDEX ON events (occurred_at)")
        c.exec_driver_sql("CREATE TABLE nps_responses (score int, responded_at timestamptz "
                          "NOT NULL)")
        c.exec_driver_sql("CREATE TABLE accounts (plan text, created_at timestamptz NOT NULL)")
    yield url, engine
    engine.dispose()


def insert(engine, table: str, rows: list[tuple]) -> None:
    columns = {"events": "(user_id, occurred_at)", "nps_responses": "(score, responded_at)",
               "accounts": "(plan, created_at)"}[table]
    with engine.begin() as c:
        c.exec_driver_sql(f"INSERT INTO {table} {columns} VALUES (%s, %s)", rows)


def ago(**delta) -> datetime:
    return NOW - timedelta(**delta)


CUSTOM = """
custom_kpis:
  signups:
    database: app
    help: Accounts created in the trailing 24 hours
    sql: "SELECT plan, count(*) AS value FROM accounts WHERE created_at > :now - interval '24 hours' AND created_at <= :now GROUP BY plan"
    labels: [plan]
    target: 50
    direction: above
    thresholds: {warning: {below: 20}}
    team: growth
"""


def config_text(url: str, extra: str = "", sql: str = "") -> str:
    return (f"sources:\n  sql:\n    databases: {{app: {{url: '{url}'}}}}\n"
            "    product: {database: app, events_table: events}\n"
            "    nps: {database: app, table: nps_responses}\n" + sql + extra)


def source(url: str, extra: str = "", sql: str = "") -> SqlSource:
    config = parse(config_text(url, extra, sql), "kpi.yml", {})
    return SqlSource(config.sources["sql"], clock=NOW.timestamp)


def values(samples) -> dict:
    return {(s.kpi, tuple(sorted((k, v) for k, v in s.labels.items() if k != "source"))): s.value
            for s in samples}


# --- the built-in KPIs, hand-computed -------------------------------------------------

def test_active_users_by_window_at_the_edges(database):
    url, engine = database
    insert(engine, "events", [
        (1, ago(hours=1)), (1, ago(hours=2)),       # user 1 twice today: counted once
        (2, ago(hours=24)),                         # exactly 24 h ago: not in the 24 h window
        (3, NOW),                                   # exactly now: in it
        (4, NOW + timedelta(seconds=1)),            # the future: in no window
        (5, ago(days=8)), (1, ago(days=9)),         # the week before: users 5 and 1
        (6, ago(days=30)),                          # exactly 30 days: out of every window
        (7, ago(days=29, hours=23)),                # just inside 30 days
    ])
    found = values(source(url).poll())
    assert found[("product_active_users", (("window", "24h"),))] == 2           # users 1, 3
    assert found[("product_active_users", (("window", "7d"),))] == 3            # 1, 2, 3
    assert found[("product_active_users", (("window", "30d"),))] == 5           # 1, 2, 3, 5, 7
    assert found[("product_stickiness", ())] == pytest.approx(2 / 5)
    # this week 3 (1, 2, 3) against the week before 2 (5, 1): +50 %
    assert found[("product_active_users_change", (("window", "7d"),))] == pytest.approx(0.5)


def test_nps_of_promoters_only_and_of_a_mix(database):
    url, engine = database
    insert(engine, "nps_responses", [(10, ago(days=1)), (9, ago(days=89)), (9, ago(hours=3))])
    found = values(source(url).poll())
    assert found[("nps", (("window", "90d"),))] == 100
    assert found[("nps_score_average", (("window", "90d"),))] == pytest.approx(28 / 3)
    assert found[("nps_responses", (("window", "90d"),))] == 3
    # 2 detractors (0, 6), 1 passive (8), 3 promoters; one answer 91 days ago is out
    insert(engine, "nps_responses", [(0, ago(days=2)), (6, ago(days=2)), (8, ago(days=2)),
                                     (0, ago(days=91))])
    found = values(source(url).poll())
    assert found[("nps", (("window", "90d"),))] == pytest.approx(100 * (3 - 2) / 6)
    assert found[("nps_score_average", (("window", "90d"),))] == pytest.approx(42 / 6)


def test_empty_tables_have_counts_and_no_ratios(database):
    url, _ = database
    found = values(source(url).poll())
    assert found[("product_active_users", (("window", "24h"),))] == 0
    assert found[("nps_responses", (("window", "90d"),))] == 0
    for absent in ("product_stickiness", "product_active_users_change", "nps",
                   "nps_score_average"):
        assert not any(kpi == absent for kpi, _ in found), absent


def test_answers_off_the_0_to_10_scale_fail_loudly(database):
    url, engine = database
    insert(engine, "nps_responses", [(9, ago(days=1)), (42, ago(days=1)), (None, ago(days=1))])
    sql = source(url)
    with pytest.raises(Exception) as caught:
        sql.poll()
    assert "1 scores outside 0-10 and 1 without a score" in str(caught.value)


# --- custom KPIs -----------------------------------------------------------------------

def test_a_custom_kpi_with_labels_and_now(database):
    url, engine = database
    insert(engine, "accounts", [("pro", ago(hours=1)), ("pro", ago(hours=23)),
                                ("free", ago(hours=2)), ("free", ago(hours=25)),
                                (None, ago(hours=3)), ("pro", NOW + timedelta(hours=1))])
    found = values(source(url, CUSTOM).poll())
    assert found[("signups", (("plan", "pro"),))] == 2
    assert found[("signups", (("plan", "free"),))] == 1
    assert found[("signups", (("plan", "none"),))] == 1     # a NULL plan
    kpi = catalog.by_key(parse(config_text(url, CUSTOM), "k.yml", {}).kpis)["signups"]
    assert (kpi.metric, kpi.labels, kpi.team, kpi.target, kpi.direction) == \
        ("kpi_signups", ("source", "plan"), "growth", 50, "higher")


@pytest.mark.parametrize("query,message", [
    ("SELECT count(*) AS n FROM accounts", "no `value` column (it has n)"),
    ("SELECT count(*) AS value FROM accounts", "no column 'plan' for the label"),
    ("SELECT 'x' AS plan, 'many' AS value", "a value is 'many', not a number"),
    ("SELECT plan, 1 AS value FROM (VALUES ('a'), ('a')) AS t(plan)", "two rows have the labels"),
    ("SELECT plan, 1 AS value FROM (VALUES ('a'), ('b'), ('c')) AS t(plan)", "more than 2 rows"),
    ("SELECT pg_sleep(5) IS NULL AS plan, 1 AS value", "timed out"),
    ("INSERT INTO accounts VALUES ('x', now()) RETURNING plan, 1 AS value", "read-only"),
    ("SELECT plan, value FROM missing_table", "missing_table"),
])
def test_a_failing_query_keeps_its_last_values_and_the_others_go_on(database, query, message,
                                                                   caplog):
    url, engine = database
    insert(engine, "events", [(1, ago(hours=1))])
    good = CUSTOM.replace("GROUP BY plan\"", "GROUP BY plan\"\n    ")
    bad = ("\n  broken:\n    database: app\n    help: Broken.\n    labels: [plan]\n"
           f"    sql: \"{query}\"\n")
    sql = source(url, good + bad, sql="    max_rows: 2\n    timeout: 1s\n")
    poller = Poller([sql])
    with caplog.at_level(logging.ERROR):
        state = poller.poll_once(sql)
    assert not state.up and message in state.last_error, state.last_error
    found = values(state.samples)
    assert found[("product_active_users", (("window", "24h"),))] == 1   # the others ran
    assert found[("sql_query_failures_total", (("query", "broken"),))] == 1
    assert found[("sql_query_failures_total", (("query", "product"),))] == 0
    assert "query broken failed" in caplog.text
    assert state.failure_reasons["query"] == 1
    assert PASSWORD not in caplog.text and PASSWORD not in state.last_error
    with engine.begin() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM accounts WHERE plan = 'x'").scalar() == 0


def test_a_query_that_fails_later_keeps_its_values(database):
    url, engine = database
    insert(engine, "accounts", [("pro", ago(hours=1))])
    sql = source(url, CUSTOM)
    first = values(sql.poll())
    with engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE accounts RENAME TO accounts_old")
    poller = Poller([sql])
    state = poller.poll_once(sql)
    assert not state.up
    assert values(state.samples)[("signups", (("plan", "pro"),))] == \
        first[("signups", (("plan", "pro"),))]


def test_a_wrong_password_names_no_password(server):
    url = f"postgresql+psycopg://kpi:wrong-{PASSWORD}@127.0.0.1:{server.port}/postgres"
    sql = source(url)
    state = Poller([sql]).poll_once(sql)
    assert not state.up and "password authentication failed" in state.last_error
    assert PASSWORD not in state.last_error


def test_the_check_command(database, tmp_path):
    url, engine = database
    path = tmp_path / "kpi.yml"
    path.write_text(config_text(url, CUSTOM))
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["product: ok", "nps: ok", "signups: ok"]
    with engine.begin() as c:
        c.exec_driver_sql("DROP TABLE nps_responses")
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0] == "product: ok" and lines[1].startswith("nps: FAILED: nps (nps_responses):")
    assert PASSWORD not in result.output


# --- bad config ------------------------------------------------------------------------

URL = "postgresql+psycopg://kpi@127.0.0.1:1/x"


@pytest.mark.parametrize("extra,key", [
    (CUSTOM.replace("signups:", "mrr:"), "custom_kpis.mrr"),
    (CUSTOM.replace("signups:", "Signups!:"), "custom_kpis.Signups!"),
    (CUSTOM.replace("database: app", "database: warehouse"), "custom_kpis.signups.database"),
    (CUSTOM.replace("{warning: {below: 20}}", "{warning: 20}"),
     "custom_kpis.signups.thresholds.warning"),
    (CUSTOM.replace("{warning: {below: 20}}", "{page: {below: 20}}"),
     "custom_kpis.signups.thresholds.page"),
    (CUSTOM.replace("{warning: {below: 20}}", "{warning: {drop: 0.2}}"),
     "custom_kpis.signups.thresholds.warning.over"),
    (CUSTOM.replace("labels: [plan]", "labels: [job]"), "custom_kpis.signups.labels"),
    (CUSTOM.replace("direction: above", "direction: up"), "custom_kpis.signups.direction"),
    (CUSTOM.replace("team: growth", "team: Growth Team"), "custom_kpis.signups.team"),
    (CUSTOM + "    colour: red\n", "custom_kpis.signups.colour"),
    ("constants: {ltv: 5}\n", "constants.ltv"),
    (CUSTOM.replace("signups:", "cac:") + "constants: {cac: 1200}\n", "constants.cac"),
])
def test_bad_custom_kpis_are_one_line_errors(extra, key):
    with pytest.raises(ConfigError) as caught:
        parse(config_text(URL, extra), "kpi.yml", {})
    assert str(caught.value).startswith(f"kpi.yml: {key}:"), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("sql,key", [
    ("    product: {database: warehouse, events_table: events}\n", "sources.sql.product.database"),
    ("    product: {database: app, events_table: 'events; DROP TABLE x'}\n",
     "sources.sql.product.events_table"),
    ("    nps: {database: app}\n", "sources.sql.nps.table"),
])
def test_bad_sql_sections(sql, key):
    text = f"sources:\n  sql:\n    databases: {{app: {{url: '{URL}'}}}}\n" + sql
    with pytest.raises(ConfigError) as caught:
        parse(text, "kpi.yml", {})
    assert str(caught.value).startswith(f"kpi.yml: {key}:"), str(caught.value)


def test_custom_kpis_need_the_sql_source_and_a_password_from_the_environment_is_never_shown():
    with pytest.raises(ConfigError, match="custom_kpis.signups.database: custom KPIs run on"):
        parse("sources: {stripe: {api_key: sk_test_1}}\n" + CUSTOM, "kpi.yml", {})
    with pytest.raises(ConfigError) as caught:
        parse("sources: {sql: {databases: {app: {url: '${DB}'}}}}\n", "kpi.yml",
              {"DB": f"kpi-{PASSWORD}"})
    assert PASSWORD not in str(caught.value)


def test_constants_and_the_ltv_to_cac_rule():
    config = parse(config_text(URL, "constants: {cac: 1200}\n"), "kpi.yml", {})
    assert config.constants == {"cac": 1200}
    keys = [k.key for k in config.kpis]
    assert "cac" in keys and "ltv_to_cac" in keys
    from exporter.kit.rules import rule_groups
    records = {r["record"]: r["expr"] for g in rule_groups(config.kpis)["groups"]
               for r in g["rules"] if "record" in r}
    assert "kpi_cac{job=\"kpi-exporter\"}" in records["kpi:ltv_to_cac:ratio"]
    assert "kpi:ltv_to_cac:ratio" not in {r["record"] for g in rule_groups()["groups"]
                                          for r in g["rules"] if "record" in r}


# --- SQLite, the demo's database: read-only and a time limit as well ------------------

def test_sqlite_queries_are_read_only_and_time_limited(tmp_path):
    path = tmp_path / "app.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE accounts (plan text, created_at timestamp)")
    engine.dispose()
    queries = {
        "writes": "INSERT INTO accounts VALUES ('x', '2026-01-01') RETURNING plan, 1 AS value",
        "spins": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                 "SELECT 'a' AS plan, max(i) AS value FROM n",
    }
    custom = "custom_kpis:\n" + "".join(
        f"  {key}:\n    database: app\n    help: {key}.\n    labels: [plan]\n    sql: \"{sql}\"\n"
        for key, sql in queries.items())
    config = parse(f"sources:\n  sql:\n    databases: {{app: {{url: 'sqlite:///{path}'}}}}\n"
                   f"    timeout: 1s\n{custom}", "kpi.yml", {})
    sql = SqlSource(config.sources["sql"])
    results = dict(sql.check())
    sql.close()
    assert "readonly" in results["writes"].replace("-", "")
    assert "interrupted" in results["spins"] or "timed out" in results["spins"]


def test_backfill_runs_every_query_at_each_step_hand_computed(database):
    """`:now` at each step: signups of the 24 hours before each midnight, and active
    users as a poll at that moment would count them."""
    url, engine = database
    midnight = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
    insert(engine, "accounts", [("pro", midnight - timedelta(hours=1)),        # day -1
                                ("pro", midnight - timedelta(days=1, hours=2)),  # day -2
                                ("free", midnight - timedelta(days=1, hours=3))])
    insert(engine, "events", [(1, midnight - timedelta(hours=5)),
                              (2, midnight - timedelta(days=1, hours=5))])
    sql = source(url, CUSTOM)
    moments = [int((midnight - timedelta(days=1)).timestamp()), int(midnight.timestamp()),
               int(NOW.timestamp())]
    rows = {at: values(samples) for at, samples in sql.backfill(moments)}
    assert list(rows) == moments
    yesterday, today, now = (rows[at] for at in moments)
    assert yesterday[("signups", (("plan", "pro"),))] == 1
    assert yesterday[("signups", (("plan", "free"),))] == 1
    assert today[("signups", (("plan", "pro"),))] == 1 and ("signups", (("plan", "free"),)) \
        not in today
    assert yesterday[("product_active_users", (("window", "24h"),))] == 1   # user 2
    assert today[("product_active_users", (("window", "24h"),))] == 1       # user 1
    assert today[("product_active_users", (("window", "7d"),))] == 2
    # the last step is a poll at that moment, its failure counters aside
    polled = {key: value for key, value in values(sql.poll()).items()
              if key[0] != "sql_query_failures_total"}
    assert now == polled
