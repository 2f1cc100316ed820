"""The sql source's built-in product query on a 10-million-row events table, in PostgreSQL.

    python bench/bench_sql.py [--rows 10000000] [--users 200000] [--url postgresql+psycopg://...]

Without --url it starts a throw-away PostgreSQL (Debian's postgresql package, as
the tests do). It fills `events(user_id, occurred_at)` with `rows` events over
60 days (generate_series, in the database), then times one poll of the product
query (active users over 24 h, 7 d and 30 d and the week before, one pass) with
and without the index the query needs:

    CREATE INDEX ON events (occurred_at);

and prints the sql source's exposition size. Goal (printed, not asserted): a
poll well inside the default 30 s query timeout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--url")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        from postgres import PostgresServer
        server = PostgresServer()
        url = server.url()
    try:
        run(url, args.rows, args.users)
    finally:
        if server is not None:
            server.stop()


def run(url: str, rows: int, users: int) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from exporter.collector import KpiCollector
    from exporter.config import parse
    from exporter.poller import Poller
    from exporter.sources.sql.source import SqlSource

    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as c:
        c.exec_driver_sql("DROP TABLE IF EXISTS events")
        c.exec_driver_sql("CREATE TABLE events (user_id int NOT NULL, occurred_at timestamptz "
                          "NOT NULL)")
        c.exec_driver_sql(
            "INSERT INTO events SELECT (random() * %(users)s)::int, "
            "now() - random() * interval '60 days' FROM generate_series(1, %(rows)s)",
            {"users": users, "rows": rows})
        c.exec_driver_sql("ANALYZE events")
    print(f"{rows:,} events of {users:,} users over 60 days, written in "
          f"{time.perf_counter() - started:.1f} s")
    config = parse(f"sources:\n  sql:\n    databases: {{app: {{url: '{url}'}}}}\n"
                   "    timeout: 120s\n    product: {database: app, events_table: events}\n",
                   "<bench>", {})
    source = SqlSource(config.sources["sql"])
    for label in ("without an index", "with CREATE INDEX ON events (occurred_at)"):
        if label.startswith("with "):
            started = time.perf_counter()
            with engine.begin() as c:
                c.exec_driver_sql("CREATE INDEX events_occurred_at ON events (occurred_at)")
                c.exec_driver_sql("ANALYZE events")
            print(f"index built in {time.perf_counter() - started:.1f} s")
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            samples = source.poll()
            timings.append(time.perf_counter() - started)
        active = {s.labels.get("window"): s.value for s in samples
                  if s.kpi == "product_active_users"}
        print(f"  product poll {label}: best {min(timings):.2f} s, worst {max(timings):.2f} s "
              f"(DAU {active['24h']:,.0f}, MAU {active['30d']:,.0f})")
    poller = Poller([source])
    poller.poll_once(source)
    registry = CollectorRegistry()
    registry.register(KpiCollector(poller, config.kpis))
    text = generate_latest(registry)
    kpi_lines = [line for line in text.decode().splitlines() if line.startswith("kpi_")]
    print(f"exposition of the sql source: {len(text):,} bytes, {len(kpi_lines)} series")
    source.close()
    engine.dispose()


if __name__ == "__main__":
    main()
