"""A user's own kit: `kpi-exporter generate --config FILE --out DIR`, checked with the real tools.

The config is the one the README documents: a job of its own, Grafana and
runbook links, Alertmanager's global block, a default receiver, receivers for
two teams, a KPI given to another team and one alert turned off. Nothing
under exporter/ is edited.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from exporter import catalog
from exporter.cli import main
from exporter.kit.generate import (
    ALERTMANAGER_DEMO_PATH, ALERTMANAGER_PATH, DASHBOARDS_DIR, PROMETHEUS_PATH, RULES_PATH,
)
from tools import require

USER_CONFIG = """
sources:
  stripe: {api_key: sk_test_unused}
kit:
  job: biz-kpis
  grafana_url: https://grafana.example.com
  runbook_url: https://wiki.example.com/kpi-runbooks
  alertmanager_global:
    smtp_smarthost: smtp.example.com:587
    smtp_from: kpi@example.com
  default:
    slack_configs: [{channel: "#kpi-alerts", api_url_file: /etc/alertmanager/secrets/slack}]
  teams:
    finance:
      critical: {pagerduty_configs: [{routing_key_file: /etc/alertmanager/secrets/pd-finance}]}
      warning:  {email_configs: [{to: finance@example.com}]}
    marketing:
      warning:  {slack_configs: [{channel: "#marketing", api_url_file: /etc/alertmanager/secrets/slack}]}
kpis:
  mrr: {team: growth}
  failed_payments_amount: {thresholds: {warning: off}}
