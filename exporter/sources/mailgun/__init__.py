"""Email KPIs from Mailgun: see source.py (config and poll), fetch.py (the API), kpis.py (the math)."""

from exporter.sources.mailgun.source import SOURCE_TYPE, MailgunConfig, MailgunSource

__all__ = ["SOURCE_TYPE", "MailgunConfig", "MailgunSource"]
