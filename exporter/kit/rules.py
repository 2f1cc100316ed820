"""Prometheus recording and alerting rules, generated from the KPI catalog.

Every threshold in the catalog becomes an alert; a KPI with a warning and a
critical threshold gets two rules of the same name, told apart by `severity`
(the mixin convention, so Alertmanager can inhibit the warning while the
critical fires). Health alerts watch the exporter itself. `runbook_url` and
`dashboard_url` are added to every alert in one pass at the end.

Alerts only compare series the exporter computes itself (from upstream
history, not Prometheus history), so they work from the first scrape, and
none fires for lack of data on a fresh install.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter import catalog
from exporter.kit.dashboards import UIDS

@dataclass(frozen=True)
class KitSettings:
    """What the generated rules assume about the deployment (the mixin `_config`)."""

    # Selects the exporter's scrape job; change it when your job is named otherwise.
    job_selector: str = 'job="kpi-exporter"'
    # Where the runbooks live; each alert links to the section named after it.
    runbook_base_url: str = "https://github.com/kpi-exporter/kpi-exporter/blob/main/docs/runbooks.md"
    # Grafana's address, for each alert's dashboard link.
    grafana_url: str = "http://localhost:3000"
    # How long a KPI threshold must stay broken before its alert fires, unless
    # the threshold says otherwise: twice the default (5m) poll interval, so one
    # odd poll pages nobody; critical ones sooner ("critical now, warning within hours").
    kpi_for: tuple[tuple[str, str], ...] = (("critical", "10m"), ("warning", "30m"), ("info", "1h"))
    # A source that has failed this long has missed several polls.
    source_down_for: str = "15m"
    # The shortest staleness that alerts, whatever the poll interval.
    stale_floor_seconds: int = 900


def _camel(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))


def alert_name(kpi: catalog.Kpi, threshold: catalog.Threshold) -> str:
    suffix = {"above": "High", "below": "Low", "drop": "Drop"}[threshold.kind]
    return f"Kpi{_camel(kpi.key)}{suffix}"


def _selector(threshold: catalog.Threshold) -> str:
    return f'{{window="{threshold.window}"}}' if threshold.window else ""


def _humanize(kpi: catalog.Kpi) -> str:
    return {"ratio": "humanizePercentage", "seconds": "humanizeDuration"}.get(kpi.unit, "humanize")


def _shown(kpi: catalog.Kpi, threshold: catalog.Threshold) -> str:
    # a drop is a fraction whatever the KPI's unit
    return catalog.value_text("ratio" if threshold.kind == "drop" else kpi.unit, threshold.value)


_ACRONYMS = {"mrr": "MRR", "arr": "ARR", "arpa": "ARPA", "mqls": "MQLs", "sqls": "SQLs",
             "mql": "MQL", "sql": "SQL", "csat": "CSAT", "sla": "SLA"}


def _title(kpi: catalog.Kpi) -> str:
    words = [_ACRONYMS.get(word, word) for word in kpi.key.split("_")]
    return " ".join(words)[0].upper() + " ".join(words)[1:]


def _kpi_expr(kpi: catalog.Kpi, threshold: catalog.Threshold) -> str:
    if threshold.kind == "drop":
        if kpi.key == "mrr":  # a fall over the window, from the exporter's own growth
            growth = catalog.by_key()["mrr_growth_rate"].metric
            return f'{growth}{{window="{threshold.window}"}} < -{catalog.number(threshold.value)}'
        if threshold.baseline:  # the short window against the long one, both exported
            now = f'{kpi.metric}{{window="{threshold.window}"}}'
            before = f'{kpi.metric}{{window="{threshold.baseline}"}}'
            return (f"({before} - ignoring(window) {now}) / ignoring(window) {before} "
                    f"> {catalog.number(threshold.value)}")
        return (f"({kpi.metric} offset {threshold.window} - {kpi.metric}) / "
                f"{kpi.metric} offset {threshold.window} > {catalog.number(threshold.value)}")
    op = ">" if threshold.kind == "above" else "<"
    return f"{kpi.metric}{_selector(threshold)} {op} {catalog.number(threshold.value)}"


def _subject(kpi: catalog.Kpi) -> str:
    """Which series: the source, and the labels that tell its series apart (a domain...)."""
    extra = [f" {label} {{{{ $labels.{label} }}}}" for label in kpi.labels
             if label not in ("source", "window")]
    return "{{ $labels.source }}" + "".join(extra)


def kpi_alerts(kpis: tuple[catalog.Kpi, ...], settings: KitSettings) -> list[dict]:
    rules = []
    for kpi in kpis:
        for threshold in kpi.thresholds:
            window = f" over {threshold.window}" if threshold.window else ""
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
                "expr": _kpi_expr(kpi, threshold),
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


def health_alerts(settings: KitSettings) -> list[dict]:
    return [
        {
            "alert": "KpiExporterDown",
            "expr": f"up{{{settings.job_selector}}} == 0",
            "for": "5m",
            "labels": {"severity": "critical", "team": "engineering"},
            "annotations": {
                "summary": "Prometheus cannot scrape kpi-exporter.",
                "description": "The target {{ $labels.instance }} has been down for 5 minutes: "
                               "no business KPIs are being collected.",
            },
        },
        {
            "alert": "KpiSourceDown",
            "expr": "kpi_source_up == 0",
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
            "expr": ("time() - kpi_source_last_success_timestamp_seconds > "
                     f"clamp_min(2 * kpi_source_poll_interval_seconds, "
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
            "expr": ('kpi_source_up == 1 unless on(source) count by (source) '
                     '({__name__=~"kpi_.+", __name__!~"kpi_source_.+"})'),
            "for": "30m",
            "labels": {"severity": "warning", "team": "engineering"},
            "annotations": {
                "summary": "A healthy source exports no KPI values.",
                "description": "{{ $labels.source }} polls successfully but exports no KPI "
                               "series: check the exporter's logs for dropped series.",
            },
        },
    ]


def recording_rules(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS) -> list[dict]:
    """Derived series that dashboards and alerts share (`level:metric:operations`),
    the catalog's recorded KPIs among them."""
    return [{"record": kpi.metric, "expr": kpi.recorded} for kpi in kpis if kpi.recorded] + [
        {"record": "source:kpi_arr:mrr_x12", "expr": "12 * kpi_mrr"},
        {"record": "source:kpi_mrr:change_ratio_1w",
         "expr": "(kpi_mrr - kpi_mrr offset 1w) / kpi_mrr offset 1w"},
        {"record": "source:kpi_paying_customers:change_ratio_1w",
         "expr": "(kpi_paying_customers - kpi_paying_customers offset 1w) "
                 "/ kpi_paying_customers offset 1w"},
        {"record": "source:kpi_failed_payments_amount:ratio_of_mrr",
         "expr": 'kpi_failed_payments_amount{window="24h"} / ignoring(window) kpi_mrr'},
    ]