"""


def generate(tmp_path: Path, text: str):
    config = tmp_path / "kpi-exporter.yml"
    config.write_text(text)
    out = tmp_path / "kit"
    return CliRunner().invoke(main, ["generate", "--config", str(config), "--out", str(out)]), out


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    result, out = generate(tmp_path_factory.mktemp("user"), USER_CONFIG)
    assert result.exit_code == 0, result.output
    return out


def rules(kit: Path) -> list[dict]:
    return [r for g in yaml.safe_load((kit / RULES_PATH).read_text())["groups"] for r in g["rules"]]


def test_the_whole_kit_is_written_in_the_repository_layout(kit):
    assert (kit / RULES_PATH).is_file() and (kit / ALERTMANAGER_PATH).is_file()
    assert (kit / ALERTMANAGER_DEMO_PATH).is_file() and (kit / PROMETHEUS_PATH).is_file()
    assert len(list((kit / DASHBOARDS_DIR).glob("*.json"))) == 8
    assert (kit / "provisioning/alertmanager/secrets").is_dir()  # where the stack mounts them


# --- Alertmanager ---------------------------------------------------------------------

@pytest.mark.parametrize("path", [ALERTMANAGER_PATH, ALERTMANAGER_DEMO_PATH])
def test_amtool_accepts_the_generated_configs(kit, path):
    done = subprocess.run([require("amtool", "prometheus-alertmanager"), "check-config",
                           str(kit / path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


ROUTES = [
    ("finance", "critical", "finance-critical"),
    ("finance", "warning", "finance-warning"),
    ("marketing", "warning", "marketing-warning"),
    ("marketing", "critical", "default"),        # no receiver of its own: the fall-back
    ("growth", "critical", "default"),           # the team mrr was given to, unrouted
    ("sales", "warning", "default"),
    ("support", "critical", "default"),
    ("engineering", "critical", "default"),
    ("finance", "info", "daily-digest"),         # info keeps its digest
]


@pytest.mark.parametrize("team,severity,receiver", ROUTES)
@pytest.mark.parametrize("path", [ALERTMANAGER_PATH, ALERTMANAGER_DEMO_PATH])
def test_every_team_and_severity_routes_where_the_user_said(kit, path, team, severity, receiver):
    done = subprocess.run([require("amtool", "prometheus-alertmanager"), "config", "routes",
                           "test", f"--config.file={kit / path}", f"--verify.receivers={receiver}",
                           "alertname=KpiSomething", f"team={team}", f"severity={severity}",
                           "job=biz-kpis"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_receiver_bodies_are_the_users_and_the_global_block_passes_through(kit):
    config = yaml.safe_load((kit / ALERTMANAGER_PATH).read_text())
    receivers = {r.pop("name"): r for r in config["receivers"]}
    assert set(receivers) == {"default", "daily-digest", "finance-critical", "finance-warning",
                              "marketing-warning"}
    assert receivers["finance-critical"] == {
        "pagerduty_configs": [{"routing_key_file": "/etc/alertmanager/secrets/pd-finance"}]}
    assert receivers["daily-digest"] == receivers["default"]  # no kit.digest: to default
    assert config["global"] == {"smtp_smarthost": "smtp.example.com:587",
                                "smtp_from": "kpi@example.com", "resolve_timeout": "5m"}


# --- Prometheus rules -------------------------------------------------------------------

def test_promtool_check_rules(kit):
    done = subprocess.run([require("promtool", "prometheus"), "check", "rules",
                           str(kit / RULES_PATH)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_expression_selects_the_users_job_and_links_point_at_the_users_sites(kit):
    for rule in rules(kit):
        if (rule.get("record") or rule.get("alert") or "").startswith(("platform:", "Platform")):
            continue  # the platform's own series select the platform's jobs (kit.platform)
        assert 'job="biz-kpis"' in rule["expr"] and "kpi-exporter\"" not in rule["expr"], rule
        if "alert" in rule:
            notes = rule["annotations"]
            assert notes["runbook_url"] == f"https://wiki.example.com/kpi-runbooks#{rule['alert'].lower()}"
            assert notes["dashboard_url"].startswith("https://grafana.example.com/d/kpi-")
            assert "?var-job=biz-kpis" in notes["dashboard_url"]


def test_the_reassigned_kpi_and_the_alert_turned_off(kit):
    by_name: dict[str, list[dict]] = {}
    for rule in rules(kit):
        if "alert" in rule:
            by_name.setdefault(rule["alert"], []).append(rule)
    assert [r["labels"]["team"] for r in by_name["KpiMrrDrop"]] == ["growth"]
    assert [r["labels"]["severity"] for r in by_name["KpiFailedPaymentsAmountHigh"]] == ["critical"]


def breaking_series(job: str) -> list[dict]:
    """For every threshold of the catalog, series that break it, under `job`."""
    result = []
    for kpi in catalog.KPIS:
        for threshold in kpi.thresholds:
            labels = {label: "x" for label in kpi.labels}
            labels.update(job=job, instance="i:1")
            if threshold.window:
                labels["window"] = threshold.window
            if kpi.key == "mrr":
                metric, value = catalog.by_key()["mrr_growth_rate"].metric, -1.0
            elif threshold.kind == "drop":  # the short window at 0, its baseline at 1
                metric, value = kpi.metric, 0.0
                result.append((metric, {**labels, "window": threshold.baseline}, 1.0))
            else:
                metric = kpi.metric
                value = threshold.value * 2 + 1 if threshold.kind == "above" else -1.0
            result.append((metric, labels, value))
    return [{"series": metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
             "values": f"{value}x90"} for metric, labels, value in result]


def test_series_of_another_job_fire_nothing(kit, tmp_path):
    """Every threshold broken and the exporter down, all under job kpi-exporter: the
    user's kit (job biz-kpis, healthy) stays quiet, every alert of it."""
    healthy = [{"series": 'up{job="biz-kpis",instance="i:1"}', "values": "1x90"},
               {"series": 'kpi_source_up{job="biz-kpis",instance="i:1",source="x"}',
                "values": "1x90"},
               {"series": 'kpi_mrr{job="biz-kpis",instance="i:1",source="x"}', "values": "1x90"}]
    stranger = [{"series": 'up{job="kpi-exporter",instance="i:1"}', "values": "0x90"},
                {"series": 'kpi_source_up{job="kpi-exporter",instance="i:1",source="x"}',
                 "values": "0x90"}] + breaking_series("kpi-exporter")
    names = sorted({r["alert"] for r in rules(kit) if "alert" in r})
    test = {"rule_files": [str(kit / RULES_PATH)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": healthy + stranger,
                       "alert_rule_test": [{"eval_time": "80m", "alertname": name,
                                            "exp_alerts": []} for name in names]}]}
    path = tmp_path / "quiet_test.yml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run([require("promtool", "prometheus"), "test", "rules", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_users_job_fires_with_the_users_team_and_links(kit, tmp_path):
    series = [{"series": 'kpi_mrr_growth_ratio{job="biz-kpis",instance="a:1",source="stripe",'
                         'window="30d"}', "values": "-0.06x20"},
              {"series": 'kpi_mrr_growth_ratio{job="biz-kpis",instance="b:1",source="stripe",'
                         'window="30d"}', "values": "-0.07x20"}]  # two replicas: one alert
    test = {"rule_files": [str(kit / RULES_PATH)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [{
                "eval_time": "10m", "alertname": "KpiMrrDrop",
                "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "team": "growth", "job": "biz-kpis",
                                   "source": "stripe", "window": "30d"},
                    "exp_annotations": {
                        "summary": "MRR fell by more than 5% over 30d.",
                        "description": "kpi_mrr from stripe is -7% change; the critical "
                                       "threshold: fell by more than 5% over 30d.",
                        "runbook_url": "https://wiki.example.com/kpi-runbooks#kpimrrdrop",
                        "dashboard_url": "https://grafana.example.com/d/kpi-revenue"
                                         "?var-job=biz-kpis&var-source=stripe"}}]}]}]}
    path = tmp_path / "fires_test.yml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run([require("promtool", "prometheus"), "test", "rules", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# --- Prometheus scrape config and dashboards ------------------------------------------

