"""One configured database: a pooled SQLAlchemy engine, and queries run safely on it.

Every query runs in a read-only transaction with a time limit the database
enforces where it can (PostgreSQL: `SET TRANSACTION READ ONLY` and a local
`statement_timeout`; SQLite: `PRAGMA query_only` and a progress handler that
aborts at the deadline; other databases: a read-only transaction only), and
may answer at most `max_rows` rows. The URL's password is registered as a
secret, and shown nowhere: not in logs, errors or metrics.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from exporter.secrets import register
from exporter.sources.base import UpstreamDataError


class QueryError(Exception):
    """A query that failed: its message never holds the database password."""


class Database:
    def __init__(self, name: str, url: str, *, timeout: float, max_rows: int):
        self.name = name
        parsed = make_url(url)
        if parsed.password:
            register(str(parsed.password))
        self.shown = parsed.render_as_string(hide_password=True)
        self.timeout = timeout
        self.max_rows = max_rows
        self.dialect = parsed.get_backend_name()
        self.engine: Engine = sa.create_engine(parsed, pool_pre_ping=True)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_read_only)

    def now_parameter(self, now: float) -> datetime:
        """`:now` as this database compares it: UTC (naive for SQLite, which has no zones)."""
        at = datetime.fromtimestamp(now, timezone.utc)
        return at.replace(tzinfo=None) if self.dialect == "sqlite" else at

    def rows(self, statement: Any, params: dict[str, Any], what: str) -> list[dict[str, Any]]:
        """Run one query: its rows as {column: value}; too many rows is an error."""
        try:
            with self.engine.connect() as connection:
                with connection.begin():
                    self._guard(connection)
                    result = connection.execute(statement, params)
                    rows = result.mappings().fetchmany(self.max_rows + 1)
        except sa.exc.SQLAlchemyError as exc:
            raise QueryError(f"{what}: {_reason(exc)}") from None
        if len(rows) > self.max_rows:
            raise UpstreamDataError(f"{what}: more than {self.max_rows} rows (sources.sql.max_rows):"
                                    " every row is a series; aggregate in the query")
        return [dict(row) for row in rows]

    def _guard(self, connection: sa.Connection) -> None:
        if self.dialect == "postgresql":
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            connection.exec_driver_sql(
                f"SET LOCAL statement_timeout = {max(1, int(self.timeout * 1000))}")
            connection.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        elif self.dialect == "sqlite":
            deadline = time.monotonic() + self.timeout
            raw = connection.connection.driver_connection
            # Called every 10,000 steps of the engine: nonzero aborts the statement.
            raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        elif self.dialect in ("mysql", "mariadb"):
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA query_only = ON")


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    """The database's own message, first line, without SQLAlchemy's background link."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__
    if "interrupted" in text.lower() or "canceling statement due to statement timeout" in text:
        text = f"timed out ({text})"
    return text[:300]
