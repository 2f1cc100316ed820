"""Grafana dashboards as code (grafanalib), generated from the KPI catalog.

Panel factories first, then one small builder per dashboard. Every panel gets
a unit and a description from the catalog, an object-form datasource that
points at the `datasource` template variable, and, for KPI stats, green /
yellow / red steps from the KPI's target and thresholds (so a config override
recolours the dashboard). Counters are only ever shown through rate().
"""

from __future__ import annotations

import dataclasses
import json
import re

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

from exporter import catalog
from exporter.kit.settings import DEFAULT_JOB, Availability, KitSettings, Platform

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
UIDS = {"overview": "kpi-exec-overview", "revenue": "kpi-revenue", "email": "kpi-email",
        "sales": "kpi-sales", "support": "kpi-support", "product": "kpi-product",
        "platform": "kpi-platform", "health": "kpi-exporter-health"}
# Custom KPIs (the config's own) have a row on the product usage dashboard.
UIDS["custom"] = UIDS["product"]
GREEN, YELLOW, RED, BLUE = "green", "#EAB839", "red", "blue"


def grafana_unit(kpi_unit: str, currency: str) -> str:
    return {"currency": f"currency{currency.upper()}", "money": "short", "ratio": "percentunit",
            "count": "short", "seconds": "dtdurations", "timestamp": "dateTimeAsIso",
            "bool": "bool", "number": "none"}[kpi_unit]


def threshold_steps(kpi: catalog.Kpi) -> list[tuple[float | None, str]]:
    """Colour steps (from value, colour), ascending, from the target and thresholds."""
    levels = [t for t in kpi.thresholds if t.kind in ("above", "below")]
    if kpi.direction == "higher":
        low = max((t.value for t in levels if t.kind == "below"), default=None)
        steps: list[tuple[float | None, str]] = [(None, RED)]
        if low is not None and (kpi.target is None or low < kpi.target):
            steps.append((low, YELLOW))  # between the alarm and the target
        if kpi.target is not None:
            steps.append((kpi.target, GREEN))
        return steps
    if kpi.direction == "lower":
        highs = sorted((t.value, t.severity) for t in levels if t.kind == "above")
        if not highs and kpi.target is not None:
            return [(None, GREEN), (kpi.target, RED)]
        return [(None, GREEN)] + [(v, RED if sev == "critical" else YELLOW) for v, sev in highs]
    return [(None, BLUE)]


def _thresholds(steps: list[tuple[float | None, str]]) -> list[g.Threshold]:
    return [g.Threshold(color, index, 0.0 if value is None else float(value))
            for index, (value, color) in enumerate(steps)]


def kpi_stat(kpi: catalog.Kpi, expr: str, x: int, y: int, currency: str, *,
             title: str | None = None, w: int = 6, legend: str = "{{source}}") -> g.Stat:
    target = "" if kpi.target is None else f" Target: {catalog.value_text(kpi.unit, kpi.target)}."
    return g.Stat(
        title=title or kpi.key.replace("_", " ").capitalize(),
        description=kpi.description + target,
        dataSource=DATASOURCE,
        targets=[g.Target(expr=scoped(expr), refId="A", instant=True, legendFormat=legend)],
        format=grafana_unit(kpi.unit, currency),
        reduceCalc="lastNotNull",
        graphMode="none",
        thresholds=_thresholds(threshold_steps(kpi)),
        gridPos=g.GridPos(h=4, w=w, x=x, y=y),
    )


def total(expr: str) -> str:
    """An executive total across sources (two Stripe accounts' MRR is the company's),
    each counted once however many replicas of the exporter serve it."""
    return f"sum(max without (instance) ({expr}))"


def timeseries(title: str, description: str, targets: list[tuple[str, str]], unit: str,
               x: int, y: int, w: int = 12, h: int = 8,
               lines: tuple[float, ...] = (), time_from: str | None = None,
               interval: str | None = None) -> g.TimeSeries:
    """`lines`: targets drawn as dashed lines (Grafana thresholds), not as queries.
    `time_from`: the panel's own range ("1y"), whatever the dashboard's; `interval`:
    its least query step (Grafana's "Min interval")."""
    if lines:
        description += " Dashed: the target" + ("s." if len(lines) > 1 else ".")
    return g.TimeSeries(
        title=title, description=description, dataSource=DATASOURCE, unit=unit,
        targets=[g.Target(expr=scoped(expr), legendFormat=legend, refId=chr(ord("A") + i))
                 for i, (expr, legend) in enumerate(targets)],
        gridPos=g.GridPos(h=h, w=w, x=x, y=y),
        thresholds=[g.Threshold("transparent", 0, 0.0)]
        + [g.Threshold(GREEN, i + 1, float(v)) for i, v in enumerate(sorted(set(lines)))],
        thresholdsStyleMode="dashed" if lines else "off",
        timeFrom=time_from,
        interval=interval,
    )


