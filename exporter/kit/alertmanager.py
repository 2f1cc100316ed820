"""Alertmanager routing, generated from the teams in the KPI catalog.

The routing the business documents ask for: critical alerts page the owning
team (PagerDuty) and post to its chat channel, warnings go to the team's
channel (business trends are not urgent: repeated daily), info goes to a
daily e-mail digest, anything unrouted to #kpi-alerts. A critical alert
silences its warning twin. Secrets
(Slack webhook, PagerDuty key, SMTP password) are read from files that
Docker secrets or the operator provide, never from this file.
"""

from __future__ import annotations

from exporter import catalog

SECRETS_DIR = "/etc/alertmanager/secrets"
# Alertmanager's default, written out so the address is visible in the file.
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
# The demo stack's receiver (`kpi-exporter alert-sink`, service alert-sink).
DEMO_SINK_URL = "http://alert-sink:19878/alerts"
# Health alerts belong to engineering even though no KPI names that team.
TEAMS_ALWAYS = ("engineering",)


def teams(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS) -> list[str]:
    return sorted({kpi.team for kpi in kpis} | set(TEAMS_ALWAYS))


def _slack(channel: str) -> dict:
    return {"api_url_file": f"{SECRETS_DIR}/slack_webhook_url", "channel": channel,
            "send_resolved": True,
            "title": '{{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})',
            "text": '{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n'
                    'Runbook: {{ .Annotations.runbook_url }}\n{{ end }}'}


def receivers(team_names: list[str]) -> list[dict]:
    result = [
        {"name": "default",  # anything unrouted reaches somebody
         "slack_configs": [_slack("#kpi-alerts")]},
        {"name": "daily-digest",
         "email_configs": [{"to": "kpi-digest@example.com", "send_resolved": False}]},
    ]
    for team in team_names:
        result.append({
            "name": f"{team}-page",
            "pagerduty_configs": [{"routing_key_file": f"{SECRETS_DIR}/pagerduty_{team}_key",
                                   "severity": "critical"}],
            "slack_configs": [_slack(f"#{team}-alerts")],
        })
        result.append({"name": f"{team}-chat", "slack_configs": [_slack(f"#{team}-alerts")]})
    return result


def routes(team_names: list[str]) -> list[dict]:
    result = [{
        "matchers": ['severity="info"'], "receiver": "daily-digest",
        "group_wait": "10m", "group_interval": "24h", "repeat_interval": "24h",
    }]
    for team in team_names:
        result.append({"matchers": [f'team="{team}"'], "receiver": f"{team}-chat", "routes": [
            {"matchers": ['severity="critical"'], "receiver": f"{team}-page",
             "group_wait": "30s", "repeat_interval": "1h"},
            {"matchers": ['severity="warning"'], "receiver": f"{team}-chat",
             "repeat_interval": "24h"},
        ]})
    return result


def demo_receivers(team_names: list[str]) -> list[dict]:
    """The same receiver names, each a webhook to the demo's alert sink, which
    shows what PagerDuty, Slack or e-mail would have received."""
    return [{"name": receiver["name"],
             "webhook_configs": [{"url": DEMO_SINK_URL, "send_resolved": True}]}
            for receiver in receivers(team_names)]


def alertmanager_config(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS, *,
                        demo: bool = False) -> dict:
    """The routing; `demo=True` keeps the same routing tree and receiver names
    but delivers every notification to the alert sink (no accounts needed)."""
    team_names = teams(kpis)
    global_settings = {"resolve_timeout": "5m"}
    if not demo:
        global_settings.update({
            "pagerduty_url": PAGERDUTY_URL,
            "smtp_from": "kpi-exporter@example.com",
            "smtp_smarthost": "smtp.example.com:587",
            "smtp_auth_username": "kpi-exporter@example.com",
            "smtp_auth_password_file": f"{SECRETS_DIR}/smtp_password",
        })
    return {
        "global": global_settings,
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "source"],
            "group_wait": "1m",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes(team_names),
        },
        # A critical alert makes its warning twin (same name and source) redundant.
        "inhibit_rules": [{
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["alertname", "source"],
        }],
        "receivers": demo_receivers(team_names) if demo else receivers(team_names),
    }
