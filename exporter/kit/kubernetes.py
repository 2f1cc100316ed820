"""Kubernetes manifests and Prometheus Operator resources, generated from the same kit.

`deploy/kubernetes/` of a kit, for `kubectl apply -k`:

- `base/`: the exporter's Deployment (non-root, read-only root filesystem,
  liveness on /healthz, readiness on /ready, resources from the bench figures,
  the config from a ConfigMap and every secret from a Secret mounted as files)
  and its Service. Replicas are safe: every alert aggregates over instances.
- `components/servicemonitor`: Prometheus scrapes the Service under the kit's
  job (the Service carries it in a label the ServiceMonitor's jobLabel names).
- `components/prometheusrule`: the kit's rules file, as a PrometheusRule.
- `components/dashboards`: one ConfigMap per dashboard, labelled for Grafana's
  dashboard sidecar (one for all would come near the 256 KiB apply limit).
- `components/alertmanagerconfig`: the kit's routing as an AlertmanagerConfig:
  the same receivers and routes, each `*_file` secret a key of one Secret.
- `example/`: an overlay to copy: the config, the secrets, the components.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

from exporter.kit.alertmanager import alertmanager_config
from exporter.kit.settings import KitSettings

ROOT = "deploy/kubernetes"
NAME = "kpi-exporter"
LABELS = {"app.kubernetes.io/name": NAME}
JOB_LABEL = "kpi-exporter.io/job"  # the Service label whose value is the kit's job
PORT = 19877
SECRETS = "kpi-exporter-secrets"  # the exporter's: API keys and tokens, as files
ALERTMANAGER_SECRETS = "kpi-exporter-alertmanager"  # the receivers' keys and webhooks
IMAGE = "kpi-exporter:0.1.0"
# Sized from bench/: the demo (seven sources, 500 customers) runs at ~110 MiB RSS
# in the soak; a Stripe account of ~100,000 subscriptions peaks at ~160 MiB (a
# million at ~1.2 GiB: over the limit, which such a user raises in an overlay).
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def _yaml(*documents: dict) -> str:
    from exporter.kit.generate import to_yaml

    return "---\n".join(to_yaml(document) for document in documents)


def _component(resources: list[str]) -> dict:
    return {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
            "resources": resources}


def deployment() -> dict:
    security = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}

    def probe(path: str, period: int) -> dict:
        return {"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": period,
                "timeoutSeconds": 3, "failureThreshold": 3}

    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "labels": dict(LABELS)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "fsGroup": 10001},
                    "automountServiceAccountToken": False,
                    "containers": [{
                        "name": NAME, "image": IMAGE,
                        "args": ["serve", "--config", "/etc/kpi-exporter/kpi-exporter.yml",
                                 "--listen", f"0.0.0.0:{PORT}"],
                        "ports": [{"name": "metrics", "containerPort": PORT}],
                        "livenessProbe": probe("/healthz", 20),
                        # A first poll may take minutes on a large account: ready then.
                        "readinessProbe": probe("/ready", 10),
                        "resources": RESOURCES,
                        "securityContext": security,
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/kpi-exporter", "readOnly": True},
                            {"name": "secrets", "mountPath": "/etc/kpi-exporter/secrets",
                             "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{NAME}-config"}},
                        {"name": "secrets", "secret": {"secretName": SECRETS}},
                        {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def service(settings: KitSettings) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "labels": {**LABELS, JOB_LABEL: settings.job}},
            "spec": {"selector": dict(LABELS),
                     "ports": [{"name": "metrics", "port": PORT, "targetPort": "metrics"}]}}


def service_monitor(settings: KitSettings) -> dict:
    endpoint: dict[str, Any] = {
        "port": "metrics", "path": "/metrics", "interval": "30s",
        # The operator labels each target with its pod; the rules aggregate over
        # `instance` only, so replicas would alert once each with the pod kept.
        "relabelings": [{"action": "labeldrop", "regex": "pod"}]}
    scrape = settings.scrape or {}
    if scrape.get("scheme"):
        endpoint["scheme"] = scrape["scheme"]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": NAME, "labels": dict(LABELS)},
            "spec": {"jobLabel": JOB_LABEL, "selector": {"matchLabels": dict(LABELS)},
                     "endpoints": [endpoint]}}


def prometheus_rule(groups: dict) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": NAME, "labels": dict(LABELS)}, "spec": groups}


def dashboard_config_maps(boards: dict[str, dict]) -> list[dict]:
    return [{"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"{NAME}-dashboard-{name.removesuffix('.json')}",
                          "labels": {**LABELS, "grafana_dashboard": "1"}},
             "data": {name: json.dumps(board, indent=1, sort_keys=True)}}
            for name, board in sorted(boards.items())]


# -- the routing as an AlertmanagerConfig --------------------------------------

_CAMEL = {"api_url": "apiURL", "icon_url": "iconURL", "image_url": "imageURL",
          "thumb_url": "thumbURL", "title_link": "titleLink", "client_url": "clientURL",
          "require_tls": "requireTLS", "tls_config": "tlsConfig", "http_config": "httpConfig",
          "url": "url"}
# A *_file field, as the CRD names its Secret reference.
_SECRET_FIELDS = {"url_file": "urlSecret"}


def _camel(name: str) -> str:
    if name in _CAMEL:
        return _CAMEL[name]
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _secret_key(path: str) -> str:
    """A file's name as a Secret key (letters, digits, - _ .)."""
    return re.sub(r"[^-._a-zA-Z0-9]", "_", PurePosixPath(path).name)


