"""KPIs from the company's own databases: config.py (databases, product, NPS, custom KPIs),
database.py (safe queries), product.py (the built-in queries and their math), source.py.

SQLAlchemy is imported only when a sql source is created: every command that
reads a config (and the other sources) starts without it.
"""

from typing import Any

from exporter.sources.base import Registration
from exporter.sources.sql.config import NAME, SqlConfig, parse_config


def create(source_config: SqlConfig, config: Any):
    from exporter.sources.sql.source import SqlSource

    return SqlSource(source_config)


SOURCE_TYPE = Registration(parse_config, create)

__all__ = ["NAME", "SOURCE_TYPE", "SqlConfig", "parse_config"]
