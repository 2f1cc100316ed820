"""The generated Prometheus rules: current, valid, conventional, and tested with promtool."""

import json
import re
import subprocess
from pathlib import Path

import yaml
from click.testing import CliRunner

from exporter import catalog
from exporter.cli import main
from exporter.kit.generate import RULES_PATH, kit_files
from tools import require

ROOT = Path(__file__).resolve().parents[1]
PROMTOOL_TESTS = ("tests/promtool/alerts_test.yml", "tests/promtool/platform_test.yml")
RULES = ROOT / RULES_PATH
ALLOWED_TEAMS = {"finance", "sales", "marketing", "support", "engineering", "product",
                 "customer-success"}


def promtool() -> str:
    return require("promtool", "prometheus")


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_committed_rules_match_the_generator():
    assert RULES.read_text() == kit_files()[RULES_PATH], "run `kpi-exporter generate`"


def test_promtool_check_rules():
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass():
    done = subprocess.run([promtool(), "test", "rules", *PROMTOOL_TESTS],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _seconds(duration: str | None) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration or ""))


def test_every_alert_has_a_firing_and_a_quiet_promtool_case():
    """Fires: expected alerts with their labels and annotations. Quiet: no alert at
    a time past the rule's `for:` (a pending alert is not a quiet one)."""
    holds = {rule["alert"]: _seconds(rule.get("for")) for rule in rules() if "alert" in rule}
    fires, quiet = set(), set()
    cases = [case for path in PROMTOOL_TESTS
             for case in yaml.safe_load((ROOT / path).read_text())["tests"]]
    for case in (c for test in cases for c in test.get("alert_rule_test", [])):
        name, expected = case["alertname"], case.get("exp_alerts") or []
        if expected and all("exp_labels" in a and "exp_annotations" in a for a in expected):
            fires.add(name)
        elif not expected and _seconds(case["eval_time"]) >= holds[name]:
            quiet.add(name)
    assert set(holds) - fires == set(), "alerts without a firing case"
    assert set(holds) - quiet == set(), "alerts without a quiet case"


def test_alert_conventions():
    from exporter.kit.rules import alert_name
    thresholds = {(alert_name(k, t), t.severity): t for k in catalog.KPIS for t in k.thresholds}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        assert len(group["rules"]) <= 20, group["name"]
    for rule in rules():
        if "alert" not in rule:
            assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]
            continue
        name, labels, notes = rule["alert"], rule["labels"], rule["annotations"]
        # the exporter's own and the KPIs' alerts are Kpi*, the platform's Platform*
        assert re.fullmatch(r"(Kpi|Platform)([A-Z][a-z0-9]*)+", name) and len(name) <= 40, name
        assert labels["severity"] in {"critical", "warning", "info"}
        assert labels["team"] in ALLOWED_TEAMS
        assert "{{" not in notes["summary"] and notes["summary"].endswith("."), name
        assert "{{" in notes["description"], name
        assert notes["runbook_url"].endswith("#" + name.lower())
        assert re.fullmatch(r"http://localhost:3000/d/kpi-[a-z-]+\?var-job=kpi-exporter"
                            r"(&var-source=\{\{ \$labels.source \}\})?", notes["dashboard_url"])
        threshold = thresholds.get((name, labels["severity"]))
        if threshold is not None and threshold.hold == "0s":
            assert "for" not in rule, name  # an event fires at once
        elif name.endswith("BudgetBurn"):
            assert "for" not in rule, name  # its two windows are the hold
        else:
            assert rule["for"], name


def test_every_metric_in_an_expression_exists():
    known = {k.metric for k in catalog.KPIS} | {h.metric for h in catalog.HEALTH}
    known |= {rule["record"] for rule in rules() if "record" in rule}
    known.add("up")  # Prometheus' own
    # the example kit.platform's series: the probe and the application's metrics
    known |= {"probe_success", "http_requests_total", "http_request_duration_seconds_bucket"}
    words = {"offset", "ignoring", "on", "unless", "and", "or", "by", "without", "time",
             "avg", "avg_over_time", "rate", "increase", "histogram_quantile",
             "clamp_min", "bool", "count", "sum", "group_left", "max", "min", "absent"}
    for rule in rules():
        expr = re.sub(r'\{[^}]*\}|"[^"]*"|\b(?:ignoring|on|by|without)\s*\([^)]*\)', "",
                      rule["expr"])
        for name in re.findall(r"(?<![\w:])([a-zA-Z_:][\w:]*)", expr):
            assert name in words or name in known, f"{name} in {rule['expr']}"


def test_a_threshold_override_shows_in_the_generated_rule(tmp_path):
    config = tmp_path / "kpi.yml"
    config.write_text("sources: {stripe: {api_key: sk_test_1234}}\n"
                      "kpis: {customer_churn_rate: {thresholds: {critical: 0.1}}}\n")
    result = CliRunner().invoke(main, ["generate", "--config", str(config), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    generated = (tmp_path / RULES_PATH).read_text()
    assert 'kpi_customer_churn_ratio{job="kpi-exporter",window="30d"} > 0.1)' in generated
    assert 'kpi_customer_churn_ratio{job="kpi-exporter",window="30d"} > 0.07)' not in generated
    assert 'kpi_customer_churn_ratio{job="kpi-exporter",window="30d"} > 0.03)' in generated


def test_dashboard_links_point_at_generated_dashboards():
    uids = {json.loads(p.read_text())["uid"] for p in (ROOT / "dashboards").glob("*.json")}
    for rule in rules():
        if "alert" in rule:
            uid = rule["annotations"]["dashboard_url"].split("?")[0].rsplit("/", 1)[-1]
            assert uid in uids


def test_every_alert_has_a_runbook_section():
    headings = {line[3:].strip().lower() for line in (ROOT / "docs/runbooks.md").read_text().splitlines()
                if line.startswith("## ")}
    for rule in rules():
        if "alert" in rule:
            assert rule["alert"].lower() in headings, rule["alert"]
            assert rule["annotations"]["runbook_url"].endswith("docs/runbooks.md#" + rule["alert"].lower())