# Every query is scoped to the dashboard's variables: the kit's job (the
# default), its instances (replicas) and sources, all selectable in Grafana.
SCOPE = 'job=~"$job",instance=~"$instance",source=~"$source"'
_SERIES = re.compile(r"(?<![\w:\"])((?:source:)?kpi_[a-z0-9_:]*[a-z0-9_])(\{[^}]*\})?")


def scoped(expr: str) -> str:
    """`kpi_mrr{window="30d"}` -> `kpi_mrr{job=~"$job",...,window="30d"}`, every series."""
    def scope(match: re.Match) -> str:
        inner = (match.group(2) or "{}")[1:-1].strip()
        return f"{match.group(1)}{{{SCOPE}{',' + inner if inner else ''}}}"

    return _SERIES.sub(scope, expr)


def _variables(job: str) -> list[g.Template]:
    every = {"includeAll": True, "multi": True, "allValue": ".*", "default": "$__all"}
    always = "kpi_source_poll_interval_seconds"  # every source has it, polled yet or not
    return [
        g.Template(name="datasource", label="Data source", query="prometheus", type="datasource"),
        g.Template(name="job", label="Job", dataSource=DATASOURCE, default=job,
                   query=f"label_values({always}, job)"),
        g.Template(name="instance", label="Instance", dataSource=DATASOURCE,
                   query=f'label_values({always}{{job=~"$job"}}, instance)', **every),
        g.Template(name="source", label="Source", dataSource=DATASOURCE,
                   query=f'label_values({always}{{job=~"$job",instance=~"$instance"}}, source)',
                   **every),
    ]


def _dashboard(key: str, title: str, description: str, panels: list) -> g.Dashboard:
    links = [g.DashboardLink(title=other_title, uri=f"/d/{uid}", type="link", keepTime=True,
                             includeVars=True)
             for other, (uid, other_title) in _TITLES.items() if other != key]
    return g.Dashboard(
        title=title, uid=UIDS[key], description=description, tags=["kpi-exporter"],
        schemaVersion=SCHEMA_VERSION, timezone="utc", refresh="1m",
        time=g.Time("now-7d", "now"), links=links, panels=panels,
        templating=g.Templating(list=_variables(DEFAULT_JOB)),
    ).auto_panel_ids()


_TITLES = {"overview": (UIDS["overview"], "KPI executive overview"),
           "revenue": (UIDS["revenue"], "KPI revenue"),
           "email": (UIDS["email"], "KPI email deliverability"),
           "sales": (UIDS["sales"], "KPI sales pipeline"),
           "support": (UIDS["support"], "KPI customer support"),
           "product": (UIDS["product"], "KPI product usage"),
           "platform": (UIDS["platform"], "Platform health"),
           "health": (UIDS["health"], "kpi-exporter health")}


def _slo(key: str, description: str, *, target: float | None, direction: str,
         unit: catalog.Unit = "ratio") -> catalog.Kpi:
    """A platform number seen as a KPI, for the stat panels' units and colours."""
    return catalog.Kpi(key=key, help=description, unit=unit, labels=(), team="engineering",
                       area="platform", description=description, target=target,
                       direction=direction)


def _uptime(availability: Availability) -> catalog.Kpi:
    return _slo("uptime", "Availability over 30 days: the probes' mean success "
                "(platform:availability:ratio_30d).", target=availability.objective,
                direction="higher")


