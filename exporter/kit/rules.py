"""Prometheus recording and alerting rules, generated from the KPI catalog.

Every threshold in the catalog becomes an alert; a KPI with a warning and a
critical threshold gets two rules of the same name, told apart by `severity`
(the mixin convention, so Alertmanager can inhibit the warning while the
critical fires). Health alerts watch the exporter itself. `runbook_url` and
`dashboard_url` are added to every alert in one pass at the end.

Alerts only compare series the exporter computes itself (from upstream
history, not Prometheus history), so they work from the first scrape, and
none fires for lack of data on a fresh install.

Every expression selects the kit's job (`kit.job`), and KPI and source alerts
are aggregated over `instance`: two exporter replicas (high availability)
raise one alert, not two. A KPI breaks its threshold when any replica sees it
break; a source is down when it is down in every replica.
"""

from __future__ import annotations

from exporter import catalog
from exporter.kit import platform
from exporter.kit.dashboards import UIDS
from exporter.kit.settings import KitSettings


def series(metric: str, settings: KitSettings, **matchers: str) -> str:
    """`metric{job="<the kit's job>",window="30d"}`: every expression selects the job."""
    inner = ",".join([settings.job_selector, *(f'{k}="{v}"' for k, v in matchers.items())])
    return f"{metric}{{{inner}}}"


def _camel(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))


def alert_name(kpi: catalog.Kpi, threshold: catalog.Threshold) -> str:
    suffix = {"above": "High", "below": "Low", "drop": "Drop"}[threshold.kind]
    return f"Kpi{_camel(kpi.key)}{suffix}"


def _humanize(kpi: catalog.Kpi) -> str:
    return {"ratio": "humanizePercentage", "seconds": "humanizeDuration"}.get(kpi.unit, "humanize")


def _shown(kpi: catalog.Kpi, threshold: catalog.Threshold) -> str:
    # a drop is a fraction whatever the KPI's unit
    return catalog.value_text("ratio" if threshold.kind == "drop" else kpi.unit, threshold.value)


_ACRONYMS = {"mrr": "MRR", "arr": "ARR", "arpa": "ARPA", "mqls": "MQLs", "sqls": "SQLs",
             "mql": "MQL", "sql": "SQL", "csat": "CSAT", "sla": "SLA", "nps": "NPS",
             "cac": "CAC", "ltv": "LTV"}


def _title(kpi: catalog.Kpi) -> str:
    words = [_ACRONYMS.get(word, word) for word in kpi.key.split("_")]
    return " ".join(words)[0].upper() + " ".join(words)[1:]


def _kpi_expr(kpi: catalog.Kpi, threshold: catalog.Threshold, settings: KitSettings) -> str:
    """The condition per exporter instance, then one series per job: `max without(instance)`
    for a value that must stay low, `min` for one that must stay high (the value shown
    is the worst replica's)."""
    value = catalog.number(threshold.value)
    window = {"window": threshold.window} if threshold.window else {}
    if threshold.kind == "drop":
        if kpi.key == "mrr":  # a fall over the window, from the exporter's own growth
            growth = series(catalog.by_key()["mrr_growth_rate"].metric, settings, **window)
            return f"min without(instance) ({growth} < -{value})"
        if threshold.baseline:  # the short window against the long one, both exported
            now = series(kpi.metric, settings, **window)
            before = series(kpi.metric, settings, window=threshold.baseline)
            return (f"max without(instance) (({before} - ignoring(window) {now}) "
                    f"/ ignoring(window) {before} > {value})")
        now = series(kpi.metric, settings, **window)
        ago = threshold.over or threshold.window
        return (f"max without(instance) (({now} offset {ago} - {now}) "
                f"/ {now} offset {ago} > {value})")
    if threshold.kind == "above":
        return f"max without(instance) ({series(kpi.metric, settings, **window)} > {value})"
    return f"min without(instance) ({series(kpi.metric, settings, **window)} < {value})"


