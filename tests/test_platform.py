"""The demo's simulated application (what the platform SLOs watch) and kit.platform's config."""

from __future__ import annotations

import subprocess

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import ConfigError, parse
from exporter.kit.rules import rule_groups
from exporter.server import BackgroundHttpServer
from exporter.simulator.application import FakeApplication
from tools import require

S = "sources: {stripe: {api_key: sk_test_1}}\n"


def scrape(app: FakeApplication, path: str) -> dict:
    server = BackgroundHttpServer("127.0.0.1", 0, app.wsgi).start()
    try:
        text = requests.get(f"http://127.0.0.1:{server.port}{path}", timeout=5).text
    finally:
        server.stop()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_a_calm_application_keeps_its_objectives_and_counters_only_grow():
    now = {"t": 1000.0}
    app = FakeApplication(clock=lambda: now["t"])
    now["t"] += 300
    first = scrape(app, "/metrics")
    ok, failed = (first[("http_requests_total", (("code", c), ("method", "GET")))]
                  for c in ("200", "500"))
    assert ok + failed == 6000 and failed == 3                 # 20/s for 5 min, 0.05 % errors
    assert failed / (ok + failed) < 0.001                      # inside the 99.9 % objective
    # 95 % of requests: between the 0.25 s (80 %) and 0.5 s (96.5 %) buckets: under 500 ms
    assert first[("http_request_duration_seconds_bucket", (("le", "0.5"),))] >= 0.95 * 6000
    assert scrape(app, "/probe")[("probe_success", ())] == 1
    now["t"] += 60
    later = scrape(app, "/metrics")
    assert all(later[key] >= value for key, value in first.items())


def test_an_outage_fails_the_probe_half_the_requests_and_the_latency():
    now = {"t": 0.0}
    app = FakeApplication(outage=True, clock=lambda: now["t"])
    now["t"] = 600
    found = scrape(app, "/metrics")
    assert found[("http_requests_total", (("code", "500"), ("method", "GET")))] == 6000
    assert found[("http_request_duration_seconds_bucket", (("le", "2"),))] < 0.95 * 12000
    assert scrape(app, "/probe")[("probe_success", ())] == 0


def test_promtool_accepts_the_applications_exposition():
    app = FakeApplication(clock=lambda: 1e9)
    for text in (app.metrics(), app.probe()):
        done = subprocess.run([require("promtool", "prometheus"), "check", "metrics"],
                              input=text, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


# --- kit.platform ------------------------------------------------------------------

def records(config_text: str) -> dict[str, str]:
    config = parse(S + config_text, "kpi.yml", {})
    return {r.get("record") or r["alert"]: r["expr"]
            for g in rule_groups(config.kpis, config.kit)["groups"] for r in g["rules"]}


def test_the_users_own_selectors_and_objectives_reach_every_rule(tmp_path):
    found = records("""
kit:
  platform:
    availability: {probe: 'probe_success{job="probes",env="prod"}', objective: 0.995}
    requests:
      total: 'nginx_requests_total{service="web"}'
      errors: 'nginx_requests_total{service="web",status=~"5.."}'
      latency_histogram: 'nginx_request_seconds_bucket{service="web"}'
      error_objective: 0.99
      latency_p95_warning: 1500ms
""")
    assert found["platform:availability:ratio_1h"] == \
        'avg(avg_over_time(probe_success{job="probes",env="prod"}[1h]))'
    assert found["platform:availability:budget_remaining_ratio"] == \
        "1 - (1 - platform:availability:ratio_30d) / 0.005"
    assert 'sum(rate(nginx_requests_total{service="web",status=~"5.."}[5m]))' in \
        found["platform:request_errors:ratio_5m"]
    assert found["PlatformLatencyHigh"] == "platform:request_latency_seconds:p95_5m > 1.5"
    assert found["PlatformErrorBudgetBurn"].startswith("platform:request_errors:ratio_3d / 0.01 > 1")
    path = tmp_path / "rules.yml"
    config = parse(S + "kit: {platform: {availability: {probe: up}}}\n", "kpi.yml", {})
    path.write_text(yaml.safe_dump(rule_groups(config.kpis, config.kit)))
    done = subprocess.run([require("promtool", "prometheus"), "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_absent_part_generates_nothing():
    only = records("kit: {platform: {availability: {probe: probe_success}}}\n")
    assert "PlatformDown" in only and not any(k.startswith(("platform:request", "PlatformError",
                                                            "PlatformLatency")) for k in only)
    none = records("kit: {platform: {}}\n")
    assert not any(k.startswith(("platform:", "Platform")) for k in none)
    assert "KpiIntegrationSyncSuccessLow" in none  # the exporter's own: always
    no_histogram = records("kit: {platform: {requests: {total: a_total, errors: b_total}}}\n")
    assert "PlatformErrorRatioHigh" in no_histogram and "PlatformLatencyHigh" not in no_histogram


@pytest.mark.parametrize("text,key", [
    ("kit: {platform: {availability: {probe: 'rate(x[5m])'}}}", "kit.platform.availability.probe"),
    ("kit: {platform: {availability: {probe: up, objective: 99.9}}}",
     "kit.platform.availability.objective"),
    ("kit: {platform: {requests: {total: a_total}}}", "kit.platform.requests.errors"),
    ("kit: {platform: {requests: {total: a, errors: b, latency_p95_warning: soon}}}",
     "kit.platform.requests.latency_p95_warning"),
    ("kit: {platform: {latency: {}}}", "kit.platform.latency"),
])
def test_bad_platform_config(text, key):
    with pytest.raises(ConfigError) as caught:
        parse(S + text + "\n", "kpi.yml", {})
    assert str(caught.value).startswith(f"kpi.yml: {key}:"), str(caught.value)
