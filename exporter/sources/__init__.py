"""Upstream systems we poll. Each source type registers itself here by name."""

from exporter.sources import hubspot, intercom, mailgun, salesforce, sql, stripe, zendesk

SOURCE_TYPES = {
    "stripe": stripe.SOURCE_TYPE,
    "mailgun": mailgun.SOURCE_TYPE,
    "hubspot": hubspot.SOURCE_TYPE,
    "salesforce": salesforce.SOURCE_TYPE,
    "zendesk": zendesk.SOURCE_TYPE,
    "intercom": intercom.SOURCE_TYPE,
    "sql": sql.SOURCE_TYPE,
}
