"""The Kubernetes kit, rendered by kubectl's kustomize and checked without a cluster:
every object against the Kubernetes 1.30 OpenAPI schemas (kubernetes-validate) and
the Prometheus Operator's CRD schemas (vendored, tests/schemas/), the rules as
PrometheusRule equal to the rules file and tested by promtool, the routing as
AlertmanagerConfig equal to the kit's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from exporter.cli import main
from exporter.kit import kubernetes
from exporter.kit.generate import ALERTMANAGER_PATH, RULES_PATH
from tools import require

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / kubernetes.ROOT
SCHEMAS = Path(__file__).parent / "schemas" / "prometheus-operator-v0.93.0"
KUBERNETES_VERSION = "1.30"


class _KubeLoader(yaml.SafeLoader):
    """A bare `=` (a matcher type) is YAML 1.1's value tag; the CRDs and kubectl write it."""


_KubeLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node:
                           loader.construct_scalar(node))


def crd_schemas() -> dict[tuple[str, str], dict]:
    found = {}
    for path in SCHEMAS.glob("*.yaml"):
        crd = yaml.load(path.read_text(), Loader=_KubeLoader)
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            found[(api, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return found


def strict(schema):
    """The schema as `kubectl apply --validate=strict` reads it: an unknown field is an
    error, not silently pruned, unless the schema keeps unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_validate(obj: dict, schema: dict) -> None:
    """Validate against a CRD's schema as the API server would. The schema itself is not
    checked against the metaschema: its patterns are Go regular expressions (`^(?i)...`)."""
    top = dict(schema, properties=dict(schema["properties"], metadata={"type": "object"}))
    jsonschema.Draft7Validator(strict(top)).validate(obj)


def render(directory: Path) -> list[dict]:
    kubectl = require("kubectl", "kubectl")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.load_all(done.stdout, Loader=_KubeLoader) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render(KUBE / "example")


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def test_the_example_overlay_renders_every_part(objects):
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("ConfigMap") == 1 + 8   # the config, and one per dashboard
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule",
            "AlertmanagerConfig", "Secret"} <= set(kinds)
    assert all(o["metadata"]["namespace"] == "monitoring" for o in objects)


def test_every_object_is_valid_for_its_schema(objects):
    schemas = crd_schemas()
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in schemas:
            crd_validate(obj, schemas[key])
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_schemas_catch_a_broken_object(objects):
    """The checks above can fail: a misspelt field and a wrong type are refused."""
    [deployment] = by_kind(objects, "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    [rule] = by_kind(objects, "PrometheusRule")
    broken = json.loads(json.dumps(rule))
    broken["spec"]["groups"][0]["rules"] = "not a list"
    schema = crd_schemas()[("monitoring.coreos.com/v1", "PrometheusRule")]
    with pytest.raises(jsonschema.ValidationError):
        crd_validate(broken, schema)
    broken = json.loads(json.dumps(rule))
    broken["spec"]["groups"][0]["rules"][0]["experssion"] = "up"
    with pytest.raises(jsonschema.ValidationError, match="experssion"):
        crd_validate(broken, schema)


def test_the_deployment_is_locked_down_and_reads_its_secrets_from_files(objects):
    [deployment] = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"]["drop"] == ["ALL"] and not security["allowPrivilegeEscalation"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]
    assert "env" not in container  # no secret in the environment: files only
    volumes = {v["name"]: v for v in pod["volumes"]}
    [secret] = [o for o in by_kind(objects, "Secret")
                if o["metadata"]["name"].startswith(kubernetes.SECRETS)]
    assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]
    [config] = [o for o in by_kind(objects, "ConfigMap")
                if o["metadata"]["name"].startswith("kpi-exporter-config")]
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    assert "stripe_api_key" in secret["data"]


def test_the_service_monitor_scrapes_under_the_kits_job(objects):
    [service] = by_kind(objects, "Service")
    [monitor] = by_kind(objects, "ServiceMonitor")
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "kpi-exporter"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert all(service["metadata"]["labels"][k] == v for k, v in selector.items())
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    # replicas differ only in `instance`, which every alert aggregates away
    assert {"action": "labeldrop", "regex": "pod"} in endpoint["relabelings"]


def test_the_example_config_is_one_the_exporter_loads(objects, tmp_path):
    from exporter import config as config_module

    [deployment] = by_kind(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    [config_map] = [o for o in by_kind(objects, "ConfigMap")
                    if o["metadata"]["name"].startswith("kpi-exporter-config")]
    [(name, text)] = config_map["data"].items()
    assert container["args"][container["args"].index("--config") + 1] == \
        f'{mounts["config"]}/{name}'
    [secret] = [o for o in by_kind(objects, "Secret")
                if o["metadata"]["name"].startswith(kubernetes.SECRETS)]
    for key in secret["data"]:
        (tmp_path / key).write_text("rk_test_placeholder\n")
    config = config_module.parse(text.replace(mounts["secrets"], str(tmp_path)),
                                 name, environ={})
    assert config.sources and config.listen == ("0.0.0.0", kubernetes.PORT)


@pytest.mark.slow  # every promtool test again, on the extracted rules
def test_the_prometheus_rule_is_the_rules_file_and_promtool_passes_it(objects, tmp_path):
    [rule] = by_kind(objects, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((ROOT / RULES_PATH).read_text())
    rules = tmp_path / "extracted.yml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    promtool = require("promtool", "prometheus")
    for test in ("alerts_test.yml", "platform_test.yml"):
        spec = yaml.safe_load((ROOT / "tests/promtool" / test).read_text())
        spec["rule_files"] = [str(rules)]
        path = tmp_path / test
        path.write_text(yaml.safe_dump(spec))
        done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_config_map_per_dashboard_well_under_the_apply_limit(objects):
    boards = [o for o in by_kind(objects, "ConfigMap")
              if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(boards) == len(list((ROOT / "dashboards").glob("*.json")))
    for board in boards:
        [(name, text)] = board["data"].items()
        assert json.loads(text) == json.loads((ROOT / "dashboards" / name).read_text())
        # kubectl apply keeps the object in an annotation too: 256 KiB in all
        assert len(json.dumps(board)) < 128 * 1024, board["metadata"]["name"]


def test_the_alertmanager_config_routes_like_the_kit_with_secrets_as_references(objects):
    [resource] = by_kind(objects, "AlertmanagerConfig")
    kit = yaml.safe_load((ROOT / ALERTMANAGER_PATH).read_text())
    spec = resource["spec"]
    assert [r["name"] for r in spec["receivers"]] == [r["name"] for r in kit["receivers"]]

    def tree(route):  # (receiver, matchers, children) of a route, in either form
        matchers = [m if isinstance(m, str) else f'{m["name"]}{m["matchType"]}"{m["value"]}"'
                    for m in route.get("matchers", [])]
        return (route.get("receiver"), matchers, [tree(r) for r in route.get("routes", [])])

    receiver, matchers, routes = tree(spec["route"])
    assert (receiver, routes) == (tree(kit["route"])[0], tree(kit["route"])[2])
    # only the kit's alerts, whatever namespace matcher the operator adds or not
    rules = yaml.safe_load((ROOT / RULES_PATH).read_text())
    teams = {r["labels"]["team"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    [(name, pattern)] = [m.split("=~") for m in matchers]
    assert name == "team" and set(pattern.strip('"').split("|")) == teams
    text = json.dumps(spec)
    for inline in ("routingKey\": \"", "apiURL\": \"", "authPassword\": \""):
        assert inline not in text  # secrets only as Secret references
    [secret] = [o for o in by_kind(objects, "Secret")
                if o["metadata"]["name"].startswith(kubernetes.ALERTMANAGER_SECRETS)]
    assert kubernetes.secret_keys(resource) == set(secret["data"])
    [finance] = [r for r in spec["receivers"] if r["name"] == "finance-critical"]
    assert finance["pagerdutyConfigs"][0]["routingKey"] == {
        "name": kubernetes.ALERTMANAGER_SECRETS, "key": "pagerduty_finance_key"}
    [digest] = [r for r in spec["receivers"] if r["name"] == "daily-digest"]
    email = digest["emailConfigs"][0]
    assert email["smarthost"] == kit["global"]["smtp_smarthost"]  # global SMTP, per config
    assert email["authPassword"]["key"] == "smtp_password"


def test_a_users_kit_brings_its_own_job_and_routing_to_the_cluster(tmp_path):
    config = tmp_path / "kpi.yml"
    config.write_text("""
sources: {stripe: {api_key: sk_test_1}}
kit:
  job: biz-kpis
  default: {slack_configs: [{channel: "#kpi", api_url_file: /etc/alertmanager/secrets/slack}]}
  teams:
    finance:
      critical: {pagerduty_configs: [{routing_key_file: /etc/alertmanager/secrets/pd-finance}]}
      warning: {webhook_configs: [{url_file: /etc/alertmanager/secrets/finance-hook}]}
""")
    out = tmp_path / "kit"
    result = CliRunner().invoke(main, ["generate", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    objects = render(out / kubernetes.ROOT / "example")
    [service] = by_kind(objects, "Service")
    assert service["metadata"]["labels"][kubernetes.JOB_LABEL] == "biz-kpis"
    [rule] = by_kind(objects, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any('job="biz-kpis"' in e for e in exprs)
    assert not any('job="kpi-exporter"' in e for e in exprs)
    [resource] = by_kind(objects, "AlertmanagerConfig")
    schemas = crd_schemas()
    crd_validate(resource, schemas[("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig")])
    [warning] = [r for r in resource["spec"]["receivers"] if r["name"] == "finance-warning"]
    assert warning["webhookConfigs"][0]["urlSecret"]["key"] == "finance-hook"
    assert kubernetes.secret_keys(resource) == {"slack", "pd-finance", "finance-hook"}

