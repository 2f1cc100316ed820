"""What the helpdesk sources (Zendesk, Intercom) share: ticket records, the support
KPI math on them, and the samples they export."""
