"""kpi-exporter: business KPIs from SaaS APIs as Prometheus metrics."""

__version__ = "0.1.0"
