"""Stripe: revenue and customer KPIs from the billing system of record."""

from exporter.sources.stripe.source import SOURCE_TYPE, StripeConfig, StripeSource

__all__ = ["SOURCE_TYPE", "StripeConfig", "StripeSource"]
