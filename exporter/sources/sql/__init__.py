"""KPIs from the company's own databases: config.py (databases, product, NPS, custom KPIs),
database.py (safe queries), product.py (the built-in queries and their math), source.py."""

from exporter.sources.sql.config import NAME, SqlConfig, parse_config
from exporter.sources.sql.source import SOURCE_TYPE, SqlSource

__all__ = ["NAME", "SOURCE_TYPE", "SqlConfig", "SqlSource", "parse_config"]
