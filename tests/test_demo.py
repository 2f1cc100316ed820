"""The demo's scenarios: calm by default, and each other one breaks the threshold it names.

Through Prometheus, tests/test_stack.py checks that the calm demo raises no
alert at all and that a scenario's alert reaches a receiver.
"""

from __future__ import annotations

import pytest

from exporter import catalog, cli
from exporter.demo import DemoExporter
from exporter.kit.rules import alert_name
from exporter.simulator import SCENARIOS


def poll(scenario: str) -> dict[tuple[str, str | None], float]:
    demo = DemoExporter(listen=("127.0.0.1", 0), scenario=scenario, live=False)
    try:
        result = demo.poller.poll_once(demo.sources[0])
    finally:
        demo.stop()
    assert result.up
    return {(s.metric, s.labels.get("window")): s.value for s in result.samples}


def broken(values: dict, kpi: catalog.Kpi, threshold: catalog.Threshold) -> bool:
    if threshold.kind == "drop":  # as the rule reads it: the exporter's own growth rate
        value = values[("kpi_mrr_growth_rate", threshold.window)]
        return value < -threshold.value
    value = values[(kpi.metric, threshold.window)]
    return value > threshold.value if threshold.kind == "above" else value < threshold.value


def test_the_cli_offers_exactly_the_simulators_scenarios():
    assert set(cli.SCENARIO_NAMES) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_scenario_breaks_exactly_the_thresholds_of_its_alerts(name):
    values = poll(name)
    alerts = {alert_name(kpi, t) for kpi in catalog.KPIS for t in kpi.thresholds
              if broken(values, kpi, t)}
    assert alerts == set(SCENARIOS[name].alerts)
