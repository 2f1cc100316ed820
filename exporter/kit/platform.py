"""Platform SLOs as generated rules: SLIs per window, error budgets, burn-rate alerts.

The way SLO generators (sloth, pyrra) and the Google SRE workbook do it, from
`kit.platform` (the documented objectives are the defaults):

- SLIs per window (5m, 30m, 1h, 6h, 1d, 3d, 30d): `platform:availability:ratio_<w>`
  (the probes' mean success), `platform:request_errors:ratio_<w>` (errors /
  requests), `platform:request_latency_seconds:p95_<w>`;
- error budget left over 30 days: `platform:availability:budget_remaining_ratio`
  and `platform:request_errors:budget_remaining_ratio` = 1 - bad share / allowed share;
- burn-rate alerts, the workbook's multi-window table: a page when both a long
  and a short window burn the budget 14.4 times too fast (1h and 5m) or 6
  times (6h and 30m), a ticket at 1 time (3d and 6h). Each rule says its
  windows in labels, so no two are the same alert;
- PlatformDown (a probe failing for 5 minutes), PlatformErrorRatioHigh (over
  1 % for 5 minutes), PlatformLatencyHigh (p95 above the warning for 10 minutes).

A burn rate is how many times faster than allowed the budget goes: with a
99.9 % objective, 0.1 % may fail; 1.44 % failing for an hour is a burn of
14.4, which would spend the whole 30-day budget in about two days.
"""

from __future__ import annotations

from exporter import catalog
from exporter.kit.settings import KitSettings, Platform

WINDOWS = ("5m", "30m", "1h", "6h", "1d", "3d", "30d")
# (severity, long window, short window, burn factor): the SRE workbook's table.
BURNS = (("critical", "1h", "5m", 14.4), ("critical", "6h", "30m", 6.0),
         ("warning", "3d", "6h", 1.0))
ERROR_RATIO_CRITICAL = 0.01  # the documented "error rate critical above 1 %"
TEAM = "engineering"


def groups(platform: Platform) -> dict[str, list[dict]]:
    """{group name suffix: rules}: one group per part, its SLIs first and then the alerts
    that read them, so that in one evaluation the alerts see the SLIs just recorded
    (rules of a group run in order; groups run side by side)."""
    result = {}
    rules, alerting = recording_rules(platform), alerts(platform)
    for part, prefixes in (("availability", ("platform:availability:", "PlatformAvailability",
                                             "PlatformDown")),
                           ("requests", ("platform:request_", "PlatformError",
                                         "PlatformLatency"))):
        found = [r for r in rules + alerting
                 if (r.get("record") or r.get("alert")).startswith(prefixes)]
        if found:
            result[part] = found
    return result


def recording_rules(platform: Platform) -> list[dict]:
    rules = []
    if platform.availability:
        probe = platform.availability.probe
        rules += [{"record": f"platform:availability:ratio_{w}",
                   "expr": f"avg(avg_over_time({probe}[{w}]))"} for w in WINDOWS]
        allowed = catalog.number(round(1 - platform.availability.objective, 12))
        rules.append({"record": "platform:availability:budget_remaining_ratio",
                      "expr": f"1 - (1 - platform:availability:ratio_30d) / {allowed}"})
    if platform.requests:
        requests = platform.requests
        rules += [{"record": f"platform:request_errors:ratio_{w}",
                   "expr": f"sum(rate({requests.errors}[{w}])) / sum(rate({requests.total}[{w}]))"}
                  for w in WINDOWS]
        allowed = catalog.number(round(1 - requests.error_objective, 12))
        rules.append({"record": "platform:request_errors:budget_remaining_ratio",
                      "expr": f"1 - platform:request_errors:ratio_30d / {allowed}"})
        if requests.latency_histogram:
            rules += [{"record": f"platform:request_latency_seconds:p95_{w}",
                       "expr": "histogram_quantile(0.95, sum by (le) "
                               f"(rate({requests.latency_histogram}[{w}])))"} for w in WINDOWS]
    return rules


