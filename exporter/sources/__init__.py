"""Upstream systems we poll. Each source type registers itself here by name."""

from exporter.sources import hubspot, mailgun, salesforce, stripe

SOURCE_TYPES = {
    "stripe": stripe.SOURCE_TYPE,
    "mailgun": mailgun.SOURCE_TYPE,
    "hubspot": hubspot.SOURCE_TYPE,
    "salesforce": salesforce.SOURCE_TYPE,
}
