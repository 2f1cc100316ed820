"""Support KPIs from Zendesk: source.py (config, kept tickets, records), fetch.py (the API)."""

from exporter.sources.zendesk.source import (
    NAME, SOURCE_TYPE, ZendeskConfig, ZendeskSource, parse_config,
)

__all__ = ["NAME", "SOURCE_TYPE", "ZendeskConfig", "ZendeskSource", "parse_config"]
