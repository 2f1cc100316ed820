"""The generated Alertmanager configs: valid for amtool, routed as the reference asks.

The production config (PagerDuty, Slack, e-mail) and the demo one (every
receiver a webhook to the alert sink) share one routing tree.
"""

import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.kit.alertmanager import DEMO_SINK_URL
from exporter.kit.generate import ALERTMANAGER_DEMO_PATH, ALERTMANAGER_PATH, kit_files
from tools import require

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ALERTMANAGER_PATH
DEMO_CONFIG = ROOT / ALERTMANAGER_DEMO_PATH
both_configs = pytest.mark.parametrize("config_path", [CONFIG, DEMO_CONFIG], ids=["production", "demo"])


def amtool() -> str:
    return require("amtool", "prometheus-alertmanager")


def test_committed_configs_match_the_generator():
    files = kit_files()
    assert CONFIG.read_text() == files[ALERTMANAGER_PATH], "run `kpi-exporter generate`"
    assert DEMO_CONFIG.read_text() == files[ALERTMANAGER_DEMO_PATH], "run `kpi-exporter generate`"


@both_configs
def test_amtool_check_config(config_path):
    done = subprocess.run([amtool(), "check-config", str(config_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("labels,receiver", [
    # the reference's routing table: critical pages the owning team ...
    ({"alertname": "KpiMrrDrop", "severity": "critical", "team": "finance"}, "finance-critical"),
    ({"alertname": "KpiSourceDown", "severity": "critical", "team": "engineering"},
     "engineering-critical"),
    # ... a warning goes to the team's chat, info to the daily digest
    ({"alertname": "KpiFailedPaymentsAmountHigh", "severity": "warning", "team": "finance"},
     "finance-warning"),
    ({"alertname": "KpiInputsMissing", "severity": "warning", "team": "engineering"},
     "engineering-warning"),
    ({"alertname": "KpiSomething", "severity": "info", "team": "finance"}, "daily-digest"),
    # anything the tree does not know still reaches somebody
    ({"alertname": "Watchdog", "severity": "none"}, "default"),
])
@both_configs
def test_routes(labels, receiver, config_path):
    args = [f"{k}={v}" for k, v in labels.items()]
    done = subprocess.run([amtool(), "config", "routes", "test", f"--config.file={config_path}",
                           f"--verify.receivers={receiver}", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver


def test_critical_inhibits_its_warning_twin_and_no_secret_is_inline():
    config = yaml.safe_load(CONFIG.read_text())
    [inhibit] = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert set(inhibit["equal"]) == {"alertname", "job", "source"}
    assert config["route"]["group_by"] == ["alertname", "job", "source"]
    text = CONFIG.read_text()
    for inline in ("api_url:", "routing_key:", "smtp_auth_password:", "service_key:"):
        assert inline not in text  # secrets only as *_file


def test_demo_config_routes_like_production_and_only_delivers_to_the_sink():
    production, demo = (yaml.safe_load(p.read_text()) for p in (CONFIG, DEMO_CONFIG))
    assert demo["route"] == production["route"]
    assert demo["inhibit_rules"] == production["inhibit_rules"]
    assert [r["name"] for r in demo["receivers"]] == [r["name"] for r in production["receivers"]]
    for receiver in demo["receivers"]:
        assert set(receiver) == {"name", "webhook_configs"}
        assert [w["url"] for w in receiver["webhook_configs"]] == [DEMO_SINK_URL]
    assert "_file" not in DEMO_CONFIG.read_text()  # the demo needs no secrets
