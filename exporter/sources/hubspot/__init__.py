"""Sales pipeline KPIs from HubSpot (in progress: fetch.py talks to the CRM v3 API)."""
