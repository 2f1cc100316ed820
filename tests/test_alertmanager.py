"""The generated Alertmanager config: valid for amtool, routed as the reference asks."""

import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.kit.generate import ALERTMANAGER_PATH, kit_files
from tools import require

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ALERTMANAGER_PATH


def amtool() -> str:
    return require("amtool", "prometheus-alertmanager")


def test_committed_config_matches_the_generator():
    assert CONFIG.read_text() == kit_files()[ALERTMANAGER_PATH], "run `kpi-exporter generate`"


def test_amtool_check_config():
    done = subprocess.run([amtool(), "check-config", str(CONFIG)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("labels,receiver", [
    # the reference's routing table: critical pages the owning team ...
    ({"alertname": "KpiMrrDrop", "severity": "critical", "team": "finance"}, "finance-page"),
    ({"alertname": "KpiSourceDown", "severity": "critical", "team": "engineering"},
     "engineering-page"),
    # ... a warning goes to the team's chat, info to the daily digest
    ({"alertname": "KpiFailedPaymentsAmountHigh", "severity": "warning", "team": "finance"},
     "finance-chat"),
    ({"alertname": "KpiInputsMissing", "severity": "warning", "team": "engineering"},
     "engineering-chat"),
    ({"alertname": "KpiSomething", "severity": "info", "team": "finance"}, "daily-digest"),
    # anything the tree does not know still reaches somebody
    ({"alertname": "Watchdog", "severity": "none"}, "default"),
])
def test_routes(labels, receiver):
    args = [f"{k}={v}" for k, v in labels.items()]
    done = subprocess.run([amtool(), "config", "routes", "test", f"--config.file={CONFIG}",
                           f"--verify.receivers={receiver}", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver


def test_critical_inhibits_its_warning_twin_and_no_secret_is_inline():
    config = yaml.safe_load(CONFIG.read_text())
    [inhibit] = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert set(inhibit["equal"]) == {"alertname", "source"}
    assert config["route"]["group_by"] == ["alertname", "source"]
    text = CONFIG.read_text()
    for inline in ("api_url:", "routing_key:", "smtp_auth_password:", "service_key:"):
        assert inline not in text  # secrets only as *_file
