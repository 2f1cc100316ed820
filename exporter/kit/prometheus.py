"""The compose stack's Prometheus config, generated so that its scrape job is the kit's job.

The rules select `job="<kit.job>"`; a scrape config under another job name
would leave every alert silent, so the two come from the same setting.
"""

from __future__ import annotations

from exporter.kit.settings import KitSettings

# The compose services (host names inside the stack's network).
EXPORTER_TARGET = "exporter:19877"
ALERTMANAGER_TARGET = "alertmanager:9093"
# The demo's simulated application (`kpi-exporter demo --app-listen`): the example
# kit.platform's probe job and application job. With your own accounts these
# targets are down: your application is scraped by your own Prometheus.
DEMO_APPLICATION = "exporter:19879"


def prometheus_config(settings: KitSettings = KitSettings()) -> dict:
    return {
        "global": {
            "scrape_interval": "15s",
            "evaluation_interval": "15s",  # the generated rule groups follow this
        },
        "rule_files": ["/etc/prometheus/rules/*.yml"],  # alert_rules/ of the kit
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [ALERTMANAGER_TARGET]}]}]},
        "scrape_configs": [
            # The job the generated rules select (kit.job).
            {"job_name": settings.job, "static_configs": [{"targets": [EXPORTER_TARGET]}],
             **(settings.scrape or {})},
            {"job_name": "blackbox", "metrics_path": "/probe",
             "static_configs": [{"targets": [DEMO_APPLICATION]}]},
            {"job_name": "api", "static_configs": [{"targets": [DEMO_APPLICATION]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": ["prometheus:9090"]}]},
            {"job_name": "alertmanager",
             "static_configs": [{"targets": [ALERTMANAGER_TARGET]}]},
        ],
    }