def overview(kpis: dict[str, catalog.Kpi], currency: str,
             platform: Platform = Platform()) -> g.Dashboard:
    """The numbers an executive opens first, each against its target."""
    stats = [
        ("mrr", total("kpi_mrr"), "MRR"),
        ("mrr_growth_rate", 'kpi_mrr_growth_ratio{window="30d"}', "MRR growth (30 days)"),
        ("paying_customers", total("kpi_paying_customers"), "Paying customers"),
        ("arpa", "kpi_arpa", "ARPA"),
        ("customer_churn_rate", 'kpi_customer_churn_ratio{window="30d"}', "Customer churn (30 days)"),
        ("net_revenue_retention", 'kpi_net_revenue_retention_ratio{window="1y"}', "NRR (1 year)"),
        ("trial_conversion_rate", 'kpi_trial_conversion_ratio{window="30d"}',
         "Trial conversion (30 days)"),
        ("failed_payments_amount", 'kpi_failed_payments_amount{window="24h"}',
         "Failed payments (24 h)"),
    ]
    panels = [kpi_stat(kpis[key], expr, (i % 5) * 4, (i // 5) * 4, currency,
                       title=title, w=4, legend="total" if expr.startswith("sum(") else "{{source}}")
              for i, (key, expr, title) in enumerate(stats)]
    # ARR is 12 x MRR (a recording rule); its documented target, 1.2 M, is 12 x MRR's.
    mrr = kpis["mrr"]
    arr = dataclasses.replace(
        mrr, key="arr", description="12 x MRR (recording rule source:kpi_arr:mrr_x12).",
        target=None if mrr.target is None else mrr.target * 12, thresholds=())
    panels.append(kpi_stat(arr, total("source:kpi_arr:mrr_x12"), 12, 4, currency, title="ARR",
                           w=4, legend="total"))
    if platform.availability:  # revenue and uptime side by side
        panels.append(kpi_stat(_uptime(platform.availability), "platform:availability:ratio_30d",
                               16, 4, currency, title="Uptime (30 days)", w=4,
                               legend="availability"))
    panels += [
        timeseries("MRR and ARR", "MRR (kpi_mrr) and ARR (12 x MRR, recording rule).",
                   [("kpi_mrr", "MRR {{source}}"), ("source:kpi_arr:mrr_x12", "ARR {{source}}")],
                   grafana_unit("currency", currency), 0, 8),
        timeseries("MRR movements (30 days)", kpis["mrr_movement"].description,
                   [('kpi_mrr_movement{window="30d"}', "{{movement}}")],
                   grafana_unit("currency", currency), 12, 8),
        timeseries("Churn, retention and trial conversion",
                   "Customer churn and trial conversion over 30 days, net revenue retention "
                   "over a year, as they moved.",
                   [('kpi_customer_churn_ratio{window="30d"}', "customer churn {{source}}"),
                    ('kpi_net_revenue_retention_ratio{window="1y"}', "NRR 1y {{source}}"),
                    ('kpi_trial_conversion_ratio{window="30d"}', "trial conversion {{source}}")],
                   "percentunit", 0, 16, w=24),
    ]
    return _dashboard("overview", _TITLES["overview"][1],
                      "Revenue KPIs against their documented targets.", panels)


def revenue(kpis: dict[str, catalog.Kpi], currency: str) -> g.Dashboard:
    """Where MRR comes from and where it goes."""
    money = grafana_unit("currency", currency)
    panels = [
        kpi_stat(kpis["mrr_window_start"], 'kpi_mrr_window_start{window="30d"}', 0, 0, currency,
                 title="MRR 30 days ago"),
        kpi_stat(kpis["gross_revenue_churn_rate"], 'kpi_gross_revenue_churn_ratio{window="30d"}',
                 6, 0, currency, title="Gross revenue churn (30 days)"),
        kpi_stat(kpis["net_revenue_retention"], 'kpi_net_revenue_retention_ratio{window="30d"}',
                 12, 0, currency, title="NRR (30 days)"),
        kpi_stat(kpis["customer_lifetime_value"], "kpi_customer_lifetime_value", 18, 0, currency,
                 title="Customer lifetime value"),
        # Always a year, whatever the dashboard's range: MRR is judged by its curve
        # over months (`kpi-exporter backfill` gives a new install its past). A step of
        # a day lands every point on a backfilled midnight (Grafana aligns queries to
        # their step); a finer one would find the daily samples only now and then.
        timeseries("MRR, the last 12 months", kpis["mrr"].description,
                   [("kpi_mrr", "{{source}} {{instance}}")], money, 0, 4, w=24,
                   time_from="1y", interval="1d"),
        timeseries("MRR bridge (30 days)", kpis["mrr_movement"].description,
                   [('kpi_mrr_window_start{window="30d"}', "start"),
                    ('kpi_mrr_movement{window="30d"}', "{{movement}}"), ("kpi_mrr", "now")],
                   money, 0, 12),
        timeseries("MRR by currency", kpis["mrr_by_currency"].description,
                   [("kpi_mrr_by_currency", "{{currency}}")], "short", 12, 12),
        timeseries("Subscriptions by status", kpis["subscriptions"].description,
                   [("kpi_subscriptions", "{{status}}")], "short", 0, 20),
        timeseries("Trials (30 days)", kpis["trials_converted"].description,
                   [("kpi_trials_active", "active"), ('kpi_trials_started{window="30d"}', "started"),
                    ('kpi_trials_ended{window="30d"}', "ended"),
                    ('kpi_trials_converted{window="30d"}', "converted")], "short", 12, 20),
        timeseries("Refunds (30 days) and open disputes", kpis["disputes_open_amount"].description,
                   [('kpi_refunds_amount{window="30d"}', "refunds {{source}}"),
                    ("kpi_disputes_open_amount", "open disputes {{source}}")], money, 0, 28),
        timeseries("Failed payments (24 h)", kpis["failed_payments"].description,
                   [('kpi_failed_payments{window="24h"}', "count {{source}}")], "short", 12, 28),
    ]
    return _dashboard("revenue", _TITLES["revenue"][1],
                      "MRR movements, currencies, subscriptions, trials, refunds and disputes.",
                      panels)


def catalog_targets(kpi: catalog.Kpi) -> tuple[float, ...]:
    """A KPI's target(s) as dashed lines (from the catalog, so a config override moves
    them); one per distinct per-label target."""
    if kpi.targets:
        return tuple(target for _, target in kpi.targets)
    return () if kpi.target is None else (kpi.target,)


def email(kpis: dict[str, catalog.Kpi], currency: str) -> g.Dashboard:
    """Is mail getting through, per sending domain, and what fails."""
    day, week = "24h", "7d"
    per_domain = "{{domain}}"
    panels = [
        kpi_stat(kpis["email_delivery_rate"], f'kpi_email_delivery_ratio{{window="{day}"}}',
                 0, 0, currency, title="Delivery rate (24 h)", legend=per_domain),
        kpi_stat(kpis["email_hard_bounce_rate"], f'kpi_email_hard_bounce_ratio{{window="{day}"}}',
                 6, 0, currency, title="Hard-bounce rate (24 h)", legend=per_domain),
        kpi_stat(kpis["email_complaint_rate"], f'kpi_email_complaint_ratio{{window="{day}"}}',
                 12, 0, currency, title="Complaint rate (24 h)", legend=per_domain),
        kpi_stat(kpis["email_open_rate"], f'kpi_email_open_ratio{{window="{week}"}}',
                 18, 0, currency, title="Open rate (7 days)", legend=per_domain),
        timeseries("Delivery rate by domain (24 h)", kpis["email_delivery_rate"].description,
                   [(f'kpi_email_delivery_ratio{{window="{day}"}}', per_domain)],
                   "percentunit", 0, 4, lines=catalog_targets(kpis["email_delivery_rate"])),
        timeseries("Hard-bounce and complaint rates by domain (24 h)",
                   kpis["email_hard_bounce_rate"].description + " "
                   + kpis["email_complaint_rate"].description,
                   [(f'kpi_email_hard_bounce_ratio{{window="{day}"}}', "bounces {{domain}}"),
                    (f'kpi_email_complaint_ratio{{window="{day}"}}', "complaints {{domain}}")],
                   "percentunit", 12, 4),
        timeseries("Volume by domain (24 h)", kpis["email_events"].description,
                   [(f'kpi_email_events{{event=~"accepted|delivered", window="{day}"}}',
                     "{{domain}} {{event}}")], "short", 0, 12),
        timeseries("Failures by kind (24 h)",
                   "Messages that failed for good (hard bounces, soft bounces out of retries, "
                   "or suppressed: not sent to an address on a suppression list) and that are "
                   "still being retried.",
                   [(f'kpi_email_events{{event=~"bounced_hard|bounced_soft|suppressed|'
                     f'failed_temporary", '
                     f'window="{day}"}}', "{{domain}} {{event}}")], "short", 12, 12),
        timeseries("Engagement by domain (7 days)",
                   "Unique opens, unique clicks and unsubscribes over delivered messages.",
                   [(f'kpi_email_open_ratio{{window="{week}"}}', "opens {{domain}}"),
                    (f'kpi_email_click_ratio{{window="{week}"}}', "clicks {{domain}}"),
                    (f'kpi_email_unsubscribe_ratio{{window="{week}"}}', "unsubscribes {{domain}}")],
                   "percentunit", 0, 20),
        timeseries("Suppression lists", kpis["email_suppressions"].description,
                   [("kpi_email_suppressions", "{{domain}} {{list}}")], "short", 12, 20),
    ]
    return _dashboard("email", _TITLES["email"][1],
                      "Deliverability, bounces, complaints and engagement per sending domain.",
                      panels)


def sales(kpis: dict[str, catalog.Kpi], currency: str) -> g.Dashboard:
    """How much is in the pipeline, how it converts, and whether it moves."""
    money = grafana_unit("currency", currency)
    quarter, month = "90d", "30d"

    def stat(key: str, expr: str, x: int, y: int, title: str,
             legend: str = "{{source}}") -> g.Stat:
        return kpi_stat(kpis[key], expr, x, y, currency, title=title, w=4, legend=legend)

    panels = [
        stat("sales_pipeline_amount", total("kpi_sales_pipeline_amount"), 0, 0,
             "Open pipeline", legend="total"),
        stat("sales_pipeline_weighted_amount", total("kpi_sales_pipeline_weighted_amount"), 4, 0,
             "Weighted pipeline", legend="total"),
        stat("sales_win_rate", f'kpi_sales_win_ratio{{window="{quarter}"}}', 8, 0,
             "Win rate (90 days)"),
        stat("sales_average_deal_amount", f'kpi_sales_average_deal_amount{{window="{quarter}"}}',
             12, 0, "Average won deal (90 days)"),
        stat("sales_cycle", f'kpi_sales_cycle_seconds{{window="{quarter}"}}', 16, 0,
             "Sales cycle (90 days)"),
        stat("sales_stalled_deals", "kpi_sales_stalled_deals", 20, 0, "Stalled deals (14 days)"),
        stat("sales_mqls", f'kpi_sales_mqls{{window="{month}"}}', 0, 4, "MQLs (30 days)"),
        stat("sales_sqls", f'kpi_sales_sqls{{window="{month}"}}', 4, 4, "SQLs (30 days)"),
        stat("sales_mql_to_sql_conversion",
             f'kpi_sales_mql_to_sql_conversion_ratio{{window="{month}"}}', 8, 4, "MQL to SQL (30 days)"),
        stat("sales_sql_to_opportunity_conversion",
             f'kpi_sales_sql_to_opportunity_conversion_ratio{{window="{month}"}}', 12, 4,
             "SQL to opportunity (30 days)"),
        stat("sales_lead_response", f'kpi_sales_lead_response_median_seconds{{window="{month}"}}',
             16, 4, "Lead response, median (30 days)"),
        stat("sales_lead_response_within_target",
             f'kpi_sales_lead_response_within_target_ratio{{window="{month}"}}', 20, 4,
             "Leads touched in time (30 days)"),
        timeseries("Open pipeline by stage", kpis["sales_pipeline_amount"].description,
                   [("kpi_sales_pipeline_amount", "{{source}} {{pipeline}} / {{stage}}")],
                   money, 0, 8),
        timeseries("Weighted pipeline by stage", kpis["sales_pipeline_weighted_amount"].description,
                   [("kpi_sales_pipeline_weighted_amount", "{{source}} {{pipeline}} / {{stage}}")],
                   money, 12, 8),
        timeseries("Deals won and lost (30 days)", kpis["sales_deals_won"].description + " "
                   + kpis["sales_deals_lost"].description,
                   [(f'kpi_sales_deals_won{{window="{month}"}}', "won {{source}}"),
                    (f'kpi_sales_deals_lost{{window="{month}"}}', "lost {{source}}")],
                   "short", 0, 16),
        timeseries("Won amount", kpis["sales_won_amount"].description,
                   [("kpi_sales_won_amount", "{{source}} {{window}}")], money, 12, 16),
        timeseries("Lead funnel (30 days)", "New leads, MQLs, SQLs and opportunities reached "
                   "in the last 30 days.",
                   [(f'kpi_sales_leads{{window="{month}"}}', "leads {{source}}"),
                    (f'kpi_sales_mqls{{window="{month}"}}', "MQLs {{source}}"),
                    (f'kpi_sales_sqls{{window="{month}"}}', "SQLs {{source}}"),
                    (f'kpi_sales_opportunities{{window="{month}"}}', "opportunities {{source}}")],
                   "short", 0, 24),
        timeseries("Funnel conversion (30 days)",
                   kpis["sales_mql_to_sql_conversion"].description,
                   [(f'kpi_sales_mql_to_sql_conversion_ratio{{window="{month}"}}',
                     "MQL to SQL {{source}}"),
                    (f'kpi_sales_sql_to_opportunity_conversion_ratio{{window="{month}"}}',
                     "SQL to opportunity {{source}}")], "percentunit", 12, 24,
                   lines=catalog_targets(kpis["sales_mql_to_sql_conversion"])
                   + catalog_targets(kpis["sales_sql_to_opportunity_conversion"])),
        timeseries("Lead response, median (30 days)", kpis["sales_lead_response"].description,
                   [(f'kpi_sales_lead_response_median_seconds{{window="{month}"}}', "{{source}}")],
                   grafana_unit("seconds", currency), 0, 32,
                   lines=catalog_targets(kpis["sales_lead_response"])),
        timeseries("Pipeline movement", kpis["sales_stage_changes"].description + " "
                   + kpis["sales_stalled_deals"].description,
                   [('kpi_sales_stage_changes{window="14d"}', "stage changes (14 days) {{source}}"),
                    ("kpi_sales_stalled_deals", "stalled deals {{source}}")], "short", 12, 32),
    ]
    return _dashboard("sales", _TITLES["sales"][1],
                      "Open pipeline, won and lost deals, the lead funnel and lead response, "
                      "from HubSpot or Salesforce.", panels)


def support(kpis: dict[str, catalog.Kpi], currency: str) -> g.Dashboard:
    """Is the backlog under control, are customers answered in time, and are they happy?"""
    day, week, month = "24h", "7d", "30d"
    seconds = grafana_unit("seconds", currency)

    def stat(key: str, expr: str, x: int, y: int, title: str,
             legend: str = "{{source}}") -> g.Stat:
        return kpi_stat(kpis[key], expr, x, y, currency, title=title, w=4, legend=legend)

    per_paying = kpis["support_tickets_per_paying_customer"]
    panels = [
        stat("support_open_tickets", total("kpi_support_open_tickets"), 0, 0,
             "Open tickets", legend="total"),
        stat("support_sla_breaches", total("kpi_support_sla_breaches"), 4, 0,
             "Tickets past their SLA", legend="total"),
        stat("support_csat", f'kpi_support_csat_ratio{{window="{week}"}}', 8, 0, "CSAT (7 days)"),
        stat("support_ticket_volume_vs_normal",
             f'kpi_support_ticket_volume_vs_normal_ratio{{window="{day}"}}', 12, 0,
             "Volume vs normal (24 h)"),
        stat("support_ticket_volume_change", f'kpi_support_ticket_volume_change_ratio{{window="{week}"}}',
             16, 0, "Volume week over week"),
        stat("support_tickets_per_paying_customer", per_paying.metric, 20, 0,
             "Tickets per paying customer (30 days)"),
        timeseries("Backlog by status and priority", kpis["support_open_tickets"].description,
                   [("kpi_support_open_tickets", "{{source}} {{status}} / {{priority}}")],
                   "short", 0, 4),
        timeseries("Tickets created and solved (24 h)",
                   kpis["support_tickets_created"].description + " "
                   + kpis["support_tickets_solved"].description,
                   [(f'kpi_support_tickets_created{{window="{day}"}}', "created {{source}}"),
                    (f'kpi_support_tickets_solved{{window="{day}"}}', "solved {{source}}")],
                   "short", 12, 4),
        timeseries("First reply time by priority (7 days)", kpis["support_first_reply"].description,
                   [(f'kpi_support_first_reply_seconds{{window="{week}"}}',
                     "{{source}} {{priority}} p{{percentile}}")], seconds, 0, 12),
        timeseries("Resolution time, 90th percentile, by priority (7 days)",
                   kpis["support_resolution"].description,
                   [(f'kpi_support_resolution_seconds{{window="{week}", percentile="90"}}',
                     "{{source}} {{priority}}")],
                   seconds, 12, 12, lines=catalog_targets(kpis["support_resolution"])),
        timeseries("Solved within SLA by priority (7 days)",
                   kpis["support_resolution_within_sla"].description,
                   [(f'kpi_support_resolution_within_sla_ratio{{window="{week}"}}',
                     "{{source}} {{priority}}")], "percentunit", 0, 20),
        timeseries("Tickets past their SLA by priority", kpis["support_sla_breaches"].description,
                   [("kpi_support_sla_breaches", "{{source}} {{priority}}")], "short", 12, 20),
        timeseries("CSAT (7 and 30 days)", kpis["support_csat"].description,
                   [(f'kpi_support_csat_ratio{{window=~"{week}|{month}"}}', "{{source}} {{window}}")],
                   "percentunit", 0, 28, lines=catalog_targets(kpis["support_csat"])),
        timeseries("Ratings given", kpis["support_ratings"].description,
                   [("kpi_support_ratings", "{{source}} {{window}}")], "short", 12, 28),
        timeseries("Volume and backlog trends",
                   "Volume vs normal (1 = a normal day), week-over-week volume change and "
                   "backlog growth, each against its alert threshold.",
                   [(f'kpi_support_ticket_volume_vs_normal_ratio{{window="{day}"}}',
                     "volume vs normal {{source}}"),
                    (f'kpi_support_ticket_volume_change_ratio{{window="{week}"}}',
                     "week over week {{source}}"),
                    (f'kpi_support_backlog_growth_ratio{{window="{week}"}}', "backlog growth {{source}}")],
                   "percentunit", 0, 36),
        timeseries("Tickets per paying customer (30 days)", per_paying.description,
                   [(per_paying.metric, "{{source}}")],
                   "percentunit", 12, 36, lines=catalog_targets(per_paying)),
    ]
    return _dashboard("support", _TITLES["support"][1],
                      "Backlog, reply and resolution times against the SLA, CSAT and ticket "
                      "volume, from Zendesk or Intercom.", panels)


def _at(kpi: catalog.Kpi, label_value: str) -> catalog.Kpi:
    """A per-label-target KPI seen at one label value (DAU: the 24h window's target)."""
    return dataclasses.replace(kpi, target=dict(kpi.targets).get(label_value), targets=(),
                               target_label=None)


def product(kpis: dict[str, catalog.Kpi], currency: str) -> g.Dashboard:
    """Are people using the product, do they come back, would they recommend it? And
    the config's own KPIs, one panel each."""
    users, quarter = kpis["product_active_users"], "90d"

    def stat(kpi: catalog.Kpi, expr: str, x: int, y: int, title: str) -> g.Stat:
        return kpi_stat(kpi, expr, x, y, currency, title=title, w=4)

    panels = [
        stat(_at(users, "24h"), 'kpi_product_active_users{window="24h"}', 0, 0,
             "Daily active users"),
        stat(_at(users, "7d"), 'kpi_product_active_users{window="7d"}', 4, 0,
             "Weekly active users"),
        stat(_at(users, "30d"), 'kpi_product_active_users{window="30d"}', 8, 0,
             "Monthly active users"),
        stat(kpis["product_stickiness"], "kpi_product_stickiness_ratio", 12, 0,
             "Stickiness (DAU / MAU)"),
        stat(kpis["product_active_users_change"],
             'kpi_product_active_users_change_ratio{window="7d"}', 16, 0, "Active users, week "
             "over week"),
        stat(kpis["nps"], f'kpi_nps{{window="{quarter}"}}', 20, 0, "NPS (90 days)"),
        timeseries("Active users", users.description,
                   [('kpi_product_active_users', "{{window}}")], "short", 0, 4,
                   lines=catalog_targets(users)),
        timeseries("Stickiness and week over week", kpis["product_stickiness"].description,
                   [("kpi_product_stickiness_ratio", "DAU / MAU"),
                    ('kpi_product_active_users_change_ratio{window="7d"}', "week over week")],
                   "percentunit", 12, 4, lines=catalog_targets(kpis["product_stickiness"])),
        timeseries("NPS and the average answer (90 days)", kpis["nps"].description,
                   [(f'kpi_nps{{window="{quarter}"}}', "NPS"),
                    (f'kpi_nps_score_average{{window="{quarter}"}}', "average answer (0-10)")],
                   "none", 0, 12, lines=catalog_targets(kpis["nps"])),
        timeseries("Survey answers (90 days)", kpis["nps_responses"].description,
                   [(f'kpi_nps_responses{{window="{quarter}"}}', "{{source}}")], "short", 12, 12),
    ]
    # The config's own KPIs, each against its target: two to a row.
    for index, kpi in enumerate(k for k in kpis.values() if k.area == "custom"):
        legend = " ".join(f"{{{{{label}}}}}" for label in kpi.labels[1:]) or "{{source}}"
        panels.append(timeseries(kpi.key.replace("_", " ").capitalize(), kpi.description,
                                 [(kpi.metric, legend)], grafana_unit(kpi.unit, currency),
                                 (index % 2) * 12, 20 + (index // 2) * 8,
                                 lines=catalog_targets(kpi)))
    return _dashboard("product", _TITLES["product"][1],
                      "Active users, stickiness and NPS from the product's own database, and "
                      "the KPIs the config defines.", panels)


def platform_board(platform: Platform, currency: str) -> g.Dashboard:
    """The platform's SLOs beside the exporter's own sync success and data freshness."""
    panels: list = []
    y = 0
    if platform.availability:
        objective = platform.availability.objective
        allowed = round(1 - objective, 12)
        panels += [
            kpi_stat(_uptime(platform.availability), "platform:availability:ratio_30d", 0, y,
                     currency, title="Availability (30 days)", legend="availability"),
            kpi_stat(_slo("availability_budget", "The share of the 30-day error budget of "
                          "availability still unspent (below 0: overspent).", target=0.25,
                          direction="higher"),
                     "platform:availability:budget_remaining_ratio", 6, y, currency,
                     title="Availability budget left", legend="budget"),
            timeseries("Availability burn rate", "How many times faster than the objective "
                       "allows the availability budget burns, over 1 hour and 6 hours (a page "
                       "at 14.4 and 6, a ticket at 1).",
                       [(f"(1 - platform:availability:ratio_1h) / {catalog.number(allowed)}", "1h"),
                        (f"(1 - platform:availability:ratio_6h) / {catalog.number(allowed)}", "6h")],
                       "short", 12, y, lines=(1, 6, 14.4)),
        ]
        y += 8
    if platform.requests:
        requests = platform.requests
        allowed = round(1 - requests.error_objective, 12)
        panels += [
            kpi_stat(_slo("error_ratio", "Failed / all requests over 30 days.", target=allowed,
                          direction="lower"), "platform:request_errors:ratio_30d", 0, y,
                     currency, title="Error ratio (30 days)", legend="errors"),
            kpi_stat(_slo("error_budget", "The share of the 30-day error budget of requests "
                          "still unspent.", target=0.25, direction="higher"),
                     "platform:request_errors:budget_remaining_ratio", 6, y, currency,
                     title="Error budget left", legend="budget"),
            timeseries("Requests per second", "All requests, and the failed ones.",
                       [(f"sum(rate({requests.total}[$__rate_interval]))", "requests"),
                        (f"sum(rate({requests.errors}[$__rate_interval]))", "errors")],
                       "reqps", 12, y),
            timeseries("Error ratio", "Failed / all requests over 5 minutes and 1 hour; "
                       "the objective's line and the 1 % critical one.",
                       [("platform:request_errors:ratio_5m", "5m"),
                        ("platform:request_errors:ratio_1h", "1h")], "percentunit", 0, y + 8,
                       lines=(allowed, 0.01)),
            timeseries("Request error burn rate", "How many times faster than the objective "
                       "allows the request error budget burns (a page at 14.4 and 6, a ticket "
                       "at 1).",
                       [(f"platform:request_errors:ratio_1h / {catalog.number(allowed)}", "1h"),
                        (f"platform:request_errors:ratio_6h / {catalog.number(allowed)}", "6h")],
                       "short", 12, y + 8, lines=(1, 6, 14.4)),
        ]
        y += 16
        if requests.latency_histogram:
            panels.append(timeseries(
                "Request latency, 95th percentile", "95 % of requests take up to this long, over "
                "5 minutes and 1 hour; the target and the warning lines.",
                [("platform:request_latency_seconds:p95_5m", "5m"),
                 ("platform:request_latency_seconds:p95_1h", "1h")], "s", 0, y,
                lines=(requests.latency_p95_target, requests.latency_p95_warning), w=24))
            y += 8
    panels += [
        timeseries("Integration sync success (1 day)", "Successful polls / polls per source "
                   "over the last day (documented: above 99.5 %).",
                   [('sum by (source) (increase(kpi_source_polls_total{result="success"}[1d])) '
                     "/ sum by (source) (increase(kpi_source_polls_total[1d]))", "{{source}}")],
                   "percentunit", 0, y, lines=(0.995,)),
        timeseries("Data freshness", "Seconds since the last successful poll of each source "
                   "(documented: operational data under an hour).",
                   [("time() - kpi_source_last_success_timestamp_seconds", "{{source}}")],
                   "s", 12, y, lines=(3600,)),
    ]
    return _dashboard("platform", _TITLES["platform"][1],
                      "Availability, errors and latency against their objectives and error "
                      "budgets, and the freshness of the KPI data.", panels)


# kpi_source_up is absent while a source's first poll runs; kpi_source_syncing
# is 1 then, so one query always says which of the three states a source is in.
SOURCE_STATE = "kpi_source_up or on (job, instance, source) (2 * (kpi_source_syncing == 1))"
_STATES = {0: ("down", "red"), 1: ("up", GREEN), 2: ("syncing", BLUE)}


def source_state(x: int, y: int) -> g.StateTimeline:
    return g.StateTimeline(
        title="Source up", description="Up when the last poll of the source succeeded, down "
        "when it failed; syncing while the first poll still runs.",
        dataSource=DATASOURCE, gridPos=g.GridPos(h=8, w=12, x=x, y=y),
        targets=[g.Target(expr=scoped(SOURCE_STATE), legendFormat="{{source}}", refId="A")],
        mappings=[{"type": "value", "options": {
            str(value): {"text": text, "color": color, "index": value}
            for value, (text, color) in _STATES.items()}}],
    )


def health() -> g.Dashboard:
    """Is the data fresh, and are the upstream APIs answering?"""
    panels = [
        source_state(0, 0),
        timeseries("Data age", "Seconds since the last successful poll of each source.",
                   [("time() - kpi_source_last_success_timestamp_seconds", "{{source}}")],
                   "s", 12, 0),
        timeseries("Poll duration", "How long the last poll of each source took.",
                   [("kpi_source_poll_duration_seconds", "{{source}}")], "s", 0, 8),
        timeseries("Requests and errors", "Upstream requests per second, and failed ones "
                   "(retried ones included; kpi_source_request_errors_total has the reason).",
                   [("rate(kpi_source_requests_total[$__rate_interval])", "{{source}} requests"),
                    ("sum by (source) (rate(kpi_source_request_errors_total[$__rate_interval]))",
                     "{{source}} errors")], "reqps", 12, 8),
        timeseries("Rate-limit waits", "Seconds per second spent waiting on the client-side "
                   "rate limit.",
                   [("rate(kpi_source_rate_limit_wait_seconds_total[$__rate_interval])",
                     "{{source}}")], "s", 0, 16),
        timeseries("Failed polls", "Failed polls per hour by source.",
                   [('increase(kpi_source_polls_total{result="failure"}[1h])', "{{source}}")],
                   "short", 12, 16),
        timeseries("Poll duration, 90th percentile (1 h)", "90 % of the polls of the last hour "
                   "took at most this long (from the kpi_source_poll_seconds histogram).",
                   [("histogram_quantile(0.9, sum by (source, le) "
                     "(rate(kpi_source_poll_seconds_bucket[1h])))", "{{source}}")], "s", 0, 24),
    ]
    return _dashboard("health", _TITLES["health"][1],
                      "Freshness and upstream health of every KPI source.", panels)


def dashboards(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS, currency: str = "usd",
               settings: KitSettings = KitSettings()) -> dict[str, dict]:
    """{file name: dashboard JSON} for every dashboard, opening on the kit's job."""
    by_key = catalog.by_key(kpis)
    built = {"overview.json": overview(by_key, currency, settings.platform),
             "revenue.json": revenue(by_key, currency),
             "platform.json": platform_board(settings.platform, currency),
             "email.json": email(by_key, currency), "sales.json": sales(by_key, currency),
             "support.json": support(by_key, currency), "product.json": product(by_key, currency),
             "exporter-health.json": health()}
    for board in built.values():
        board.templating = g.Templating(list=_variables(settings.job))
    return {name: _to_json(board) for name, board in built.items()}


def _to_json(board: g.Dashboard) -> dict:
    data = json.loads(json.dumps(board.to_json_data(), cls=DashboardEncoder))
    for panel in data["panels"]:  # Grafana's first threshold step starts at -infinity (null)
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
        if steps:
            steps[0]["value"] = None
    return data
