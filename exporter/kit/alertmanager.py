"""Alertmanager routing, generated from the teams of the KPI catalog and the `kit:` config.

Each team routes its critical and warning alerts to a receiver of its own
(`<team>-critical`, `<team>-warning`), whose body comes from `kit.teams` in
Alertmanager's own format; a team or severity without one goes to `default`.
Info alerts go to a daily digest (`kit.digest`, or the default body). A
critical alert silences its warning twin.

Without `kit.teams`, the example routing of the documents: critical alerts
page the owning team (PagerDuty) and post to its chat channel, warnings go
to the channel (business trends are not urgent: repeated daily), anything
unrouted to #kpi-alerts. Its secrets (Slack webhook, PagerDuty keys, SMTP
password) are files under /etc/alertmanager/secrets, never in this file.
"""

from __future__ import annotations

from typing import Any

from exporter import catalog
from exporter.kit.settings import TEAM_SEVERITIES, TEAMS_ALWAYS, Body, KitSettings

SECRETS_DIR = "/etc/alertmanager/secrets"
# Alertmanager's default, written out so the address is visible in the file.
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
# The demo stack's receiver (`kpi-exporter alert-sink`, service alert-sink).
DEMO_SINK_URL = "http://alert-sink:19878/alerts"
DEFAULT, DIGEST = "default", "daily-digest"


def teams(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS) -> list[str]:
    return sorted({kpi.team for kpi in kpis} | set(TEAMS_ALWAYS))


def receiver_name(team: str, severity: str) -> str:
    return f"{team}-{severity}"


# --- the example routing ------------------------------------------------------

def _slack(channel: str) -> dict:
    return {"api_url_file": f"{SECRETS_DIR}/slack_webhook_url", "channel": channel,
            "send_resolved": True,
            "title": '{{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})',
            "text": '{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n'
                    'Runbook: {{ .Annotations.runbook_url }}\n{{ end }}'}


EXAMPLE_GLOBAL = {
    "pagerduty_url": PAGERDUTY_URL,
    "smtp_from": "kpi-exporter@example.com",
    "smtp_smarthost": "smtp.example.com:587",
    "smtp_auth_username": "kpi-exporter@example.com",
    "smtp_auth_password_file": f"{SECRETS_DIR}/smtp_password",
}
EXAMPLE_DEFAULT: Body = {"slack_configs": [_slack("#kpi-alerts")]}
EXAMPLE_DIGEST: Body = {"email_configs": [{"to": "kpi-digest@example.com", "send_resolved": False}]}


def example_teams(team_names: list[str]) -> dict[str, dict[str, Body]]:
    return {team: {
        "critical": {"pagerduty_configs": [{"routing_key_file": f"{SECRETS_DIR}/pagerduty_{team}_key",
                                            "severity": "critical"}],
                     "slack_configs": [_slack(f"#{team}-alerts")]},
        "warning": {"slack_configs": [_slack(f"#{team}-alerts")]},
    } for team in team_names}


# --- the config ---------------------------------------------------------------

def _bodies(kpis: tuple[catalog.Kpi, ...], settings: KitSettings) -> dict[str, Body]:
    """Receiver name -> body: default, the digest, then each team's, in team order."""
    team_names = teams(kpis)
    configured = settings.teams if settings.teams is not None else example_teams(team_names)
    default = settings.default if settings.default is not None else EXAMPLE_DEFAULT
    if settings.digest is not None:
        digest = settings.digest
    elif settings.default is None and settings.teams is None:
        digest = EXAMPLE_DIGEST  # the example, whole
    else:
        digest = default
    bodies = {DEFAULT: default, DIGEST: digest}
    for team in team_names:
        for severity in TEAM_SEVERITIES:
            if severity in configured.get(team, {}):
                bodies[receiver_name(team, severity)] = configured[team][severity]
    return bodies


def routes(kpis: tuple[catalog.Kpi, ...], receivers: set[str]) -> list[dict]:
    result: list[dict[str, Any]] = [{
        "matchers": ['severity="info"'], "receiver": DIGEST,
        "group_wait": "10m", "group_interval": "24h", "repeat_interval": "24h",
    }]
    timing = {"critical": {"group_wait": "30s", "repeat_interval": "1h"},
              "warning": {"repeat_interval": "24h"}}
    for team in teams(kpis):
        own = [{"matchers": [f'severity="{severity}"'],
                "receiver": receiver_name(team, severity), **timing[severity]}
               for severity in TEAM_SEVERITIES if receiver_name(team, severity) in receivers]
        if own:  # a team with no receiver of its own falls through to default
            result.append({"matchers": [f'team="{team}"'], "receiver": DEFAULT, "routes": own})
    return result


def alertmanager_config(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS,
                        settings: KitSettings = KitSettings(), *, demo: bool = False) -> dict:
    """The routing; `demo=True` keeps the same routing tree and receiver names
    but delivers every notification to the alert sink (no accounts needed)."""
    bodies = _bodies(kpis, settings)
    if demo:
        global_settings: dict[str, Any] = {}
        receivers = [{"name": name, "webhook_configs": [{"url": DEMO_SINK_URL,
                                                         "send_resolved": True}]}
                     for name in bodies]
    else:
        global_settings = dict(settings.alertmanager_global if settings.alertmanager_global
                               is not None else EXAMPLE_GLOBAL)
        receivers = [{"name": name, **body} for name, body in bodies.items()]
    global_settings.setdefault("resolve_timeout", "5m")
    return {
        "global": global_settings,
        "route": {
            "receiver": DEFAULT,
            "group_by": ["alertname", "job", "source"],
            "group_wait": "1m",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes(kpis, set(bodies)),
        },
        # A critical alert makes its warning twin (same name, job and source) redundant.
        "inhibit_rules": [{
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["alertname", "job", "source"],
        }],
        "receivers": receivers,
    }