def _subject(kpi: catalog.Kpi) -> str:
    """Which series: the source, and the labels that tell its series apart (a domain...)."""
    extra = [f" {label} {{{{ $labels.{label} }}}}" for label in kpi.labels
             if label not in ("source", "window")]
    return "{{ $labels.source }}" + "".join(extra)


def kpi_alerts(kpis: tuple[catalog.Kpi, ...], settings: KitSettings) -> list[dict]:
    rules = []
    for kpi in kpis:
        for threshold in kpi.thresholds:
            window = f" over {threshold.window or threshold.over}" \
                if threshold.window or threshold.over else ""
            if threshold.baseline:
                window += f" against {threshold.baseline}"
            if threshold.kind == "drop":
                condition = f"fell by more than {_shown(kpi, threshold)}{window}"
                value = ("{{ $value | humanizePercentage }} below its "
                         f"{threshold.baseline} value" if threshold.baseline else
                         "{{ $value | humanizePercentage }} change")
            else:
                side = "above" if threshold.kind == "above" else "below"
                condition = f"is {side} {_shown(kpi, threshold)}{window}"
                value = f"{{{{ $value | {_humanize(kpi)} }}}}"
            title = _title(kpi)
            rule = {
                "alert": alert_name(kpi, threshold),
                "expr": _kpi_expr(kpi, threshold, settings),
                "for": threshold.hold or dict(settings.kpi_for)[threshold.severity],
                "labels": {"severity": threshold.severity, "team": kpi.team},
                "annotations": {
                    "summary": f"{title} {condition}.",
                    "description": (f"{kpi.metric} from {_subject(kpi)} is {value}; "
                                    f"the {threshold.severity} threshold: {condition}."),
                },
            }
            if rule["for"] in ("0", "0s", "0m"):
                del rule["for"]  # fires at the first evaluation
            rules.append(rule)
    return rules


# Alerts about the whole job, not one source: their series carry no `source`.
JOB_ALERTS = ("KpiExporterDown", "KpiExporterAbsent")


def health_alerts(settings: KitSettings) -> list[dict]:
    def per_source(metric: str, **matchers: str) -> str:
        return f"max without(instance) ({series(metric, settings, **matchers)})"

    up = series("up", settings)
    return [
        {
            "alert": "KpiExporterDown",
            "expr": f"max by (job) ({up}) == 0",
            "for": "5m",
            "labels": {"severity": "critical", "team": "engineering"},
            "annotations": {
                "summary": "Prometheus cannot scrape kpi-exporter.",
                "description": "No target of job {{ $labels.job }} has answered a scrape for "
                               "5 minutes: no business KPIs are being collected.",
            },
        },
        {
            "alert": "KpiExporterAbsent",
            "expr": f"absent({up})",
            "for": "15m",
            "labels": {"severity": "critical", "team": "engineering"},
            "annotations": {
                "summary": "Prometheus has no kpi-exporter target at all.",
                "description": "The job {{ $labels.job }} has no target in Prometheus: the "
                               "scrape config or the service discovery lost the exporter.",
            },
        },
        {
            "alert": "KpiSourceDown",
            "expr": f"{per_source('kpi_source_up')} == 0",
            "for": settings.source_down_for,
            "labels": {"severity": "critical", "team": "engineering"},
            "annotations": {
                "summary": "A KPI source has been failing for several polls.",
                "description": "Polls of {{ $labels.source }} have failed for "
                               f"{settings.source_down_for}; its KPIs show the last good values.",
            },
        },
        {
            "alert": "KpiSourceStale",
            "expr": (f"time() - {per_source('kpi_source_last_success_timestamp_seconds')} > "
                     f"clamp_min(2 * {per_source('kpi_source_poll_interval_seconds')}, "
                     f"{settings.stale_floor_seconds})"),
            "for": "5m",
            "labels": {"severity": "critical", "team": "engineering"},
            "annotations": {
                "summary": "KPI data has not been refreshed for two poll intervals.",
                "description": "The last successful poll of {{ $labels.source }} was "
                               "{{ $value | humanizeDuration }} ago.",
            },
        },
        {
            "alert": "KpiInputsMissing",
            # any KPI series of the source, the exporter's own kpi_source_* aside
            "expr": (f"{per_source('kpi_source_up')} == 1 unless on(job, source) "
                     f'count by (job, source) ({{{settings.job_selector}, '
                     f'__name__=~"kpi_.+", __name__!~"kpi_source_.+"}})'),
            "for": "30m",
            "labels": {"severity": "warning", "team": "engineering"},
            "annotations": {
                "summary": "A healthy source exports no KPI values.",
                "description": "{{ $labels.source }} polls successfully but exports no KPI "
                               "series: check the exporter's logs for dropped series.",
            },
        },
    ]