def _integration(config: dict, defaults: dict) -> dict:
    result = {}
    for key, value in {**defaults, **config}.items():
        if key.endswith("_file"):
            target = _SECRET_FIELDS.get(key) or _camel(key.removesuffix("_file"))
            result[target] = {"name": ALERTMANAGER_SECRETS, "key": _secret_key(value)}
        elif isinstance(value, dict):
            result[_camel(key)] = _integration(value, {})
        else:
            result[_camel(key)] = value
    return result


def _email_defaults(global_settings: dict) -> dict:
    """Alertmanager's global SMTP settings, which the CRD wants on each e-mail config."""
    names = {"smtp_smarthost": "smarthost", "smtp_from": "from",
             "smtp_auth_username": "auth_username", "smtp_auth_password_file": "auth_password_file",
             "smtp_require_tls": "require_tls", "smtp_hello": "hello"}
    return {ours: global_settings[theirs] for theirs, ours in names.items()
            if theirs in global_settings}


def _matchers(texts: list[str]) -> list[dict]:
    result = []
    for text in texts:
        name, op, value = re.fullmatch(r'(\w+)(=~|!~|!=|=)"(.*)"', text).groups()
        result.append({"name": name, "value": value, "matchType": op})
    return result


def _route(route: dict) -> dict:
    names = {"receiver": "receiver", "group_by": "groupBy", "group_wait": "groupWait",
             "group_interval": "groupInterval", "repeat_interval": "repeatInterval",
             "continue": "continue"}
    result = {ours: route[key] for key, ours in names.items() if key in route}
    if "matchers" in route:
        result["matchers"] = _matchers(route["matchers"])
    if "routes" in route:
        result["routes"] = [_route(child) for child in route["routes"]]
    return result


def _teams(groups: dict) -> list[str]:
    return sorted({rule["labels"]["team"] for group in groups["groups"]
                   for rule in group["rules"] if "alert" in rule})


def alertmanager_config_resource(kpis: tuple, settings: KitSettings, groups: dict) -> dict:
    config = alertmanager_config(kpis, settings)
    route = _route(config["route"])
    # The operator adds `namespace="<ours>"` to this first-level route unless the
    # Alertmanager's matcher strategy is None; then this keeps it to the kit's alerts.
    route["matchers"] = [{"name": "team", "matchType": "=~", "value": "|".join(_teams(groups))}]
    email = _email_defaults(config["global"])
    receivers = []
    for receiver in config["receivers"]:
        converted: dict[str, Any] = {"name": receiver["name"]}
        for kind, configs in receiver.items():
            if kind == "name":
                continue
            defaults = email if kind == "email_configs" else {}
            converted[_camel(kind)] = [_integration(c, defaults) for c in configs]
        receivers.append(converted)
    inhibit = [{"sourceMatch": _matchers(rule["source_matchers"]),
                "targetMatch": _matchers(rule["target_matchers"]), "equal": rule["equal"]}
               for rule in config["inhibit_rules"]]
    return {"apiVersion": "monitoring.coreos.com/v1alpha1", "kind": "AlertmanagerConfig",
            "metadata": {"name": NAME, "labels": dict(LABELS)},
            "spec": {"route": route, "receivers": receivers,
                     "inhibitRules": inhibit}}


