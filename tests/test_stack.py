"""The docker compose stack, proven end to end without Docker.

tests/native_stack.py runs docker-compose.yml's services as local processes
(the demo exporter, the alert sink, Debian's Alertmanager and Prometheus) with
the files from provisioning/, rewriting only host names and mount paths. The
demo runs the large-churn scenario, as a user's `.env` would ask for it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests
import yaml

from exporter.kit.alertmanager import DEMO_SINK_URL
from exporter.kit.generate import DASHBOARDS_DIR, RULES_PATH
from exporter.kit.settings import KitSettings
from native_stack import DEBIAN_BINARIES, ROOT, NativeStack, bind_mounts, load_compose
from tools import require

pytestmark = pytest.mark.timeout(300)
# The tests that start processes and wait on them; `pytest -m "not slow"` skips them.
slow = pytest.mark.slow

SCENARIO = "large-churn"
SCENARIO_ALERT = {"alertname": "KpiLargestChurnArrHigh", "severity": "critical",
                  "team": "finance", "source": "stripe", "window": "24h", "job": "kpi-exporter"}
SCENARIO_RECEIVER = "finance-critical"
# Grafana's built-in variables, made concrete for a 15 s scrape interval, and the
# dashboards' own as they open: the kit's job, every instance and source.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
                     "$job": "kpi-exporter", "$instance": ".*", "$source": ".*"}


def eventually(check, timeout: float, what: str, stack: NativeStack, every: float = 1.0,
               detail=None):
    """Poll `check` until it returns a truthy value; fail with the logs otherwise.

    `detail`, when given, is called on failure to say what was still wrong.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (requests.RequestException, KeyError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    logs = "\n".join(f"--- {name}\n{stack.log(name, 1500)}" for name in stack.processes)
    why = f"; {detail()}" if detail else ""
    pytest.fail(f"{what} within {timeout}s (last: {last!r}{why})\n{logs}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    for binary, package in DEBIAN_BINARIES.values():
        require(binary, package)
    stack = NativeStack(tmp_path_factory.mktemp("stack"), {"KPI_DEMO_SCENARIO": SCENARIO})
    try:
        yield stack.start(skip={"grafana"})
    finally:
        stack.stop()


def prometheus(stack: NativeStack, path: str, **params) -> dict:
    reply = requests.get(stack.url("prometheus", 9090) + path, params=params, timeout=10)
    reply.raise_for_status()
    return reply.json()["data"]


# --------------------------------------------------------------------------- the running stack


@slow
def test_prometheus_scrapes_the_exporter(stack):
    def exporter_up():
        targets = prometheus(stack, "/api/v1/targets")["activeTargets"]
        return [t for t in targets if t["labels"]["job"] == "kpi-exporter"
                and t["health"] == "up"]

    [target] = eventually(exporter_up, 60, "the kpi-exporter target is up", stack)
    assert target["scrapeUrl"] == stack.url("exporter", 19877) + "/metrics"


@slow
def test_the_backfill_gave_prometheus_the_past_before_it_first_scraped(stack):
    """The one-shot backfill service ran first: the revenue dashboard's MRR panel
    (a year, whatever the dashboard's range) has a sample every day of its year,
    under the labels the live scrape gives, and the live samples continue it; the
    sql source has its year too."""
    now = time.time()
    day = 86400

    def series_at(query: str, at: float) -> list[dict]:
        return prometheus(stack, "/api/v1/query", query=query, time=at)["result"]

    revenue = json.loads((ROOT / DASHBOARDS_DIR / "revenue.json").read_text())
    [panel] = [p for p in revenue["panels"] if p["title"] == "MRR, the last 12 months"]
    assert panel["timeFrom"] == "1y"
    mrr = panel["targets"][0]["expr"]
    for name, value in GRAFANA_VARIABLES.items():
        mrr = mrr.replace(name, value)

    [current] = eventually(lambda: series_at(mrr, time.time()), 60, "a live kpi_mrr", stack)
    for days_ago in (20, 29, 30, 90, 300, 364):  # the events' month, then paid invoices
        at = now // day * day - days_ago * day + 60  # a minute after that midnight's sample
        [found] = series_at(mrr, at)
        assert found["metric"] == current["metric"], days_ago  # one series: job, instance, source
        assert float(found["value"][1]) > 0, days_ago
    product = 'kpi_product_active_users{job="kpi-exporter",window="30d"}'
    assert series_at(product, now // day * day - 300 * day + 60)
    # What Grafana asks for the panel: a step of its interval, the range aligned to it.
    assert panel["interval"] == "1d"
    end = now // day * day
    [year] = prometheus(stack, "/api/v1/query_range", query=mrr, start=end - 364 * day,
                        end=end, step=day)["result"]
    assert len(year["values"]) == 365  # a point at every midnight the backfill wrote

    # The backfill-rules one-shot gave the recording rules the same past (Prometheus
    # loads new blocks once a minute): ARR 300 days ago is 12 x MRR then.
    at = now // day * day - 300 * day
    [mrr_then] = series_at(mrr, at)

    def arr_then():
        return series_at('source:kpi_arr:mrr_x12{job="kpi-exporter"}', at)

    [arr] = eventually(arr_then, 150, "ARR 300 days ago, from the backfill-rules one-shot", stack)
    assert float(arr["value"][1]) == pytest.approx(12 * float(mrr_then["value"][1]), rel=1e-12)
    [wow] = series_at('source:kpi_mrr:change_ratio_1w{job="kpi-exporter"}', at)
    assert -1 < float(wow["value"][1]) < 1
    assert (stack.workdir / "volumes" / "prometheus-data" / "kpi-exporter-rules-backfill.done"
            ).exists()
    assert (stack.workdir / "volumes" / "prometheus-data" / "kpi-exporter-backfill.done").exists()


@slow
def test_every_rule_group_loads_and_evaluates_healthy(stack):
    expected = {g["name"]: len(g["rules"])
                for g in yaml.safe_load((ROOT / RULES_PATH).read_text())["groups"]}

    def evaluated():
        groups = prometheus(stack, "/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return groups if rules and all(r["health"] != "unknown" for r in rules) else None

    groups = eventually(evaluated, 60, "every rule evaluated", stack)
    assert {g["name"]: len(g["rules"]) for g in groups} == expected
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (group["name"], rule["name"], rule.get("lastError"))


def dashboard_queries() -> list[tuple[str, str, str]]:
    found = []

    def walk(panels):
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for path in sorted((ROOT / DASHBOARDS_DIR).glob("*.json")):
        for panel in walk(json.loads(path.read_text())["panels"]):
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


@slow
def test_every_dashboard_query_returns_data(stack):
    def concrete(expr: str) -> str:
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        return expr

    queries = dashboard_queries()
    assert len(queries) > 20

    missing = queries

    def all_have_data():
        nonlocal missing
        missing = [(name, title, expr) for name, title, expr in queries
                   if not prometheus(stack, "/api/v1/query", query=concrete(expr))["result"]]
        return not missing

    # rate() needs two scrapes: wait until every query has data
    assert eventually(all_have_data, 90, "every dashboard query has data", stack,
                      detail=lambda: f"without data: {missing}")


@slow
def test_the_scenarios_alert_reaches_the_sink_routed_to_the_team(stack):
    sink = stack.url("alert-sink", 19878)

    def delivered():
        return [(n["receiver"], alert)
                for n in requests.get(f"{sink}/notifications", timeout=5).json()
                for alert in n["alerts"] if alert["labels"]["alertname"] == "KpiLargestChurnArrHigh"]

    [(receiver, alert)] = eventually(delivered, 150, "the scenario's alert reached the sink",
                                     stack, every=2)
    assert receiver == SCENARIO_RECEIVER
    assert alert["status"] == "firing"
    # one alert per job and source, whichever replica saw it: no instance label
    assert alert["labels"] == SCENARIO_ALERT
    annotations = alert["annotations"]
    assert annotations["summary"] == "Largest churn ARR is above 10,000 over 24h."
    assert annotations["runbook_url"].endswith("runbooks.md#kpilargestchurnarrhigh")
    assert annotations["dashboard_url"] == \
        "http://localhost:3000/d/kpi-revenue?var-job=kpi-exporter&var-source=stripe"


@slow
def test_the_rest_of_the_demo_is_calm(stack):
    """Apart from its scenario, the demo company breaks no threshold: Prometheus
    has no other alert, firing or pending."""
    def alerts():
        found = prometheus(stack, "/api/v1/alerts")["alerts"]
        return found if any(a["labels"]["alertname"] == SCENARIO_ALERT["alertname"]
                            for a in found) else None

    found = eventually(alerts, 90, "the scenario's alert in Prometheus", stack)
    assert {(a["labels"]["alertname"], a["state"]) for a in found} == {
        (SCENARIO_ALERT["alertname"], "firing")}


# --------------------------------------------------------------------------- the files themselves


def compose() -> dict:
    return load_compose({})


def mounted(service: str) -> dict[str, Path]:
    """Container path -> what the repo mounts there."""
    return {target: source for source, target in bind_mounts(compose()["services"][service])}


def test_compose_images_are_pinned_and_the_own_image_is_built_here():
    for name, service in compose()["services"].items():
        repository, _, tag = service["image"].rpartition(":")
        assert repository and tag and tag != "latest", name
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), (name, tag)
        if repository == "kpi-exporter":
            assert service["build"] == "."
        else:
            assert repository in DEBIAN_BINARIES or repository == "grafana/grafana", name


def test_compose_services_are_healthchecked_ordered_and_local():
    services = compose()["services"]
    assert set(services) == {"exporter", "alert-sink", "backfill", "alertmanager", "prometheus",
                             "backfill-rules", "grafana"}
    one_shots = {"backfill", "backfill-rules"}  # run once, to the end; no health to check
    for name, service in services.items():
        if name in one_shots:
            assert service["restart"] == "no" and service["healthcheck"] == {"disable": True}
        else:
            assert service["healthcheck"]["test"][0] == "CMD", name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dependency in one_shots \
                else "service_healthy"
            assert dependency in services and condition == {"condition": wanted}
    assert set(services["prometheus"]["depends_on"]) == {"exporter", "alertmanager", "backfill"}
    # the backfill writes into Prometheus' volume as Prometheus' user
    for one_shot in one_shots:
        assert services[one_shot]["user"] == "65534:65534"
        assert "prometheus-data:/prometheus" in services[one_shot]["volumes"]
    # the recording rules' past needs Prometheus serving the backfilled blocks
    assert services["backfill-rules"]["depends_on"] == {"prometheus": {"condition":
                                                                        "service_healthy"}}
    assert set(services["grafana"]["depends_on"]) == {"prometheus"}
    assert set(services["alertmanager"]["depends_on"]) == {"alert-sink"}


def test_compose_mounts_exist_and_named_volumes_are_declared():
    spec = compose()
    declared = set(spec["volumes"])
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, volume)
            else:
                assert source in declared, (name, volume)
    assert declared == {"prometheus-data", "alertmanager-data", "grafana-data"}


def test_compose_defaults_run_the_demo_and_env_switches_to_real_accounts():
    demo = compose()["services"]
    assert demo["exporter"]["command"] == "demo"
    assert demo["exporter"]["environment"]["KPI_EXPORTER_DEMO_SCENARIO"] == "calm"
    assert "alertmanager.demo.yml" in " ".join(demo["alertmanager"]["command"])
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    real = load_compose(example)["services"]
    assert real["exporter"]["command"] == "serve"
    assert real["exporter"]["environment"]["STRIPE_API_KEY"] == example["STRIPE_API_KEY"]
    assert "/etc/alertmanager/alertmanager.yml" in " ".join(real["alertmanager"]["command"])
    # the config that `serve` reads in the stack loads with what the container's
    # environment holds (compose passes only the listed variables in)
    from exporter import config
    environment = {k: str(v) for k, v in real["exporter"]["environment"].items()}
    path = environment["KPI_EXPORTER_SERVE_CONFIG"]
    directory, file = path.rsplit("/", 1)
    loaded = config.load(str(mounted("exporter")[directory] / file), environ=environment)
    assert list(loaded.sources) == ["stripe"] and loaded.listen == ("0.0.0.0", 19877)
    assert loaded.sources["stripe"].api_key.reveal() == example["STRIPE_API_KEY"]
    with_interval = load_compose({**example, "STRIPE_POLL_INTERVAL": "2m"})["services"]["exporter"]
    changed = config.load(str(mounted("exporter")[directory] / file),
                          environ={k: str(v) for k, v in with_interval["environment"].items()})
    assert changed.sources["stripe"].poll_interval == 120
    # the backfill: the demo's past by default, with real accounts the same config's
    assert demo["backfill"]["environment"]["KPI_EXPORTER_BACKFILL_DEMO"] == "true"
    backfill = {k: str(v) for k, v in real["backfill"]["environment"].items()}
    assert backfill["KPI_EXPORTER_BACKFILL_DEMO"] == "false"
    assert backfill["KPI_EXPORTER_BACKFILL_CONFIG"] == path
    assert config.load(str(mounted("backfill")[directory] / file), environ=backfill).sources[
        "stripe"].api_key.reveal() == example["STRIPE_API_KEY"]


def test_prometheus_config_scrapes_the_job_the_alerts_select():
    config = yaml.safe_load((ROOT / "provisioning/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    job = re.fullmatch(r'job="([^"]+)"', KitSettings().job_selector).group(1)
    assert jobs[job] == ["exporter:19877"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == \
        ["alertmanager:9093"]
    [pattern] = config["rule_files"]
    rules_dir = mounted("prometheus")[pattern.rsplit("/", 1)[0]]
    assert rules_dir == (ROOT / RULES_PATH).parent


def test_grafana_provisioning_points_at_the_stack():
    grafana = compose()["services"]["grafana"]
    mounts = mounted("grafana")
    assert mounts["/etc/grafana/provisioning"] == ROOT / "provisioning/grafana"
    datasources = yaml.safe_load((ROOT / "provisioning/grafana/datasources/kpi-exporter.yml").read_text())
    assert datasources["apiVersion"] == 1
    by_type = {d["type"]: d for d in datasources["datasources"]}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090" and by_type["prometheus"]["isDefault"]
    assert by_type["alertmanager"]["url"] == "http://alertmanager:9093"
    providers = yaml.safe_load((ROOT / "provisioning/grafana/dashboards/kpi-exporter.yml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["folder"] == "KPI exporter"
    assert mounts[provider["options"]["path"]] == ROOT / DASHBOARDS_DIR
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (ROOT / DASHBOARDS_DIR / home.rsplit("/", 1)[1]).exists()
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "admin"  # the default
    assert load_compose({"GRAFANA_ADMIN_PASSWORD": "s3cret"})["services"]["grafana"][
        "environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_demo_alertmanager_sends_to_the_sink_service():
    host_port = DEMO_SINK_URL.removeprefix("http://").split("/")[0]
    service, port = host_port.split(":")
    ports = compose()["services"][service]["ports"]
    assert any(p.endswith(f":{port}") for p in ports)


def test_dockerfile_runs_the_readme_command_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    assert 'ENTRYPOINT ["kpi-exporter"]' in dockerfile and 'CMD ["demo"]' in dockerfile
    assert "kpi-exporter demo" in readme
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*127\.0\.0\.1:19877/healthz", dockerfile, re.M)
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) and all(
        re.search(r":\d+\.\d+\.\d+-", image) for image in re.findall(r"^FROM (\S+)", dockerfile, re.M))
    compose_check = " ".join(compose()["services"]["exporter"]["healthcheck"]["test"])
    assert "127.0.0.1:19877/healthz" in compose_check


# --------------------------------------------------------------------------- production receivers


class Capture:
    """A stand-in for Slack and PagerDuty: keeps every JSON body POSTed to it, by path."""

    def __init__(self):
        import http.server
        import threading

        self.received: list[tuple[str, dict]] = []
        capture = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                capture.received.append((self.path, json.loads(body)))
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}')

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@slow
def test_production_routing_pages_the_team_with_the_secrets_from_files(tmp_path):
    """With .env's production settings, a critical finance alert reaches PagerDuty
    with finance's routing key and Slack's #finance-alerts, both read from the
    secret files: only PagerDuty's address and the Slack URL point here."""
    for binary, package in DEBIAN_BINARIES.values():
        require(binary, package)
    capture = Capture()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "slack_webhook_url").write_text(f"{capture.url}/slack")
    (secrets / "pagerduty_finance_key").write_text("finance-routing-key")
    (secrets / "smtp_password").write_text("unused")
    from exporter.kit.alertmanager import PAGERDUTY_URL
    stack = NativeStack(tmp_path / "stack", {"KPI_ALERTMANAGER_CONFIG": "alertmanager.yml",
                                             "KPI_ALERTMANAGER_SECRETS": str(secrets)},
                        external={PAGERDUTY_URL: f"{capture.url}/v2/enqueue"})
    (tmp_path / "stack").mkdir()
    try:
        stack.start(skip={"exporter", "alert-sink", "backfill", "prometheus", "backfill-rules",
                           "grafana"})
        alert = {"labels": {"alertname": "KpiMrrDrop", "severity": "critical", "team": "finance",
                            "source": "stripe", "window": "30d"},
                 "annotations": {"summary": "MRR fell by more than 5% over 30d.",
                                 "description": "kpi_mrr from stripe is -6% change.",
                                 "runbook_url": "https://example.com/runbooks.md#kpimrrdrop"}}
        reply = requests.post(stack.url("alertmanager", 9093) + "/api/v2/alerts", json=[alert],
                              timeout=10)
        assert reply.status_code == 200, reply.text
        eventually(lambda: {p for p, _ in capture.received} >= {"/v2/enqueue", "/slack"}, 90,
                   "PagerDuty and Slack notified", stack, every=2)
    finally:
        stack.stop()
        capture.close()
    by_path = dict(capture.received)
    page = by_path["/v2/enqueue"]
    assert page["routing_key"] == "finance-routing-key" and page["event_action"] == "trigger"
    assert page["payload"]["severity"] == "critical"
    chat = by_path["/slack"]
    assert chat["channel"] == "#finance-alerts"
    [attachment] = chat["attachments"]
    assert attachment["title"] == "KpiMrrDrop (critical)"
    assert "MRR fell by more than 5% over 30d." in attachment["text"]
    assert "Runbook: https://example.com/runbooks.md#kpimrrdrop" in attachment["text"]


USER_KIT = """
sources: {stripe: {api_key: sk_test_unused}}
kit:
  job: biz-kpis
  grafana_url: https://grafana.example.com
  runbook_url: https://wiki.example.com/kpi-runbooks
  default: {slack_configs: [{channel: "#kpi-alerts", api_url_file: /etc/alertmanager/secrets/slack}]}
  teams:
    growth:
      critical: {pagerduty_configs: [{routing_key_file: /etc/alertmanager/secrets/pd-growth}]}
kpis:
  largest_churn_arr: {team: growth}
"""


@slow
def test_a_users_own_kit_runs_the_stack_with_no_code_edited(tmp_path):
    """The README's path: fill in the config, generate the kit into a directory, point
    KPI_KIT_DIR at it. The demo's large churn then reaches the sink as the user routed
    it: job biz-kpis, team growth, receiver growth-critical, the user's links."""
    from click.testing import CliRunner

    from exporter.cli import main

    for binary, package in DEBIAN_BINARIES.values():
        require(binary, package)
    config, kit = tmp_path / "kpi-exporter.yml", tmp_path / "kit"
    config.write_text(USER_KIT)
    result = CliRunner().invoke(main, ["generate", "--config", str(config), "--out", str(kit)])
    assert result.exit_code == 0, result.output
    stack = NativeStack(tmp_path / "stack", {"KPI_DEMO_SCENARIO": SCENARIO,
                                             "KPI_KIT_DIR": str(kit)})
    (tmp_path / "stack").mkdir()
    try:
        # the past is the module stack's to prove
        stack.start(skip={"grafana", "backfill", "backfill-rules"})
        sink = stack.url("alert-sink", 19878)

        def delivered():
            return [(n["receiver"], alert)
                    for n in requests.get(f"{sink}/notifications", timeout=5).json()
                    for alert in n["alerts"]
                    if alert["labels"]["alertname"] == "KpiLargestChurnArrHigh"]

        [(receiver, alert)] = eventually(delivered, 150, "the user's routing delivered", stack,
                                         every=2)
    finally:
        stack.stop()
    assert receiver == "growth-critical"
    assert alert["labels"] == {**SCENARIO_ALERT, "job": "biz-kpis", "team": "growth"}
    assert alert["annotations"]["runbook_url"] == \
        "https://wiki.example.com/kpi-runbooks#kpilargestchurnarrhigh"
    assert alert["annotations"]["dashboard_url"] == \
        "https://grafana.example.com/d/kpi-revenue?var-job=biz-kpis&var-source=stripe"
