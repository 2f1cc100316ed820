"""Sales pipeline KPIs from HubSpot: source.py (config, kept state, records), fetch.py (the CRM v3 API)."""

from exporter.sources.hubspot.source import SOURCE_TYPE, HubSpotConfig, HubSpotSource

__all__ = ["SOURCE_TYPE", "HubSpotConfig", "HubSpotSource"]