def secret_keys(resource: dict) -> set[str]:
    """The keys of ALERTMANAGER_SECRETS the AlertmanagerConfig refers to."""
    found = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("name") == ALERTMANAGER_SECRETS and "key" in node:
                found.add(node["key"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(resource)
    return found


# -- the files -------------------------------------------------------------------

EXAMPLE_CONFIG = """\
# The exporter's config in the cluster (see the README). Every secret is a file
# of the Secret kpi-exporter-secrets, mounted at /etc/kpi-exporter/secrets.
listen: 0.0.0.0:19877
reporting_currency: usd
sources:
  stripe:
    api_key_file: /etc/kpi-exporter/secrets/stripe_api_key
"""


EXAMPLE_NOTE = ("# Copy this directory (e.g. to production/) and edit the copy: generate rewrites\n"
                "# this one, never yours. Replace every file of secrets/ with the real value.\n")


def files(kpis: tuple, groups: dict, boards: dict[str, dict], settings: KitSettings) -> dict[str, str]:
    """{path under the kit: text} of deploy/kubernetes/."""
    from exporter.kit.generate import HEADER

    alertmanager = alertmanager_config_resource(kpis, settings, groups)
    keys = sorted(secret_keys(alertmanager))
    example = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "monitoring",
        "resources": ["../base"],
        "components": [f"../components/{c}" for c in
                       ("servicemonitor", "prometheusrule", "dashboards", "alertmanagerconfig")],
        # kube-prometheus-stack selects monitoring objects by its release label.
        "labels": [{"pairs": {"release": "kube-prometheus-stack"}}],
        "images": [{"name": NAME, "newName": NAME, "newTag": IMAGE.split(":")[1]}],
        "configMapGenerator": [{"name": f"{NAME}-config", "files": ["kpi-exporter.yml"]}],
        "secretGenerator": [
            {"name": SECRETS, "files": ["secrets/stripe_api_key"]},
            {"name": ALERTMANAGER_SECRETS, "files": [f"secrets/{key}" for key in keys]}],
    }
    result = {
        f"{ROOT}/base/kustomization.yaml": HEADER + _yaml({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["deployment.yaml", "service.yaml"]}),
        f"{ROOT}/base/deployment.yaml": HEADER + _yaml(deployment()),
        f"{ROOT}/base/service.yaml": HEADER + _yaml(service(settings)),
        f"{ROOT}/components/servicemonitor/kustomization.yaml":
            HEADER + _yaml(_component(["servicemonitor.yaml"])),
        f"{ROOT}/components/servicemonitor/servicemonitor.yaml":
            HEADER + _yaml(service_monitor(settings)),
        f"{ROOT}/components/prometheusrule/kustomization.yaml":
            HEADER + _yaml(_component(["prometheusrule.yaml"])),
        f"{ROOT}/components/prometheusrule/prometheusrule.yaml":
            HEADER + _yaml(prometheus_rule(groups)),
        f"{ROOT}/components/dashboards/kustomization.yaml":
            HEADER + _yaml(_component(["dashboards.yaml"])),
        f"{ROOT}/components/dashboards/dashboards.yaml":
            HEADER + _yaml(*dashboard_config_maps(boards)),
        f"{ROOT}/components/alertmanagerconfig/kustomization.yaml":
            HEADER + _yaml(_component(["alertmanagerconfig.yaml"])),
        f"{ROOT}/components/alertmanagerconfig/alertmanagerconfig.yaml":
            HEADER + _yaml(alertmanager),
        f"{ROOT}/example/kustomization.yaml": HEADER + EXAMPLE_NOTE + _yaml(example),
        f"{ROOT}/example/kpi-exporter.yml": EXAMPLE_CONFIG,
        f"{ROOT}/example/secrets/stripe_api_key": "rk_live_replace_me\n",
    }
    for key in keys:  # placeholders: replace each with the real value before applying
        result[f"{ROOT}/example/secrets/{key}"] = "replace-me\n"
    return result
