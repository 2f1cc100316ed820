"""Documentation generated from the KPI catalog (the README metrics table).

Generated text lives between `<!-- BEGIN GENERATED: name -->` and
`<!-- END GENERATED: name -->` markers; `kpi-exporter generate` rewrites it and
a test fails when the committed README drifts from the catalog.
"""

from __future__ import annotations

import re

from exporter import catalog


def _threshold_text(kpi: catalog.Kpi) -> str:
    parts = []
    for t in kpi.thresholds:
        if t.kind == "drop":
            against = f" against {t.baseline}" if t.baseline else ""
            parts.append(f"{t.severity}: drop > {catalog.percent(t.value)} over {t.window}{against}")
        else:
            sign = ">" if t.kind == "above" else "<"
            value = catalog.value_text(kpi.unit, t.value)
            parts.append(f"{t.severity}: {sign} {value}")
    return "; ".join(parts) or "-"


def _target_text(kpi: catalog.Kpi) -> str:
    if kpi.targets:
        return f"< {catalog.targets_text(kpi)}" if kpi.direction == "lower" \
            else catalog.targets_text(kpi)
    if kpi.target is None:
        return "-"
    sign = {"higher": "> ", "lower": "< "}.get(kpi.direction or "", "")
    return sign + catalog.value_text(kpi.unit, kpi.target)


def metrics_table(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS) -> str:
    lines = [
        "| Metric | Type | Labels | Help | Config key | Target | Thresholds |",
        "|---|---|---|---|---|---|---|",
    ]
    for kpi in kpis:
        lines.append(f"| `{kpi.metric}` | {kpi.type} | {', '.join(kpi.labels)} | {kpi.help} "
                     f"| `{kpi.key}` | {_target_text(kpi)} | {_threshold_text(kpi)} |")
    lines += ["", "Exporter health:", "",
              "| Metric | Type | Labels | Help |", "|---|---|---|---|"]
    for health in catalog.HEALTH:
        name = health.metric
        lines.append(f"| `{name}` | {health.type} | {', '.join(health.labels)} | {health.help} |")
    return "\n".join(lines)


def kpi_table(kpis: tuple[catalog.Kpi, ...] = catalog.KPIS) -> str:
    """The KPIs with a target or an alert: what they mean and who gets paged."""
    from exporter.kit.rules import alert_name

    lines = ["| KPI | Definition | Target | Thresholds | Alert | Team |",
             "|---|---|---|---|---|---|"]
    for kpi in kpis:
        if kpi.target is None and not kpi.targets and not kpi.thresholds:
            continue
        alerts = sorted({alert_name(kpi, t) for t in kpi.thresholds})
        lines.append(f"| `{kpi.metric}` | {kpi.description} | {_target_text(kpi)} "
                     f"| {_threshold_text(kpi)} | {', '.join(alerts) or '-'} | {kpi.team} |")
    return "\n".join(lines)


GENERATED = {"metrics": metrics_table, "kpis": kpi_table}


def update_readme(text: str, kpis: tuple[catalog.Kpi, ...] = catalog.KPIS) -> str:
    for name, render in GENERATED.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} -->\n).*?(<!-- END GENERATED: {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no generated section {name!r}")
        text = pattern.sub(lambda m: m.group(1) + render(kpis) + "\n" + m.group(2), text)
    return text
