"""The generated Grafana dashboards: what Grafana's provisioning loads, with valid queries."""

import json
import re
import subprocess
from pathlib import Path

import yaml

from exporter import catalog
from exporter.kit.dashboards import dashboards, threshold_steps
from exporter.kit.generate import DASHBOARDS_DIR, RULES_PATH, kit_files
from tools import require

ROOT = Path(__file__).resolve().parents[1]
BOARDS = {path.name: json.loads(path.read_text()) for path in (ROOT / DASHBOARDS_DIR).glob("*.json")}


def panels():
    for name, board in BOARDS.items():
        for panel in board["panels"]:
            yield name, panel


def queries():
    for name, panel in panels():
        for target in panel["targets"]:
            yield name, panel["title"], target["expr"]


def test_committed_dashboards_match_the_generator():
    generated = {k: v for k, v in kit_files().items() if k.startswith(DASHBOARDS_DIR + "/")}
    assert {f"{DASHBOARDS_DIR}/{n}" for n in BOARDS} == set(generated)
    for name, board in BOARDS.items():
        assert json.loads(generated[f"{DASHBOARDS_DIR}/{name}"]) == board


def test_structure_grafana_provisioning_loads():
    uids = [board["uid"] for board in BOARDS.values()]
    assert len(set(uids)) == len(uids) and all(uids)
    for board in BOARDS.values():
        assert board["title"] and isinstance(board["schemaVersion"], int)
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert list(variables) == ["datasource", "job", "instance", "source"]
        assert (variables["datasource"]["type"], variables["datasource"]["query"]) == \
            ("datasource", "prometheus")
        assert variables["job"]["current"]["value"] == "kpi-exporter"  # the kit's job
        for name in ("instance", "source"):  # every replica and source unless one is picked
            assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
        other = {b["uid"] for b in BOARDS.values()} - {board["uid"]}
        assert {link["url"].split("/")[-1] for link in board["links"]} == other
    for name, panel in panels():
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        if panel["type"] == "state-timeline":  # a state per value: its mappings name them
            assert panel["fieldConfig"]["defaults"]["mappings"], panel["title"]
        else:
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_every_query_parses_and_names_known_metrics(tmp_path):
    # promtool parses each query as a recording rule (Grafana's $__rate_interval made concrete).
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query:{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, _, expr) in enumerate(queries())]}]}
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([require("promtool", "prometheus"), "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

    known = {k.metric for k in catalog.KPIS} | {h.metric for h in catalog.HEALTH}
    known |= {"source:kpi_arr:mrr_x12"}
    known |= {r["record"] for g in yaml.safe_load((ROOT / RULES_PATH).read_text())["groups"]
              for r in g["rules"] if "record" in r}
    known |= {"http_requests_total"}  # the example kit.platform's request counter
    known |= {f"{h.metric}_{part}" for h in catalog.HEALTH if h.type == "histogram"
              for part in ("bucket", "sum", "count")}
    functions = {"rate", "increase", "time", "sum", "by", "vector", "histogram_quantile", "or",
                 "max", "without"}
    for name, title, expr in queries():
        bare = re.sub(r'\{[^}]*\}|\[[^]]*\]|"[^"]*"|\b(by|without|on) \([^)]*\)', "", expr)
        for word in re.findall(r"(?<![\w:$])([a-zA-Z_:][\w:]*)", bare):
            assert word in known or word in functions, f"{word} in {name}: {title}"


def test_every_query_is_scoped_to_the_job_instance_and_source_variables():
    for name, title, expr in queries():
        selectors = re.findall(r"(?<![\w:])((?:source:)?kpi_[\w:]+)(\{[^}]*\})?", expr)
        # a query of no KPI series is of the platform's (its SLIs, its own selectors)
        assert selectors or "platform:" in expr or "http_requests_total" in expr, \
            f"{name}: {title}: {expr}"
        for metric, matchers in selectors:
            assert matchers.startswith('{job=~"$job",instance=~"$instance",source=~"$source"'), \
                f"{metric} in {name}: {title}"


def test_a_configured_job_is_the_dashboards_default():
    from exporter.kit.settings import KitSettings

    for board in dashboards(settings=KitSettings(job="biz-kpis")).values():
        [job] = [v for v in board["templating"]["list"] if v["name"] == "job"]
        assert job["current"]["value"] == "biz-kpis"


def test_targets_are_dashed_lines_that_follow_overrides():
    overridden = catalog.apply_overrides({"email_delivery_rate": catalog.KpiOverride(
        target=0.95)})
    [panel] = [p for p in dashboards(overridden)["email.json"]["panels"]
               if p["title"] == "Delivery rate by domain (24 h)"]
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "dashed"
    assert [s["value"] for s in defaults["thresholds"]["steps"]] == [None, 0.95]
    [resolution] = [p for p in BOARDS["support.json"]["panels"]
                    if p["title"].startswith("Resolution time")]
    steps = resolution["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 4 * 3600, 24 * 3600]  # per-priority targets


def test_counters_are_wrapped_in_rate_or_increase():
    for name, title, expr in queries():
        for counter in re.findall(r"\w+_total\b", expr):
            assert re.search(rf"(rate|increase)\({counter}\b", expr), f"{counter} in {title}"


def test_threshold_colours_follow_the_catalog_and_overrides():
    churn = catalog.by_key()["customer_churn_rate"]
    assert threshold_steps(churn) == [(None, "green"), (0.03, "#EAB839"), (0.07, "red")]
    trials = catalog.by_key()["trial_conversion_rate"]
    assert threshold_steps(trials) == [(None, "red"), (0.20, "#EAB839"), (0.25, "green")]

    overridden = catalog.apply_overrides({"customer_churn_rate": catalog.KpiOverride(
        thresholds={"critical": 0.1})})
    board = dashboards(overridden)["overview.json"]
    [panel] = [p for p in board["panels"] if p["title"] == "Customer churn (30 days)"]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["value"], s["color"]) for s in steps] == [(None, "green"), (0.03, "#EAB839"),
                                                        (0.1, "red")]


def test_money_panels_use_the_reporting_currency():
    board = dashboards(currency="eur")["overview.json"]
    [mrr] = [p for p in board["panels"] if p["title"] == "MRR"]
    assert mrr["fieldConfig"]["defaults"]["unit"] == "currencyEUR"


def test_overview_has_arr_against_its_documented_target():
    board = dashboards()["overview.json"]
    [arr] = [p for p in board["panels"] if p["title"] == "ARR"]
    assert arr["targets"][0]["expr"] == 'sum(max without (instance) (source:kpi_arr:mrr_x12' \
        '{job=~"$job",instance=~"$instance",source=~"$source"}))'  # every account, once
    steps = arr["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["value"], s["color"]) for s in steps] == [(None, "red"), (1_200_000, "green")]


def test_source_state_names_up_down_and_syncing(tmp_path):
    # The health board's one query for three states, evaluated by promtool: up (1),
    # down (0), and syncing (2) while kpi_source_up is absent during a first poll.
    from exporter.kit.dashboards import SOURCE_STATE

    (tmp_path / "state.yml").write_text(yaml.safe_dump({"groups": [{"name": "state", "rules": [
        {"record": "source_state", "expr": SOURCE_STATE}]}]}))
    series = {"kpi_source_up": {"a": "1", "b": "0"},
              "kpi_source_syncing": {"a": "0", "b": "0", "c": "1"}}
    (tmp_path / "state_test.yml").write_text(yaml.safe_dump({
        "rule_files": ["state.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m",
                   "input_series": [{"series": f'{m}{{job="j",instance="i",source="{s}"}}',
                                     "values": f"{v}x5"}
                                    for m, values in series.items() for s, v in values.items()],
                   "promql_expr_test": [{"expr": "source_state", "eval_time": "2m",
                                         "exp_samples": [
                       {"labels": f'source_state{{job="j",instance="i",source="{s}"}}',
                        "value": v} for s, v in (("a", 1), ("b", 0), ("c", 2))]}]}]}))
    done = subprocess.run([require("promtool", "prometheus"), "test", "rules", "state_test.yml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_executive_totals_sum_the_sources_and_count_each_once_across_replicas():
    totals = {("overview.json", "MRR"), ("overview.json", "Paying customers"),
              ("overview.json", "ARR"), ("sales.json", "Open pipeline"),
              ("sales.json", "Weighted pipeline"), ("support.json", "Open tickets"),
              ("support.json", "Tickets past their SLA")}
    found = {(name, panel["title"]): panel["targets"][0] for name, panel in panels()
             if (name, panel["title"]) in totals}
    assert set(found) == totals
    for target in found.values():
        assert target["expr"].startswith("sum(max without (instance) (")
        assert target["legendFormat"] == "total"
