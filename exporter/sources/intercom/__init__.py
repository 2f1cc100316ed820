"""Support KPIs from Intercom: source.py (config, kept conversations, records), fetch.py (the search API)."""

from exporter.sources.intercom.source import SOURCE_TYPE, IntercomConfig, IntercomSource

__all__ = ["SOURCE_TYPE", "IntercomConfig", "IntercomSource"]