def add_links(groups: list[dict], settings: KitSettings) -> list[dict]:
    """The one pass that gives every alert its runbook and dashboard (the mixin
    convention): the area's dashboard for KPI alerts, the health one otherwise."""
    for group in groups:
        area = group["name"].split(".")[-1]
        dashboard = UIDS.get(area, UIDS["health"])
        for rule in group["rules"]:
            if "alert" in rule:
                rule["annotations"]["runbook_url"] = \
                    f"{settings.runbook_base_url}#{rule['alert'].lower()}"
                rule["annotations"]["dashboard_url"] = f"{settings.grafana_url}/d/{dashboard}"
    return groups


def rule_groups(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS,
                settings: KitSettings = KitSettings()) -> dict:
    """The whole rules file, ready for YAML."""
    by_area: dict[str, list[dict]] = {}
    for kpi in kpis:
        by_area.setdefault(kpi.area, [])
    # No `interval`: groups follow Prometheus' evaluation_interval.
    groups = [{"name": "kpi-exporter.recording", "rules": recording_rules(kpis)}]
    for area in by_area:
        alerts = kpi_alerts(tuple(k for k in kpis if k.area == area), settings)
        if alerts:
            groups.append({"name": f"kpi-exporter.{area}", "rules": alerts})
    groups.append({"name": "kpi-exporter.health", "rules": health_alerts(settings)})
    return {"groups": add_links(groups, settings)}
