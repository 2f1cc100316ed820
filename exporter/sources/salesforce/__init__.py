"""Sales pipeline KPIs from Salesforce: source.py (config, records), fetch.py (the SOQL
queries), api.py (the OAuth token, calls and query batches)."""

from exporter.sources.salesforce.source import SOURCE_TYPE, SalesforceConfig, SalesforceSource

__all__ = ["SOURCE_TYPE", "SalesforceConfig", "SalesforceSource"]