def test_the_stacks_prometheus_scrapes_the_users_job(kit):
    config = yaml.safe_load((kit / PROMETHEUS_PATH).read_text())
    assert config["scrape_configs"][0] == {"job_name": "biz-kpis",
                                           "static_configs": [{"targets": ["exporter:19877"]}]}


def test_every_dashboard_query_names_the_job_variable_which_opens_on_the_users_job(kit):
    for path in (kit / DASHBOARDS_DIR).glob("*.json"):
        board = json.loads(path.read_text())
        [job] = [v for v in board["templating"]["list"] if v["name"] == "job"]
        assert job["current"]["value"] == "biz-kpis"
        for panel in board["panels"]:
            for target in panel["targets"]:
                if "kpi_" in target["expr"]:  # the platform's series are the platform's jobs
                    assert re.search(r'job=~"\$job"', target["expr"]), (path.name, target["expr"])


# --- bad input ----------------------------------------------------------------------

BASE = "sources: {stripe: {api_key: sk_test_unused}}\n"


@pytest.mark.parametrize("text,key", [
    ("kit: {teams: {legal: {critical: {email_configs: [{to: a@example.com}]}}}}",
     "kit.teams.legal"),
    ("kit: {teams: {finance: {page: {email_configs: [{to: a@example.com}]}}}}",
     "kit.teams.finance.page"),
    ("kit: {teams: {finance: {info: {email_configs: [{to: a@example.com}]}}}}",
     "kit.teams.finance.info"),
    ("kit: {teams: {finance: {critical: [pagerduty]}}}", "kit.teams.finance.critical"),
    ("kit: {default: slack}", "kit.default"),
    ("kit: {default: {name: mine, slack_configs: [{channel: x}]}}", "kit.default.name"),
    ("kit: {default: {slack_configs: {channel: x}}}", "kit.default.slack_configs"),
    ("kit: {job: 'biz kpis'}", "kit.job"),
    ('kit: {job: "a\\"b"}', "kit.job"),
    ("kit: {grafana_url: grafana.example.com}", "kit.grafana_url"),
    ("kit: {runbook_url: 'ftp://wiki.example.com/x'}", "kit.runbook_url"),
    ("kit: {alertmanager_global: [smtp]}", "kit.alertmanager_global"),
    ("kit: {colour: red}", "kit.colour"),
    ("kpis: {mrr: {team: Growth Team}}", "kpis.mrr.team"),
])
def test_bad_kit_config_is_one_line_naming_the_key_and_writes_nothing(tmp_path, text, key):
    result, out = generate(tmp_path, BASE + text + "\n")
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert f"kpi-exporter.yml: {key}:" in line, line
    assert not out.exists()


@pytest.mark.parametrize("body,key", [
    ("{slack_configs: [{channel: x, api_url: 'https://hooks.slack.com/services/T0/B0/s3cr3t'}]}",
     "kit.default.slack_configs[0].api_url"),
    ("{pagerduty_configs: [{routing_key: r0ut1ngk3y}]}", "kit.default.pagerduty_configs[0].routing_key"),
    ("{webhook_configs: [{url: 'http://x', http_config: {basic_auth: {username: u, password: pw}}}]}",
     "kit.default.webhook_configs[0].http_config.basic_auth.password"),
])
def test_a_receiver_with_a_secret_inline_is_refused_with_a_hint(tmp_path, body, key):
    result, _ = generate(tmp_path, BASE + f"kit: {{default: {body}}}\n")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert f"{key}: a secret written inline" in line and "_file" in line
    for secret in ("s3cr3t", "r0ut1ngk3y", "pw"):
        assert f" {secret}" not in line and f"'{secret}" not in line


def test_an_alert_turned_off_with_a_quoted_off_or_false(tmp_path):
    for index, value in enumerate(("off", "false", "'off'")):
        (tmp_path / str(index)).mkdir()
        result, out = generate(tmp_path / str(index), BASE +
                               f"kpis: {{failed_payments_amount: {{thresholds: {{warning: {value}}}}}}}\n")
        assert result.exit_code == 0, result.output
        severities = [r["labels"]["severity"] for r in rules(out)
                      if r.get("alert") == "KpiFailedPaymentsAmountHigh"]
        assert severities == ["critical"]


