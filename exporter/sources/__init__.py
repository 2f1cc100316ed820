"""Upstream systems we poll. Each source type registers itself here by name."""

from exporter.sources import stripe

SOURCE_TYPES = {
    "stripe": stripe.SOURCE_TYPE,
}