def _burns(alert: str, what: str, bad: str, objective: float) -> list[dict]:
    """The three burn-rate rules of one SLI; `bad` (with {w}) is its bad share over a
    window. A burn rate is that share over the share the objective allows."""
    allowed = catalog.number(round(1 - objective, 12))
    result = []
    for severity, long_window, short_window, factor in BURNS:
        def burn(window: str) -> str:
            return f"{bad.format(w=window)} / {allowed}"

        result.append({
            "alert": alert,
            "expr": f"{burn(long_window)} > {factor:g} and {burn(short_window)} > {factor:g}",
            "labels": {"severity": severity, "team": TEAM, "long_window": long_window,
                       "short_window": short_window},
            "annotations": {
                "summary": f"The {what} error budget is burning too fast.",
                "description": f"Over {long_window} (and {short_window}) the {what} error "
                               "budget burns {{ $value | printf \"%.1f\" }} times as fast as "
                               f"the {catalog.percent(objective)} objective allows (alarm "
                               f"at {factor:g}): at that pace the 30-day budget lasts "
                               f"{30 / factor:.2g} days.",
            },
        })
    return result


def alerts(platform: Platform) -> list[dict]:
    rules = []
    if platform.availability:
        availability = platform.availability
        rules += _burns("PlatformAvailabilityBudgetBurn", "availability",
                        "(1 - platform:availability:ratio_{w})", availability.objective)
        rules.append({
            "alert": "PlatformDown",
            "expr": f"{availability.probe} == 0",
            "for": "5m",
            "labels": {"severity": "critical", "team": TEAM},
            "annotations": {
                "summary": "A platform probe has failed for 5 minutes.",
                "description": "The probe of {{ $labels.instance }} has failed for 5 minutes "
                               "(the documented critical downtime).",
            },
        })
    if platform.requests:
        requests = platform.requests
        rules += _burns("PlatformErrorBudgetBurn", "request",
                        "platform:request_errors:ratio_{w}", requests.error_objective)
        rules.append({
            "alert": "PlatformErrorRatioHigh",
            "expr": f"platform:request_errors:ratio_5m > {catalog.number(ERROR_RATIO_CRITICAL)}",
            "for": "5m",
            "labels": {"severity": "critical", "team": TEAM},
            "annotations": {
                "summary": "More than 1% of requests fail.",
                "description": "{{ $value | humanizePercentage }} of the requests of the last "
                               "5 minutes failed (the documented critical error rate: 1%).",
            },
        })
        if requests.latency_histogram:
            warning = catalog.duration_text(requests.latency_p95_warning) \
                if requests.latency_p95_warning >= 1 else f"{requests.latency_p95_warning * 1000:g}ms"
            rules.append({
                "alert": "PlatformLatencyHigh",
                "expr": "platform:request_latency_seconds:p95_5m > "
                        f"{catalog.number(requests.latency_p95_warning)}",
                "for": "10m",
                "labels": {"severity": "warning", "team": TEAM},
                "annotations": {
                    "summary": f"The 95th percentile of request latency is above {warning}.",
                    "description": "95 % of the requests of the last 5 minutes took up to "
                                   "{{ $value | humanizeDuration }}: above the documented "
                                   f"{warning} warning for 10 minutes.",
                },
            })
    return rules


def sync_success_alert(settings: KitSettings) -> dict:
    """The exporter's own integration sync success: successful polls / polls, per source."""
    polls = f"kpi_source_polls_total{{{settings.job_selector}"
    return {
        "alert": "KpiIntegrationSyncSuccessLow",
        "expr": (f'sum by (job, source) (increase({polls},result="success"}}[1d])) / '
                 f"sum by (job, source) (increase({polls}}}[1d])) < 0.995"),
        "for": "1h",
        "labels": {"severity": "info", "team": TEAM},
        "annotations": {
            "summary": "An integration's polls succeed less than 99.5% of the time.",
            "description": "{{ $value | humanizePercentage }} of the polls of "
                           "{{ $labels.source }} succeeded over the last day (documented: "
                           "above 99.5%).",
        },
    }