def test_generate_writes_all_files_or_none(tmp_path):
    out = tmp_path / "kit"
    (out / DASHBOARDS_DIR / "sales.json").mkdir(parents=True)  # a file it cannot write
    config = tmp_path / "kpi.yml"
    config.write_text(BASE)
    result = CliRunner().invoke(main, ["generate", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 1
    assert "nothing was changed" in result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == []  # no half kit, no temporary files left behind


def test_the_scrape_job_reaches_an_exporter_behind_tls_and_basic_auth(tmp_path):
    text = BASE + ("kit:\n  scrape:\n    scheme: https\n"
                   "    tls_config: {ca_file: /etc/prometheus/secrets/ca.crt}\n"
                   "    basic_auth: {username: prometheus, "
                   "password_file: /etc/prometheus/secrets/scrape-password}\n")
    result, out = generate(tmp_path, text)
    assert result.exit_code == 0, result.output
    job = yaml.safe_load((out / PROMETHEUS_PATH).read_text())["scrape_configs"][0]
    assert job["scheme"] == "https" and job["basic_auth"]["username"] == "prometheus"
    done = subprocess.run([require("promtool", "prometheus"), "check", "config",
                           "--syntax-only", str(out / PROMETHEUS_PATH)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    for bad, key in (("kit: {scrape: {basic_auth: {username: p, password: hunter2}}}",
                      "kit.scrape.basic_auth.password"),
                     ("kit: {scrape: {job_name: other}}", "kit.scrape.job_name")):
        (tmp_path / key).mkdir()
        result, _ = generate(tmp_path / key, BASE + bad + "\n")
        assert result.exit_code == 2 and f"{key}:" in result.stderr
        assert "hunter2" not in result.stderr


CUSTOM_KIT = """
sources:
  sql:
    databases: {app: {url: "postgresql+psycopg://kpi@db.example.com/app"}}
custom_kpis:
  signups:
    database: app
    help: Accounts created in the trailing 24 hours
    sql: "SELECT plan, count(*) AS value FROM accounts WHERE created_at > :now - interval '1 day' GROUP BY plan"
    labels: [plan]
    target: 50
    direction: above
    thresholds: {warning: {below: 20}}
    team: growth
kit:
  teams:
    growth:
      warning: {email_configs: [{to: growth@example.com}]}
"""


def test_a_custom_kpi_is_a_first_class_catalog_entry(tmp_path):
    result, kit = generate(tmp_path, CUSTOM_KIT)
    assert result.exit_code == 0, result.output
    # an alert from its threshold, tested by promtool: fires at 19, quiet at 20
    series = [{"series": 'kpi_signups{job="kpi-exporter",instance="i:1",source="sql",plan="pro"}',
               "values": "19x40"},
              {"series": 'kpi_signups{job="kpi-exporter",instance="i:1",source="sql",plan="free"}',
               "values": "20x40"}]
    test = {"rule_files": [str(kit / RULES_PATH)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [{
                "eval_time": "31m", "alertname": "KpiSignupsLow", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "team": "growth", "job": "kpi-exporter",
                                   "source": "sql", "plan": "pro"},
                    "exp_annotations": {
                        "summary": "Signups is below 20.",
                        "description": "kpi_signups from sql plan pro is 19; the warning "
                                       "threshold: is below 20.",
                        "runbook_url": "https://github.com/kpi-exporter/kpi-exporter/blob/main/"
                                       "docs/runbooks.md#kpisignupslow",
                        "dashboard_url": "http://localhost:3000/d/kpi-product"
                                         "?var-job=kpi-exporter&var-source=sql"}}]}]}]}
    path = tmp_path / "custom_test.yml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run([require("promtool", "prometheus"), "test", "rules", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # routed to its team by amtool
    done = subprocess.run([require("amtool", "prometheus-alertmanager"), "config", "routes",
                           "test", f"--config.file={kit / ALERTMANAGER_PATH}",
                           "--verify.receivers=growth-warning", "alertname=KpiSignupsLow",
                           "team=growth", "severity=warning"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # a dashboard panel, and a line in the kit's docs
    board = json.loads((kit / DASHBOARDS_DIR / "product.json").read_text())
    [panel] = [p for p in board["panels"] if p["title"] == "Signups"]
    assert panel["targets"][0]["expr"].startswith('kpi_signups{job=~"$job"')
    assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 50
    assert "| `kpi_signups` |" in (kit / "docs/kpis.md").read_text()