def recording_rules(kpis: tuple[catalog.Kpi, ...], settings: KitSettings) -> list[dict]:
    """Derived series that dashboards and alerts share (`level:metric:operations`),
    the catalog's recorded KPIs among them (their `<job>` placeholder is the kit's job)."""
    def kpi(key: str, **matchers: str) -> str:
        return series(catalog.by_key(kpis)[key].metric, settings, **matchers)

    mrr, paying = kpi("mrr"), kpi("paying_customers")
    return [{"record": k.metric, "expr": k.recorded.replace("<job>", settings.job_selector)}
            for k in kpis if k.recorded] + [
        {"record": "source:kpi_arr:mrr_x12", "expr": f"12 * {mrr}"},
        {"record": "source:kpi_mrr:change_ratio_1w",
         "expr": f"({mrr} - {mrr} offset 1w) / {mrr} offset 1w"},
        {"record": "source:kpi_paying_customers:change_ratio_1w",
         "expr": f"({paying} - {paying} offset 1w) / {paying} offset 1w"},
        {"record": "source:kpi_failed_payments_amount:ratio_of_mrr",
         "expr": f'{kpi("failed_payments_amount", window="24h")} / ignoring(window) {mrr}'},
    ]


def add_links(groups: list[dict], settings: KitSettings) -> list[dict]:
    """The one pass that gives every alert its runbook and dashboard (the mixin
    convention): the area's dashboard for KPI alerts, the health one otherwise,
    opened on the alert's job and source."""
    for group in groups:
        area = group["name"].split(".")[-1].split("-")[0]  # platform-requests: platform
        dashboard = f"{settings.grafana_url}/d/{UIDS.get(area, UIDS['health'])}" \
                    f"?var-job={settings.job}"
        for rule in group["rules"]:
            if "alert" in rule:
                rule["annotations"]["runbook_url"] = \
                    f"{settings.runbook_url}#{rule['alert'].lower()}"
                source = "" if rule["alert"] in JOB_ALERTS or rule["alert"].startswith(
                    "Platform") else "&var-source={{ $labels.source }}"
                rule["annotations"]["dashboard_url"] = dashboard + source
    return groups


def rule_groups(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS,
                settings: KitSettings = KitSettings()) -> dict:
    """The whole rules file, ready for YAML."""
    areas = list(dict.fromkeys(kpi.area for kpi in kpis))
    # No `interval`: groups follow Prometheus' evaluation_interval.
    groups = [{"name": "kpi-exporter.recording", "rules": recording_rules(kpis, settings)}]
    for area in areas:
        alerts = kpi_alerts(tuple(k for k in kpis if k.area == area), settings)
        if alerts:
            groups.append({"name": f"kpi-exporter.{area}", "rules": alerts})
    for part, rules in platform.groups(settings.platform).items():
        groups.append({"name": f"kpi-exporter.platform-{part}", "rules": rules})
    groups.append({"name": "kpi-exporter.health",
                   "rules": health_alerts(settings) + [platform.sync_success_alert(settings)]})
    return {"groups": add_links(groups, settings)}
