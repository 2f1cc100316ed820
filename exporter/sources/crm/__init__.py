"""What the CRM sources share: the pipeline records and the pure KPI math (pipeline.py),
and the samples exported from them (export.py)."""
