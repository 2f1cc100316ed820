"""The monitoring kit generated from the catalog: Prometheus rules (and more to come)."""
