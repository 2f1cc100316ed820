"""Support KPIs from Zendesk: source.py (config, kept tickets, records), fetch.py (the API reads)."""

from exporter.sources.zendesk.source import SOURCE_TYPE, ZendeskConfig, ZendeskSource

__all__ = ["SOURCE_TYPE", "ZendeskConfig", "ZendeskSource"]
